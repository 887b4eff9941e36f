"""End-to-end demo: the streaming loop on real KuaiRand logs with an A/B replay simulator (`t2diff demo`)."""
