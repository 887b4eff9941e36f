from functools import partial

import pytest

from streaming.kafka_log import KafkaEventLog
from streaming.local_log import LocalEventLog
from streaming.settings import StreamSettings

from .fake_kafka import FakeBroker, FakeConsumer, FakeProducer
from .mock_cluster import MockKafkaCluster

# "kafka-wire": the real kafka-python client over TCP against librdkafka's mock cluster (mock_cluster.py)
IMPLEMENTATIONS = ["local", "kafka-fake", pytest.param("kafka-wire", marks=pytest.mark.integration)]


@pytest.fixture
def kafka_cluster():
    """A fresh mock Kafka cluster (one broker) with the topics the stream code uses, 4 partitions each."""
    with MockKafkaCluster(brokers=1) as cluster:
        for topic in ("events", "events.dlq"):
            cluster.create_topic(topic, 4)
        yield cluster


def wire_settings(cluster: MockKafkaCluster, **kafka: object) -> StreamSettings:
    """Stream settings for KafkaEventLog against ``cluster``, as a config file would give them."""
    return StreamSettings(backend="kafka", kafka=cluster.kafka_settings(**kafka))


@pytest.fixture(params=IMPLEMENTATIONS)
def open_log(request, tmp_path):
    """A factory opening the *same* log again on each call, as a restarted process would."""
    if request.param == "local":
        yield lambda: LocalEventLog(tmp_path / "log", partitions=4, linger_ms=0)
    elif request.param == "kafka-fake":
        broker = FakeBroker(partitions=4)
        settings = StreamSettings(backend="kafka")
        yield lambda: KafkaEventLog(settings, partial(FakeProducer, broker), partial(FakeConsumer, broker))
    else:
        cluster = request.getfixturevalue("kafka_cluster")
        yield lambda: KafkaEventLog(wire_settings(cluster))
