import numpy as np

from trainer.online.state import RecentKeys, ReplayBuffer, UserHistories


def test_histories_window_and_round_trip():
    h = UserHistories(3)
    for i in range(5):
        h.append(7, i + 1, 100 + i)
    h.append(8, 9, 50)
    assert h.window(7) == ([3, 4, 5], [102, 103, 104]) and h.window(8) == ([9], [50]) and h.window(99) == ([], [])
    h2 = UserHistories(1)
    h2.load_state_dict(h.state_dict())
    assert h2.window(7) == h.window(7) and h2.window(8) == h.window(8) and len(h2) == 2


def test_histories_load_the_checkpoint_layout():
    """The checkpoint layout (users, lens, items and ts flattened oldest first) is what earlier trainers wrote."""
    h = UserHistories(3)
    h.load_state_dict({"seq_len": 3, "users": np.array([5, 9]), "lens": np.array([2, 3]),
                       "items": np.array([1, 2, 7, 8, 9]), "ts": np.array([10, 20, 70, 80, 90])})
    assert h.window(5) == ([1, 2], [10, 20]) and h.window(9) == ([7, 8, 9], [70, 80, 90])
    hist, ts, lens = h.step(np.array([5]), np.array([3]), np.array([30]))
    assert hist.tolist() == [[0, 1, 2]] and ts.tolist() == [[0, 10, 20]] and lens.tolist() == [2]
    d = h.state_dict()
    assert d["users"].tolist() == [5, 9] and d["lens"].tolist() == [3, 3]
    assert d["items"].tolist() == [1, 2, 3, 7, 8, 9] and d["ts"].tolist() == [10, 20, 30, 70, 80, 90]


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


def test_step_gives_each_event_the_window_before_it():
    h = UserHistories(3)
    # user 7 four times in one poll (the window slides past seq_len inside the poll), user 8 between them
    hist, ts, lens = h.step(np.array([7, 7, 8, 7, 7, 8]), np.array([1, 2, 5, 3, 4, 6]),
                            np.array([101, 102, 105, 103, 104, 106]))
    assert lens.tolist() == [0, 1, 0, 2, 3, 1]
    assert hist.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 2], [1, 2, 3], [0, 0, 5]]
    assert ts[4].tolist() == [101, 102, 103] and ts[5].tolist() == [0, 0, 105]
    assert h.window(7) == ([2, 3, 4], [102, 103, 104]) and h.window(8) == ([5, 6], [105, 106])  # capped at seq_len
    hist, _, lens = h.step(np.array([8]), np.array([9]), np.array([109]))  # the next poll sees the stored window
    assert hist.tolist() == [[0, 5, 6]] and lens.tolist() == [2]
    empty = h.step(np.array([], dtype=np.int64), np.array([]), np.array([]))
    assert [x.shape for x in empty] == [(0, 3), (0, 3), (0,)]


def test_step_matches_a_per_event_reference_across_polls_and_growth():
    """Random polls with repeated users, more users than the initial capacity, a save/load midway: every window
    equals what a plain per-user list gives, event by event."""
    L, rng = 4, np.random.default_rng(0)
    h, ref = UserHistories(L, capacity=2), {}
    for poll in range(12):
        m = int(rng.integers(1, 40))
        users = rng.integers(0, 30, m) * 1_000_003  # sparse raw ids
        items, ts = rng.integers(1, 50, m), poll * 1000 + np.arange(m)
        hist, hts, lens = h.step(users, items, ts)
        for j, (u, i, t) in enumerate(zip(users.tolist(), items.tolist(), ts.tolist())):
            it, tt = ref.setdefault(u, ([], []))
            n = len(it)
            assert lens[j] == n
            assert hist[j].tolist() == [0] * (L - n) + it and hts[j].tolist() == [0] * (L - n) + tt
            it.append(i), tt.append(t)
            del it[:-L], tt[:-L]
        if poll == 5:
            h2 = UserHistories(L)
            h2.load_state_dict(h.state_dict())
            h = h2
    assert len(h) == len(ref) and all(h.window(u) == (it, tt) for u, (it, tt) in ref.items())
