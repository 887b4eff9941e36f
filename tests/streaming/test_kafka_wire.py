"""KafkaEventLog through the real kafka-python client over TCP, against librdkafka's mock cluster (mock_cluster.py):
the failure paths that the faked client boundary cannot show -- a produce the broker refuses, a broker outage in
the middle of consuming, a seek that waits for the group's assignment."""
import time

import pytest

from streaming.kafka_log import KafkaEventLog

from .conftest import wire_settings
from .mock_cluster import API_PRODUCE, TOPIC_AUTHORIZATION_FAILED
from .test_log_contract import _produce

pytestmark = pytest.mark.integration


def _poll_until(consumer, n, deadline_s=30.0):
    """Polls, 0.2 s each, until ``n`` records arrived or the deadline passed. Not the contract's ``_drain`` (10 ms
    polls): with it the outage test failed 3 runs of 3 here, a group rebalance landing in the middle of it."""
    out, end = [], time.monotonic() + deadline_s
    while len(out) < n and time.monotonic() < end:
        out.extend(consumer.poll(max_records=50, timeout_s=0.2))
    return out


def test_flush_raises_when_the_broker_refuses_a_produce(kafka_cluster):
    log = KafkaEventLog(wire_settings(kafka_cluster))
    _produce(log, 3, users=3)  # the topic's metadata is known; these are acknowledged
    kafka_cluster.fail_requests(API_PRODUCE, [TOPIC_AUTHORIZATION_FAILED])  # not retriable
    log.produce("events", b"1", b"refused")
    with pytest.raises(RuntimeError, match="1 of 1 Kafka sends failed"):
        log.flush()
    c = log.consumer("events", "g")
    got = _poll_until(c, 3)
    got += c.poll(max_records=50, timeout_s=0.5)  # anything beyond the three acknowledged records
    assert sorted(r.value for r in got) == [b"0", b"1", b"2"], "the refused record must not be in the log"
    c.close()
    log.close()


def test_broker_outage_mid_stream_loses_and_repeats_nothing(kafka_cluster):
    log = KafkaEventLog(wire_settings(kafka_cluster))
    _produce(log, 30, users=3)
    c = log.consumer("events", "g")
    before = _poll_until(c, 30)
    c.commit()
    kafka_cluster.broker_down()  # every connection of both clients is cut; new ones are refused
    assert [r for _ in range(5) for r in c.poll(max_records=50, timeout_s=0.1)] == []
    kafka_cluster.broker_up()
    for i in range(30, 50):  # the producer reconnects too
        log.produce("events", str(i % 3).encode(), str(i).encode())
    log.flush()
    after = _poll_until(c, 20)
    after += c.poll(max_records=50, timeout_s=0.5)  # anything fetched twice would show here
    assert sorted(int(r.value) for r in before) == list(range(30))
    assert sorted(int(r.value) for r in after) == list(range(30, 50)), "records lost or repeated across the outage"
    c.commit()
    assert c.lag() == 0 and sum(c.committed().values()) == 50
    c.close()
    log.close()


def test_seek_before_the_group_assigns_applies_on_assignment(kafka_cluster):
    log = KafkaEventLog(wire_settings(kafka_cluster))
    _produce(log, 8, users=1)  # one key: one partition
    probe = log.consumer("events", "probe")
    part = _poll_until(probe, 8)[0].partition
    probe.close()
    c = log.consumer("events", "g")
    c.seek(part, 5)  # not assigned yet: applied by the rebalance listener when the group assigns it
    assert [r.value for r in _poll_until(c, 3)] == [b"5", b"6", b"7"]
    c.commit()
    assert c.committed()[part] == 8
    c.close()
    log.close()


def test_subscribing_to_a_missing_topic_fails_at_once(kafka_cluster):
    log = KafkaEventLog(wire_settings(kafka_cluster))
    with pytest.raises(RuntimeError, match="topic 'nope' has no partitions"):
        log.consumer("nope", "g")  # not a consumer that sits in its group with nothing assigned
    log.close()
