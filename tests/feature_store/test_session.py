import pytest

from feature_store.session import SessionRules, UserState, apply_event, feature_row
from streaming.events import Event, EventError

MIN = 60_000
RULES = SessionRules(max_items=3, session_gap_ms=30 * MIN, window_ms=10 * MIN)


def ev(item, t, etype="click", key=None):
    return Event(user_id=1, item_id=item, event_type=etype, ts_ms=t, idempotency_key=key or f"{item}:{t}:{etype}")


def run(events, st=None):
    st = st or UserState()
    for e in events:
        apply_event(st, e, RULES)
    return st


def test_in_order_keeps_last_n_oldest_first():
    st = run([ev(i, 1000 + i * MIN) for i in range(5)])
    assert st.items == [2, 3, 4] and st.ts == [1000 + 2 * MIN, 1000 + 3 * MIN, 1000 + 4 * MIN]
    assert st.counts[1] == 5 and st.last_event_ms == 1000 + 4 * MIN


def test_late_event_within_window_is_inserted_in_time_order():
    st = run([ev(1, 10 * MIN), ev(2, 15 * MIN), ev(3, 12 * MIN)])
    assert st.items == [1, 3, 2]
    assert st.session_events == 3 and st.session_start_ms == 10 * MIN


def test_too_old_and_duplicate_are_rejected_without_change():
    st = run([ev(1, 100 * MIN), ev(2, 101 * MIN)])
    snapshot = st.to_json()
    with pytest.raises(EventError) as e:
        apply_event(st, ev(9, 80 * MIN), RULES)
    assert e.value.reason == "too_old"
    with pytest.raises(EventError) as e:
        apply_event(st, ev(2, 101 * MIN), RULES)
    assert e.value.reason == "duplicate"
    assert st.to_json() == snapshot


def test_session_split_by_gap_and_non_positive_events_count():
    st = run([ev(1, 0), ev(2, 10 * MIN), ev(3, 50 * MIN, "impression"), ev(4, 55 * MIN)])
    assert st.session_start_ms == 50 * MIN and st.session_events == 2
    assert st.session_items() == [4]  # impressions are not positive items
    assert st.counts[0] == 1 and st.items == [1, 2, 4]


def test_one_impression_with_several_signals_adds_the_item_once():
    st = run([ev(5, 1000, "impression"), ev(5, 1000, "click"), ev(5, 1000, "play"), ev(5, 1000, "like")])
    assert st.items == [5] and st.counts == [1, 1, 1, 1, 0]


def test_keys_are_forgotten_after_the_window():
    st = run([ev(1, 0, key="a"), ev(2, 60 * MIN, key="b")])
    assert "a" not in st.keys and "b" in st.keys


def test_state_json_roundtrip_and_row():
    st = run([ev(1, 0), ev(2, MIN)])
    st.log_partition, st.log_offset = 3, 17
    back = UserState.from_json(st.to_json())
    assert back == st
    row = feature_row(1, back, created=None)
    assert row["last_items"] == [1, 2] and "session_items" not in row and row["log_position"] == [3, 17] and row["counts"] == [0, 2, 0, 0, 0]
