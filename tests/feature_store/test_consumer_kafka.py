"""The feature consumer on the Kafka event log (kafka-python faked at the client boundary): a restart resumes
from the offsets saved with the state even though the group's Kafka commit is behind."""
import importlib.util
from functools import partial
from pathlib import Path

from feature_store.client import FeatureClient
from feature_store.consumer import FeatureConsumer
from feature_store.repo import apply_repo
from feature_store.settings import FeatureSettings
from streaming.events import Event, encode
from streaming.kafka_log import KafkaEventLog
from streaming.settings import StreamSettings
from streaming.vocab import Vocabulary

_spec = importlib.util.spec_from_file_location("fake_kafka", Path(__file__).parents[1] / "streaming" / "fake_kafka.py")
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

T0 = 1_650_000_000_000


def test_restart_on_kafka_uses_state_offsets_not_group_commit():
    broker = fake.FakeBroker(partitions=3)
    stream, feats = StreamSettings(backend="kafka"), FeatureSettings(batch_size=4)
    store = apply_repo(feats, materialize_items=False)

    def new_log():
        return KafkaEventLog(stream, partial(fake.FakeProducer, broker), partial(fake.FakeConsumer, broker))

    log = new_log()
    for i in range(12):
        e = Event(user_id=i % 2, item_id=i, event_type="play", ts_ms=T0 + i, idempotency_key=f"k{i}")
        log.produce(stream.topic, str(e.user_id).encode(), encode(e))
    log.flush()
    c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=Vocabulary(None, None))
    c.consumer.commit = lambda offsets=None: None  # the Kafka commit never lands (crash after the state save)
    c.run(idle_exit_s=0.2)
    c.close()
    assert not broker.group_offsets  # the group's committed offsets are still at the start

    c = FeatureConsumer(stream, feats, event_log=new_log(), store=store, vocab=Vocabulary(None, None))
    stats = c.run(idle_exit_s=0.2)
    c.close()
    assert stats.records == 0 and stats.dead == {}  # nothing re-applied, nothing dead-lettered as duplicate
    u0, u1 = FeatureClient(feats, store=store).get_user_features([0, 1])
    assert u0.last_items == [0, 2, 4, 6, 8, 10] and u1.counts["n_plays"] == 6
