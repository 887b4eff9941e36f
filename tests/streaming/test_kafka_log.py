from functools import partial

import pytest
from pydantic import ValidationError

from streaming.kafka_log import KafkaEventLog, client_config
from streaming.settings import KafkaSettings, StreamSettings

from .fake_kafka import FakeBroker, FakeConsumer, FakeProducer


def _log(broker, **kafka):
    s = StreamSettings(backend="kafka", kafka=KafkaSettings(**kafka))
    return KafkaEventLog(s, partial(FakeProducer, broker), partial(FakeConsumer, broker))


def test_security_settings_reach_the_client():
    cfg = client_config(KafkaSettings(bootstrap_servers=["b1:9093", "b2:9093"], security_protocol="SASL_SSL",
                                      sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p",
                                      ssl_cafile="/ca.pem"))
    assert cfg["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert cfg["sasl_plain_password"] == "p" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["ssl_cafile"] == "/ca.pem" and "ssl_certfile" not in cfg
    assert "hunter2" not in repr(KafkaSettings(sasl_password="hunter2"))  # secret not logged
    with pytest.raises(ValueError, match="sasl_mechanism"):
        client_config(KafkaSettings(security_protocol="SASL_PLAINTEXT"))


def test_settings_validation():
    with pytest.raises(ValidationError):
        KafkaSettings(bootstrap_servers=["no-port"])
    with pytest.raises(ValidationError):
        StreamSettings(kafka={"bootstrap_server": ["x:1"]})  # misspelled key fails at start-up


def test_producer_acks_all_and_consumer_manual_commit():
    b = FakeBroker()
    log = _log(b)
    log.produce("events", b"1", b"v")
    log.flush()
    c = log.consumer("events", "features")
    c.poll(10, 0.0)
    prod = next(x for x in b.configs if x["role"] == "producer")
    cons = next(x for x in b.configs if x["role"] == "consumer")
    assert prod["acks"] == "all" and cons["group_id"] == "features"


def test_flush_raises_when_a_send_failed():
    b = FakeBroker()
    log = _log(b)
    b.fail_sends = True
    log.produce("events", b"1", b"v")
    with pytest.raises(RuntimeError, match="1 of 1 Kafka sends failed"):
        log.flush()


def test_seek_before_assignment_applies_on_assignment():
    b = FakeBroker(partitions=1)
    log = _log(b)
    for i in range(5):
        log.produce("events", b"k", str(i).encode())
    log.flush()
    c = log.consumer("events", "g")
    c.seek(0, 3)  # not assigned yet: the group assigns partitions during the first poll
    assert [r.value for r in c.poll(10, 0.0)] == [b"3", b"4"]
    c.commit()
    assert b.group_offsets[next(iter(b.group_offsets))] == 5


def test_static_assignment():
    b = FakeBroker(partitions=2)
    log = _log(b)
    c = log.consumer("events", "g", partitions=[1])
    assert c.position() == {1: 0}


def test_protocol_pin_and_group_liveness_reach_the_clients():
    assert "api_version" not in client_config(KafkaSettings())  # default: kafka-python probes the broker
    assert client_config(KafkaSettings(api_version="2.1"))["api_version"] == (2, 1)
    assert client_config(KafkaSettings(api_version="3.7.1"))["api_version"] == (3, 7, 1)
    with pytest.raises(ValidationError):
        KafkaSettings(api_version="2.x")
    with pytest.raises(ValidationError, match="heartbeat_interval_ms"):
        KafkaSettings(session_timeout_ms=4_000, heartbeat_interval_ms=4_000)
    with pytest.raises(ValidationError, match="heartbeat_interval_ms"):
        KafkaSettings(session_timeout_ms=2_000)  # kafka-python's default heartbeat (3 s) would not fit
    b = FakeBroker()
    _log(b, session_timeout_ms=6_000, heartbeat_interval_ms=500).consumer("events", "g")
    _log(b).consumer("events", "h")
    cons = [x for x in b.configs if x["role"] == "consumer"]
    assert (cons[0]["session_timeout_ms"], cons[0]["heartbeat_interval_ms"]) == (6_000, 500)
    assert "session_timeout_ms" not in cons[1]  # unset: kafka-python's own default
