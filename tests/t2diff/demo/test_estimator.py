"""Request-moment extraction and the counterfactual estimator on a hand-made log (numbers worked by hand)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from t2diff.demo.estimator import ab_summary, mean_ci, paired_lift, pick_control, prequential, score_request, score_table
from t2diff.demo.moments import DAY_MS, Watched, RequestMoment, day_split, extract_request_moments, sample_moments

MIN = 60_000
# 2022-04-25 00:00 Beijing
D0 = 1650816000000


def _row(user, item, t, click=1, lv=0, play=0, follow=0):
    return {"user_id": user, "video_id": item, "date": 20220425 + (t - D0) // DAY_MS, "time_ms": t, "is_click": click,
            "long_view": lv, "play_time_ms": play, "is_follow": follow}


@pytest.fixture
def log_df():
    rows = [
        # user 1: history on day 0, then a session on day 1 (the replay day)
        _row(1, 10, D0 + 60 * MIN, play=5_000),
        _row(1, 11, D0 + 90 * MIN, click=0),  # skipped impression: not history
        _row(1, 12, D0 + DAY_MS + 10 * MIN, lv=1, play=40_000),  # request moment (session start)
        _row(1, 13, D0 + DAY_MS + 12 * MIN, play=12_000, follow=1),  # same session, watched next
        _row(1, 12, D0 + DAY_MS + 14 * MIN, play=3_000),  # repeat of 12: play summed
        _row(1, 14, D0 + DAY_MS + 15 * MIN, click=0, play=2_000),  # not watched
        _row(1, 15, D0 + DAY_MS + 300 * MIN, play=1_000),  # new session -> second request moment
        # user 2: no history before the replay -> dropped with min_history=1
        _row(2, 20, D0 + DAY_MS + 5 * MIN),
        # user 3: history, but the session start is only skipped impressions
        _row(3, 30, D0 + 5 * MIN),
        _row(3, 31, D0 + DAY_MS + 50 * MIN, click=0),
        # day 2: outside a 1-day replay
        _row(1, 16, D0 + 2 * DAY_MS + 5 * MIN),
    ]
    return pd.DataFrame(rows)


def test_day_split_and_moments(log_df):
    sp = day_split(log_df, warm_days=1, replay_days=1)
    assert sp.warm_start_ms == D0 and sp.warm_end_ms == D0 + DAY_MS and sp.replay_end_ms == D0 + 2 * DAY_MS
    with pytest.raises(ValueError):
        day_split(log_df, warm_days=2, replay_days=2)
    moments, counts = extract_request_moments(log_df, sp, horizon_ms=60 * MIN, ev_threshold_ms=10_000)
    assert counts == {"session_starts": 4, "too_little_history": 1, "nothing_watched_next": 1, "moments": 2}
    m = moments[0]
    assert (m.user_id, m.ts_ms, m.history) == (1, D0 + DAY_MS + 10 * MIN, [10])
    assert [w.item for w in m.next] == [12, 13]
    w12, w13 = m.next
    assert (w12.play_ms, w12.long_view, w12.effective, w12.follow) == (43_000, True, True, False)
    assert (w13.play_ms, w13.long_view, w13.effective, w13.follow) == (12_000, False, True, True)
    # the second session of user 1 sees everything watched before it as history (12 once per watch row)
    m2 = moments[1]
    assert m2.history == [10, 12, 13, 12] and [w.item for w in m2.next] == [15]
    assert not m2.next[0].effective


def test_horizon_events_caps_next(log_df):
    sp = day_split(log_df, 1, 1)
    moments, _ = extract_request_moments(log_df, sp, horizon_ms=60 * MIN, horizon_events=1)
    assert [w.item for w in moments[0].next] == [12]


def _moment(rid, items, ts=0):
    return RequestMoment(rid, 1, ts, [1], [Watched(i, ts, p, lv, eff, f) for i, p, lv, eff, f in items])


def test_score_request_by_hand():
    m = _moment("r", [(12, 43_000, True, True, False), (13, 12_000, False, True, True), (14, 1_000, False, False, False)])
    s = score_request(m, [13, 14, 99])
    assert s == {"hit": 1.0, "recall": pytest.approx(2 / 3), "evr": 1.0, "play_s": 13.0, "follow": 1.0}
    s = score_request(m, [14])
    assert s == {"hit": 1.0, "recall": pytest.approx(1 / 3), "evr": 0.0, "play_s": 1.0, "follow": 0.0}
    assert score_request(m, [])["hit"] == 0.0  # candidates never shown/watched earn nothing


def test_mean_ci_wilson_and_t():
    e = mean_ci(np.array([1, 0, 0, 0]), binary=True)
    assert e.mean == 0.25 and 0 < e.lo < 0.25 < e.hi < 1
    e0 = mean_ci(np.zeros(10), binary=True)  # Wilson stays informative at zero successes
    assert e0.lo == 0 and 0 < e0.hi < 0.35
    x = np.array([1.0, 2.0, 3.0, 4.0])
    e = mean_ci(x, binary=False)
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t_{0.975,3} * s / sqrt(4)
    assert e.mean == 2.5 and e.lo == pytest.approx(2.5 - half) and e.hi == pytest.approx(2.5 + half)
    assert math.isnan(mean_ci(np.array([1.0]), binary=False).lo)


def test_paired_lift():
    c = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    res = paired_lift(c * 1.5, c)
    # t is exactly 1.5 * c: the lift is 0.5 with zero variance under pairing
    assert res["lift"] == pytest.approx(0.5) and res["lo"] == pytest.approx(0.5) and res["hi"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    c = rng.normal(10, 3, 400)
    t = c + rng.normal(1, 1, 400)  # +10 % on average, strongly paired
    res = paired_lift(t, c)
    assert res["lo"] < 0.1 < res["hi"] and res["p"] < 1e-6
    assert math.isnan(paired_lift(t, np.zeros(400))["lift"])


def test_ab_summary_and_prequential():
    ms = [_moment(f"r{i}", [(10 + i % 3, 20_000, True, True, i == 0)], ts=i * 1000) for i in range(6)]
    answers = {m.request_id: {"t2diff": [10, 11, 12], "popular": [10]} for m in ms}
    tab = score_table(ms, answers)
    assert len(tab) == 12
    rep = ab_summary(tab)
    assert rep["control"] == "popular" and rep["paired_requests"] == 6
    t2, pop = rep["arms"]["t2diff"], rep["arms"]["popular"]
    assert t2["metrics"]["hit"]["mean"] == 1.0 and pop["metrics"]["hit"]["mean"] == pytest.approx(2 / 6)
    assert t2["metrics"]["play_s"]["mean"] == 20.0 and pop["metrics"]["play_s"]["mean"] == pytest.approx(40 / 6)
    assert t2["lift"]["hit"]["lift"] == pytest.approx(2.0) and pop["lift"] == {}
    assert t2["metrics"]["follow"]["mean"] == pytest.approx(1 / 6)
    pq = prequential(tab, buckets=2)
    assert set(pq["arm"]) == {"t2diff", "popular"} and pq["n"].sum() == 12
    assert pq[pq.arm == "t2diff"]["recall"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        pick_control(["a", "b"], "c")


def test_sample_moments_is_seeded_and_time_ordered():
    ms = [_moment(f"r{i}", [(1, 0, False, False, False)], ts=i) for i in range(50)]
    a, b = sample_moments(ms, 10, seed=3), sample_moments(ms, 10, seed=3)
    assert [m.request_id for m in a] == [m.request_id for m in b]
    assert [m.ts_ms for m in a] == sorted(m.ts_ms for m in a) and len(a) == 10
    assert len(sample_moments(ms, 100)) == 50


def test_unpaired_when_arms_answer_different_requests():
    ms = [_moment(f"r{i}", [(1, 10_000, True, True, False)], ts=i) for i in range(40)]
    # sticky split: even requests go to "control", odd to "t2diff"; t2diff hits 3 in 4, control 1 in 4
    answers = {m.request_id: ({"t2diff": [1] if i % 8 != 1 else []} if i % 2 else {"control": [1] if i % 8 == 0 else []})
               for i, m in enumerate(ms)}
    rep = ab_summary(score_table(ms, answers))
    assert rep["paired"] is False and rep["control"] == "control"
    lf = rep["arms"]["t2diff"]["lift"]["hit"]
    assert lf["lift"] == pytest.approx(0.75 / 0.25 - 1) and lf["lo"] < lf["lift"] < lf["hi"] and lf["p"] < 0.01


def test_rare_binary_lift_has_no_fake_interval():
    ms = [_moment(f"r{i}", [(1, 10_000, True, True, i < 2)], ts=i) for i in range(200)]
    # treatment answers every other moment: 100 hits, 1 follow; control: 200 hits, 2 follows
    answers = {m.request_id: {"t2diff": [1] if i % 2 == 0 else [], "control": [1]} for i, m in enumerate(ms)}
    rep = ab_summary(score_table(ms, answers))
    lf = rep["arms"]["t2diff"]["lift"]["follow"]
    assert lf["lift"] == pytest.approx(-0.5) and math.isnan(lf["lo"]) and math.isnan(lf["hi"])
    hit = rep["arms"]["t2diff"]["lift"]["hit"]
    assert hit["lift"] == pytest.approx(-0.5) and hit["lo"] < -0.5 < hit["hi"]  # enough events: a real interval
