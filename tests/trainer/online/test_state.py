import numpy as np

from trainer.online.state import RecentKeys, ReplayBuffer, UserHistories


def test_histories_window_and_round_trip():
    h = UserHistories(3)
    for i in range(5):
        h.append(7, i + 1, 100 + i)
    h.append(8, 9, 50)
    assert h.window(7) == ([3, 4, 5], [102, 103, 104])
    hist, ts = h.fill([h.window(8), h.window(7), h.window(99)])
    assert hist.tolist() == [[0, 0, 9], [3, 4, 5], [0, 0, 0]] and ts[0].tolist() == [0, 0, 50]
    h2 = UserHistories(1)
    h2.load_state_dict(h.state_dict())
    assert h2.window(7) == h.window(7) and h2.window(8) == h.window(8) and len(h2) == 2


def test_replay_ring_and_rng_state():
    r = ReplayBuffer(4, 2, seed=1)
    for k in range(3):
        r.add(np.full((2, 2), k), np.zeros((2, 2)), np.array([10 * k, 10 * k + 1]), np.zeros(2))
    assert len(r) == 4 and sorted(r.target.tolist()) == [10, 11, 20, 21]  # oldest overwritten
    r2 = ReplayBuffer(4, 2)
    r2.load_state_dict(r.state_dict())
    a, b = r.sample(6), r2.sample(6)  # same RNG state -> same draws after resume
    assert np.array_equal(a["target"], b["target"])


def test_recent_keys_bounded():
    k = RecentKeys(2)
    assert not k.seen("a") and not k.seen("b") and k.seen("a")
    assert not k.seen("c")  # evicts a
    assert not k.seen("a")
    k2 = RecentKeys(2)
    k2.load_state_dict(k.state_dict())
    assert k2.seen("a") and k2.seen("c")


def test_write_and_append_writes_the_window_before_the_event():
    h = UserHistories(3)
    rows, ts = np.zeros((5, 3), dtype=np.int64), np.zeros((5, 3), dtype=np.int64)
    assert h.write_and_append(7, 1, 101, rows[0], ts[0]) == 0 and not rows[0].any()  # empty history: row untouched
    assert h.write_and_append(7, 2, 102, rows[1], ts[1]) == 1 and rows[1].tolist() == [0, 0, 1]
    h.write_and_append(7, 3, 103, rows[2], ts[2])
    assert h.write_and_append(7, 4, 104, rows[3], ts[3]) == 3 and rows[3].tolist() == [1, 2, 3]
    assert ts[3].tolist() == [101, 102, 103] and h.window(7) == ([2, 3, 4], [102, 103, 104])  # capped at seq_len
    assert h.write_and_append(8, 5, 105, rows[4], ts[4], min_len=1) == 0 and not rows[4].any()
    h.write_and_append(8, 6, 106, rows[4], ts[4], min_len=2)  # 1 item < min_len: not written
    assert not rows[4].any() and h.window(8) == ([5, 6], [105, 106])
