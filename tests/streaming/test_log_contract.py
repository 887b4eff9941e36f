"""One contract every EventLog implementation must meet (parametrised over tests/streaming/conftest.py)."""
import time

import pytest


def _drain(consumer, expect_at_least=0, deadline_s=30.0):
    """Polls until ``expect_at_least`` records arrived and a poll comes back empty (a real broker's group join and
    fetches take a while: the wait is bounded by time, not by a number of polls)."""
    out = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        got = consumer.poll(max_records=7, timeout_s=0.01 if len(out) < expect_at_least else 0.2)
        out.extend(got)
        if not got and len(out) >= expect_at_least:
            break
    return out


def _produce(log, n, users=5, topic="events"):
    for i in range(n):
        log.produce(topic, str(i % users).encode(), f"{i}".encode(), timestamp_ms=1_000 + i)
    log.flush()


def test_every_record_once_in_key_order(open_log):
    log = open_log()
    _produce(log, 60)
    c = log.consumer("events", "g")
    recs = _drain(c, 60)
    assert sorted(int(r.value) for r in recs) == list(range(60))
    by_key = {}
    for r in recs:
        by_key.setdefault(r.key, []).append(r)
    for key, rs in by_key.items():
        assert len({r.partition for r in rs}) == 1, "one key must stay on one partition"
        assert [int(r.value) for r in rs] == sorted(int(r.value) for r in rs), "per-key order lost"
        assert [r.offset for r in rs] == sorted(r.offset for r in rs)
    r0 = min(recs, key=lambda r: int(r.value))
    assert (r0.topic, r0.value, r0.timestamp_ms) == ("events", b"0", 1_000)
    assert c.poll(10, 0.01) == []
    c.close()
    log.close()


def test_commit_survives_restart_and_groups_are_independent(open_log):
    log = open_log()
    _produce(log, 40)
    c = log.consumer("events", "g")
    first, end = [], time.monotonic() + 30
    while len(first) < 20 and time.monotonic() < end:
        first.extend(c.poll(max_records=5, timeout_s=0.01))
    assert len(first) >= 20
    c.commit()
    committed = c.committed()
    assert sum(committed.values()) == len(first)
    assert c.lag() == 40 - len(first)
    c.close()
    log.close()

    log2 = open_log()  # "restart"
    c2 = log2.consumer("events", "g")
    rest = _drain(c2, 40 - len(first))
    assert sorted(int(r.value) for r in first + rest) == list(range(40)), "records lost or repeated"
    other = log2.consumer("events", "other-group")
    assert len(_drain(other, 40)) == 40, "a new group starts from the earliest offset"
    c2.close()
    other.close()
    log2.close()


def test_uncommitted_records_are_read_again(open_log):
    log = open_log()
    _produce(log, 10)
    c = log.consumer("events", "g")
    assert len(_drain(c, 10)) == 10
    c.close()  # no commit: at-least-once means they come back
    c = log.consumer("events", "g")
    assert len(_drain(c, 10)) == 10
    c.close()
    log.close()


def test_seek_replays_and_commit_explicit_offsets(open_log, request):
    if request.node.callspec.params["open_log"] == "kafka-wire":
        # Seen in about 1 run in 3: kafka-python rejoins the group once after its first join (its metadata snapshot
        # was still empty then), and the mock cluster's coordinator sometimes leaves that JoinGroup unanswered, so
        # the fetch after the seek waits out the request timeout and more. The pending-seek path over the wire is
        # in test_kafka_wire.py; the seek itself is kafka-python's.
        pytest.skip("mock cluster: a rejoin right after the first join can stall; see test_kafka_wire.py")
    log = open_log()
    _produce(log, 30, users=1)  # one key -> one partition
    c = log.consumer("events", "g")
    recs = _drain(c, 30)
    p = recs[0].partition
    c.seek(p, 10)
    again = _drain(c, 20)
    assert [int(r.value) for r in again] == list(range(10, 30))
    c.commit({p: 25})
    assert c.committed() == {p: 25}
    assert c.lag() == 5
    with pytest.raises(ValueError):
        c.seek(p, -1)
    c.close()
    log.close()


def test_rejects_non_bytes(open_log):
    log = open_log()
    with pytest.raises(TypeError):
        log.produce("events", b"1", "not bytes")
    log.close()
