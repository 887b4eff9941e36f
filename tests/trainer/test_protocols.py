import numpy as np
import pytest
import torch

from trainer.protocols import _Builder, protocol_l, protocol_p, split_users, target_positions


def _seqs(n_users=50, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(1, n_users + 1):
        n = int(rng.integers(3, 120))
        out[u * 7] = (rng.integers(1, 30, n).astype(np.int64), np.arange(n, dtype=np.int64) * 1000 + u)
    return out


def test_split_disjoint_complete_and_seeded():
    users = list(range(100))
    tr, va, te = split_users(users, seed=3)
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert sorted(tr + va + te) == users
    assert len(te) == 20 and len(va) == 8  # 20 % test, 10 % of the remaining 80 for validation
    assert split_users(users, seed=3) == (tr, va, te)
    assert split_users(users, seed=4) != (tr, va, te)


def test_target_positions_official_rule():
    rng = np.random.default_rng(0)
    assert target_positions(30, 10, 50, rng) == [29]  # <= 50 items: only the last
    assert target_positions(50, 10, 50, rng) == [49]
    p = target_positions(55, 10, 50, rng)
    assert p == [50, 51, 52, 53, 54]  # fewer than 10 candidates >= 50: all of them
    p = target_positions(300, 10, 50, rng)
    assert len(p) == 10 and len(set(p)) == 10 and min(p) >= 50 and max(p) <= 299


def test_window_left_padding_and_timestamps():
    items = np.array([11, 12, 13, 14, 15, 16], dtype=np.int64)
    ts = np.array([100, 200, 300, 400, 500, 600], dtype=np.int64)
    b = _Builder(seq_len=4, with_seen=True)
    b.add(9, items, ts, 2)  # history 11, 12 -> left-padded
    b.add(9, items, ts, 5)  # window of the 4 items before position 5
    s = b.build()
    assert s.hist.tolist() == [[0, 0, 11, 12], [12, 13, 14, 15]]
    assert s.hist_ts.tolist() == [[0, 0, 100, 200], [200, 300, 400, 500]]
    assert s.target.tolist() == [13, 16] and s.target_ts.tolist() == [300, 600]
    rows, seen = s.exclusions(torch.tensor([1]))
    assert rows.tolist() == [0] * 5 and sorted(seen.tolist()) == [11, 12, 13, 14, 15]  # all earlier items
    with pytest.raises(ValueError):
        b.add(9, items, ts, 0)


def test_protocol_p_users_disjoint_and_deterministic():
    seqs = _seqs()
    a, b, c = protocol_p(seqs, seed=1), protocol_p(seqs, seed=1), protocol_p(seqs, seed=2)
    users = {k: set(getattr(a, k).user.tolist()) for k in ("train", "val", "test")}
    assert not (users["train"] & users["test"]) and not (users["val"] & users["test"])
    assert not (users["train"] & users["val"])
    assert len(a.val) == len(users["val"]) and len(a.test) == len(users["test"])  # 1 target each
    assert torch.equal(a.train.hist, b.train.hist) and torch.equal(a.test.target, b.test.target)
    assert not torch.equal(a.test.user, c.test.user)
    for s in (a.train, a.test):  # every target really follows its window in the user's sequence
        for i in range(len(s)):
            items, _ = seqs[int(s.user[i])]
            h = s.hist[i][s.hist[i] > 0].numpy()
            pos = [p for p in range(1, len(items)) if items[p] == s.target[i] and
                   np.array_equal(items[max(0, p - 50):p], h)]
            assert pos, "target/window do not come from the user's sequence"
    long_users = [u for u, (it, _) in seqs.items() if len(it) > 60 and u in users["train"]]
    assert all((a.train.user == u).sum() == 10 for u in long_users)


def test_protocol_l_leave_one_out():
    seqs = {1: (np.array([5, 6, 7, 8, 9]), np.arange(5) * 10), 2: (np.array([3, 4]), np.arange(2))}
    s = protocol_l(seqs, seq_len=3)
    assert s.test.target.tolist() == [9] and s.val.target.tolist() == [8]
    assert s.test.hist.tolist() == [[6, 7, 8]]
    assert s.train.target.tolist() == [6, 7]  # sliding targets at positions 1..n-3; user 2 (too short) skipped
    assert s.train.hist.tolist() == [[0, 0, 5], [0, 5, 6]]
