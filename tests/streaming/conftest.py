from functools import partial

import pytest

from streaming.kafka_log import KafkaEventLog
from streaming.local_log import LocalEventLog
from streaming.settings import StreamSettings

from .fake_kafka import FakeBroker, FakeConsumer, FakeProducer

IMPLEMENTATIONS = ["local", "kafka-fake"]


@pytest.fixture(params=IMPLEMENTATIONS)
def open_log(request, tmp_path):
    """A factory opening the *same* log again on each call, as a restarted process would."""
    if request.param == "local":
        yield lambda: LocalEventLog(tmp_path / "log", partitions=4, linger_ms=0)
    else:
        broker = FakeBroker(partitions=4)
        settings = StreamSettings(backend="kafka")
        yield lambda: KafkaEventLog(settings, partial(FakeProducer, broker), partial(FakeConsumer, broker))
