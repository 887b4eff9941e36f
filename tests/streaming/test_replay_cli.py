import pytest

from streaming.deadletter import DeadLetterSink
from streaming.events import decode
from streaming.log import open_event_log
from streaming.replay import dataset_frame, frame_events, replay
from streaming.settings import StreamSettings
from t2diff.cli import main


def _read_all(log):
    c = log.consumer("events", "check")
    out = []
    while got := c.poll(5000, 0.01):
        out += got
    c.close()
    return out


def test_kuairand_mapping_and_event_time_order():
    df = dataset_frame("kuairand").iloc[:3000]
    assert df["ts_ms"].is_monotonic_increasing
    first = next(frame_events(df))
    assert first.event_type.value == "impression" and first.idempotency_key.startswith("kr:")
    kinds = set(df["event_type"])
    assert {"impression", "click", "play"} <= kinds
    clicks = df[df["event_type"] == "click"]
    assert (clicks["play_time_ms"] >= 0).all()


def test_ml1m_ratings_ge4_are_plays():
    df = dataset_frame("ml-1m").iloc[:2000]
    assert set(df["event_type"]) <= {"play", "impression"} and df["ts_ms"].is_monotonic_increasing
    assert df["idempotency_key"].is_unique


def test_speed_factor_paces_by_event_time(tmp_path):
    df = dataset_frame("kuairand").iloc[:200]
    span_s = (df["ts_ms"].iloc[-1] - df["ts_ms"].iloc[0]) / 1000
    with open_event_log(StreamSettings()) as log:
        st = replay(log, frame_events(df), speed=span_s / 0.3, progress=False)  # ~0.3 s of wall time
    assert st.events == 200 and st.seconds >= 0.25


@pytest.mark.parametrize("dataset", ["kuairand", "ml-1m"])
def test_cli_replay_then_events_decode(dataset, capsys):
    assert main(["stream", "replay", "--dataset", dataset, "--speed", "max", "--limit", "500"]) == 0
    assert "replayed 500 events" in capsys.readouterr().out
    with open_event_log(StreamSettings()) as log:
        recs = _read_all(log)
    assert len(recs) == 500
    evs = [decode(r.value) for r in recs]
    assert all(r.key == str(e.user_id).encode() for r, e in zip(recs, evs))


def test_cli_dead_letters_summary(capsys):
    s = StreamSettings()
    with open_event_log(s) as log:
        DeadLetterSink(log, s.dead_letter_topic, stage="features").send(b"{x", "malformed_json")
    assert main(["stream", "dead-letters"]) == 0
    assert "features\tmalformed_json\t1" in capsys.readouterr().out


def test_cli_rejects_bad_speed():
    with pytest.raises(SystemExit):
        main(["stream", "replay", "--speed", "0"])
