import json
import time

import pytest
from prometheus_client import REGISTRY

from feature_store.client import FeatureClient
from feature_store.consumer import FeatureConsumer
from feature_store.repo import apply_repo
from feature_store.settings import FeatureSettings
from streaming.deadletter import read_dead_letters
from streaming.events import Event, encode
from streaming.log import open_event_log
from streaming.settings import StreamSettings
from streaming.vocab import Vocabulary

MIN = 60_000
T0 = 1_650_000_000_000
VOCAB = Vocabulary(items=frozenset(range(100)), users=frozenset(range(10)))


def ev(user, item, t, etype="click", key=None):
    return Event(user_id=user, item_id=item, event_type=etype, ts_ms=t,
                 idempotency_key=key or f"{user}:{item}:{t}:{etype}")


@pytest.fixture
def stack():
    stream, feats = StreamSettings(linger_ms=0), FeatureSettings(batch_size=7)
    store = apply_repo(feats, materialize_items=False)
    log = open_event_log(stream)
    yield stream, feats, store, log
    log.close()


def produce(log, events):
    for e in events:
        log.produce("events", str(e.user_id).encode(), e if isinstance(e, bytes) else encode(e))
    log.flush()


def dead_count(reason):
    return REGISTRY.get_sample_value("t2diff_dead_letters_total", {"stage": "features", "reason": reason}) or 0


def test_events_become_features_and_bad_input_is_dead_lettered(stack):
    stream, feats, store, log = stack
    good = [ev(1, 10, T0), ev(1, 11, T0 + MIN, "play"), ev(2, 20, T0), ev(1, 12, T0 + 2 * MIN, "impression"),
            ev(1, 13, T0 + 30 * 1000)]  # late, within the window: inserted in time order
    bad = {
        "malformed_json": b"{oops",
        "missing_field": json.dumps({"user_id": 1, "item_id": 1, "event_type": "click"}).encode(),
        "wrong_type": json.dumps({"user_id": "1", "item_id": 1, "event_type": "click", "ts_ms": T0,
                                  "idempotency_key": "x"}).encode(),
        "unknown_user": encode(ev(999, 10, T0)),
        "unknown_item": encode(ev(1, 5000, T0)),
        "negative_ts": encode(ev(1, 10, -1)),
        "future_ts": encode(ev(1, 10, int(time.time() * 1000) + 86_400_000)),
        "duplicate": encode(ev(1, 10, T0)),
        "too_old": encode(ev(1, 14, T0 - 60 * MIN)),
    }
    before = {r: dead_count(r) for r in bad}
    applied_before = REGISTRY.get_sample_value("t2diff_stream_events_applied_total", {"group": "features"}) or 0
    for e in good[:3]:
        produce(log, [e])
    for raw in bad.values():
        log.produce("events", b"1", raw)
    produce(log, good[3:])

    c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=VOCAB)
    assert c.push_views == ["user_session"]  # resolved from the push source once
    stats = c.run(idle_exit_s=0.3)
    c.close()
    assert stats.applied == len(good) and stats.dead == {r: 1 for r in bad}
    assert {r: dead_count(r) - before[r] for r in bad} == {r: 1 for r in bad}
    applied = REGISTRY.get_sample_value("t2diff_stream_events_applied_total", {"group": "features"})
    assert applied - applied_before == len(good)
    assert REGISTRY.get_sample_value("t2diff_stream_consumer_lag", {"topic": "events", "group": "features"}) \
        == len(good) + len(bad)  # measured before the first batch

    u1, u2, u_none = FeatureClient(feats, store=store).get_user_features([1, 2, 7])
    assert u1.last_items == [10, 13, 11] and u1.last_ts_ms == [T0, T0 + 30_000, T0 + MIN]
    assert u1.session_items == [10, 13, 11]
    assert u1.counts == {"n_impressions": 1, "n_clicks": 2, "n_plays": 1, "n_likes": 0, "n_follows": 0}
    assert u1.session_events == 4 and u1.session_start_ms == T0 and u1.last_event_ms == T0 + 2 * MIN
    assert u2.last_items == [20] and u_none is None

    dl = read_dead_letters(log, stream.dead_letter_topic)
    assert sorted(d["reason"] for d in dl) == sorted(bad)
    assert all("source" in d and d["stage"] == "features" for d in dl)
    assert next(d for d in dl if d["reason"] == "malformed_json")["value"] == "{oops"


def test_restart_resumes_from_saved_state(stack):
    stream, feats, store, log = stack
    produce(log, [ev(3, i, T0 + i * 1000) for i in range(10)])
    c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=VOCAB)
    c.run(max_records=7)
    c.close()
    produce(log, [ev(3, 10, T0 + 10_000)])
    c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=VOCAB)
    stats = c.run(idle_exit_s=0.3)
    assert stats.applied == 4 and stats.dead == {}
    assert c.consumer.lag() == 0
    c.close()
    (u,) = FeatureClient(feats, store=store).get_user_features([3])
    assert u.last_items == list(range(11)) and u.counts["n_clicks"] == 11


def test_item_features_materialised_from_data_files():
    feats = FeatureSettings(dataset="ml-1m")
    store = apply_repo(feats)
    toy, unknown = FeatureClient(feats, store=store).get_item_features([1, 99999])
    assert toy.category == "Animation" and toy.tag_names == ["Animation", "Children's", "Comedy"]
    assert toy.tags == [3, 4, 5] and unknown is None
