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
