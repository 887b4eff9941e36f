import numpy as np
import pytest
from scipy import stats

from serving.ab import ABRouter, bucket
from serving.settings import ArmConfig, ExperimentConfig, ServingSettings


def _exp(weights, salt="s1"):
    return ExperimentConfig(salt=salt, arms=[ArmConfig(name=f"a{i}", weight=w, source="popularity")
                                             for i, w in enumerate(weights)])


def test_assignment_sticky_and_weighted_over_100k_users():
    weights = [0.5, 0.3, 0.2]
    r1, r2 = ABRouter(_exp(weights)), ABRouter(_exp(weights))  # two "replicas"
    users = np.arange(100_000)
    a1 = [r1.assign(int(u)).name for u in users]
    assert a1 == [r2.assign(int(u)).name for u in users]  # same arm on every replica
    assert a1[:1000] == [r1.assign(int(u)).name for u in users[:1000]]  # and on every call
    counts = np.array([a1.count(f"a{i}") for i in range(3)])
    chi2, p = stats.chisquare(counts, f_exp=np.array(weights) * len(users))
    assert p > 0.001, (counts, chi2)
    # a broken router (everyone in one arm, or a 1/3 split) must fail the same test
    _, p_bad = stats.chisquare(np.array([33_334, 33_333, 33_333]), f_exp=np.array(weights) * len(users))
    assert p_bad < 1e-6


def test_new_salt_reshuffles_and_weight_change_moves_few_users():
    users = range(20_000)
    base = ABRouter(_exp([0.5, 0.5]))
    other = ABRouter(_exp([0.5, 0.5], salt="s2"))
    moved_salt = sum(base.assign(u).name != other.assign(u).name for u in users) / 20_000
    assert 0.4 < moved_salt < 0.6  # independent hash: about half change arm
    shifted = ABRouter(_exp([0.45, 0.55]))
    moved_w = sum(base.assign(u).name != shifted.assign(u).name for u in users) / 20_000
    assert 0.03 < moved_w < 0.07  # only the 5 % slice at the boundary moves


def test_zero_weight_arm_never_chosen():
    r = ABRouter(_exp([0.0, 1.0, 0.0]))
    assert {r.assign(u).name for u in range(5000)} == {"a1"}


def test_bucket_uniform_range():
    b = np.array([bucket("x", u) for u in range(10_000)])
    assert b.min() >= 0 and b.max() < 1
    assert stats.kstest(b, "uniform").pvalue > 0.001


def test_arms_file_reload_without_restart(tmp_path):
    f = tmp_path / "arms.yaml"
    f.write_text("experiment:\n  salt: s1\n  arms:\n    - {name: a0, weight: 1, source: popularity}\n")
    results = []
    r = ABRouter(_exp([1.0, 0.0]), arms_file=f, reload_s=0.01, on_reload=results.append)
    assert [a.name for a in r.arms()] == ["a0"] and results == ["applied"]
    import os
    import time
    f.write_text("salt: s1\narms:\n  - {name: b, weight: 1, source: popularity}\n")
    os.utime(f, (time.time() + 5, time.time() + 5))
    time.sleep(0.02)
    assert r.assign(7).name == "b" and results[-1] == "applied"
    # a broken file keeps the current arms and reports it
    f.write_text("arms: [{name: 'Bad Name', weight: 1, source: popularity}]\n")
    os.utime(f, (time.time() + 10, time.time() + 10))
    time.sleep(0.02)
    assert r.assign(7).name == "b" and results[-1] == "rejected"


def test_router_rejects_sources_the_app_does_not_run(tmp_path):
    with pytest.raises(ValueError, match="sources this app does not run"):
        ABRouter(_exp([1.0]), allowed_sources={"t2diff"})


def test_settings_validate_references():
    with pytest.raises(ValueError, match="unknown source"):
        ServingSettings(experiment=ExperimentConfig(arms=[ArmConfig(name="x", weight=1, source="nope")]))
    with pytest.raises(ValueError, match="extra|Extra"):
        ServingSettings(bogus=1)
    with pytest.raises(ValueError):
        ArmConfig(name="Has Space", weight=1, source="t2diff")
