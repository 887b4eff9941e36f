import json

import pytest
from prometheus_client import REGISTRY

from streaming.deadletter import DeadLetterSink, read_dead_letters
from streaming.events import Event, EventError, decode, encode, key_of
from streaming.local_log import LocalEventLog

NOW = 1_700_000_000_000
GOOD = {"user_id": 7, "item_id": 42, "event_type": "click", "ts_ms": NOW - 1000, "idempotency_key": "k1"}


def _bytes(**over):
    d = {**GOOD, **over}
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


def test_roundtrip_and_key():
    ev = Event(**GOOD, play_time_ms=5, duration_ms=9, request_id="r", arm="B")
    assert decode(encode(ev), now_ms=NOW) == ev
    assert key_of(ev) == b"7"
    assert json.loads(encode(Event(**GOOD)))["schema_version"] == 1


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "malformed_json"),
    (b"\xff\xfe\x00", "malformed_json"),
    (b"[1, 2]", "wrong_type"),
    (_bytes(item_id=...), "missing_field"),
    (_bytes(idempotency_key=...), "missing_field"),
    (_bytes(user_id="7"), "wrong_type"),
    (_bytes(ts_ms=True), "wrong_type"),
    (_bytes(ts_ms=1.5), "wrong_type"),
    (_bytes(event_type="purchase"), "invalid_value"),
    (_bytes(user_id=-1), "invalid_value"),
    (_bytes(extra_field=1), "invalid_value"),
    (_bytes(item_id=2**63), "invalid_value"),  # would not fit the Int64 feature downstream
    (b"null", "wrong_type"),
    (_bytes(schema_version=2), "unsupported_version"),
    (_bytes(ts_ms=-5), "negative_ts"),
    (_bytes(ts_ms=NOW + 3_600_000), "future_ts"),
])
def test_bad_input_reasons(raw, reason):
    with pytest.raises(EventError) as e:
        decode(raw, now_ms=NOW)
    assert e.value.reason == reason


def test_small_clock_skew_is_allowed():
    assert decode(_bytes(ts_ms=NOW + 1000), now_ms=NOW).ts_ms == NOW + 1000


def test_dead_letter_sink_keeps_payload_and_counts(tmp_path):
    log = LocalEventLog(tmp_path, partitions=2, linger_ms=0)
    before = REGISTRY.get_sample_value("t2diff_dead_letters_total", {"stage": "t", "reason": "malformed_json"}) or 0
    sink = DeadLetterSink(log, "events.dlq", stage="t")
    sink.send(b"{bad", "malformed_json", "line 1")
    sink.send(b"\xff", "malformed_json")
    with pytest.raises(ValueError):
        sink.send(b"x", "made_up_reason")
    log.flush()
    dl = read_dead_letters(log, "events.dlq")
    assert [d["reason"] for d in dl] == ["malformed_json"] * 2
    assert {d.get("value") for d in dl} == {"{bad", None} and dl[1]["value_b64"] == "/w=="
    after = REGISTRY.get_sample_value("t2diff_dead_letters_total", {"stage": "t", "reason": "malformed_json"})
    assert after - before == 2


def test_decode_batch_matches_decode_and_errors_pickle():
    import pickle

    from streaming.events import decode_batch

    raws = [_bytes(), b"{not json", _bytes(user_id="7"), _bytes(ts_ms=NOW + 3_600_000), _bytes(item_id=9)]
    out = decode_batch(raws, now_ms=NOW)
    assert len(out) == len(raws)
    assert out[0] == decode(raws[0], now_ms=NOW) and out[4].item_id == 9
    assert [o.reason for o in out[1:4]] == ["malformed_json", "wrong_type", "future_ts"]
    back = pickle.loads(pickle.dumps(out))  # what decode workers send to the consumer process
    assert back[0] == out[0] and [(e.reason, e.detail) for e in back[1:4]] == [(e.reason, e.detail) for e in out[1:4]]
