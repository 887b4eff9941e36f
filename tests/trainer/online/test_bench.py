"""The prequential bench on the real KuaiRand replay: several scoring step counts compare from one start."""
from trainer.online.bench import bench_prequential


def test_each_step_count_streams_from_the_same_pretrained_model_and_rng_state(tmp_path):
    both = bench_prequential(7, 1, "cpu", "t2diff", tmp_path / "both", limit=400, eval_steps=[3, None])
    alone = bench_prequential(7, 1, "cpu", "t2diff", tmp_path / "alone", limit=400, eval_steps=[None])
    assert [r["eval_steps"] for r in both["runs"]] == [3, 50] and alone["runs"][0]["eval_steps"] == 50
    assert both["runs"][0]["scored"] == both["runs"][1]["scored"] == alone["runs"][0]["scored"] > 300

    def log(run):
        with open(run["score_log"]) as f:
            return f.read()

    # the second stream after a first one is the stream a one-count run makes: a fresh copy of the pre-trained
    # model and the same RNG state, so the first stream's training leaves it nothing
    assert log(both["runs"][1]) == log(alone["runs"][0])
    # and the step count reaches the scoring
    assert log(both["runs"][0]) != log(both["runs"][1])
