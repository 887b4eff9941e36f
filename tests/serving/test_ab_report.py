"""ab report: per-arm metrics and lift with delta-method CIs on a synthetic feedback log with a known effect."""
import json

import numpy as np
import pytest

from serving import ab_report


def _write_log(path, evr_by_arm, users=1500, imps=8, days=3, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for arm, evr in evr_by_arm.items():
            for u in range(users):
                # per-user propensity around the arm's EVR: clustered events, as in a real feed
                p = np.clip(rng.beta(2, 2 / evr - 2), 0, 1)
                day = u % days
                for j in range(imps):
                    ts = 1_700_000_000_000 + day * 86_400_000 + j * 1000
                    base = {"ts_ms": ts, "request_id": f"r{u}", "known": True, "arm": arm, "user_id": u + 10**6 * (arm == "treatment"),
                            "item_id": j, "long_view": None}
                    f.write(json.dumps({**base, "event": "impression", "play_time_ms": None, "effective": False}) + "\n")
                    eff = rng.random() < p
                    f.write(json.dumps({**base, "event": "play", "play_time_ms": int(12000 if eff else 2000),
                                        "effective": bool(eff)}) + "\n")
                    if rng.random() < 0.01:
                        f.write(json.dumps({**base, "event": "follow", "play_time_ms": None, "effective": False}) + "\n")
        f.write(json.dumps({"ts_ms": 1, "request_id": "x", "known": False, "arm": None, "user_id": 1, "item_id": 1,
                            "event": "impression", "play_time_ms": None, "long_view": None, "effective": False}) + "\n")
        f.write("{torn line\n")


def test_lift_ci_covers_truth_and_excludes_zero(tmp_path):
    _write_log(tmp_path / "fb.jsonl", {"control": 0.20, "treatment": 0.25})
    df = ab_report.load(tmp_path / "fb.jsonl")
    rep = ab_report.report(df)
    assert rep["control"] == "control" and rep["denominator"] == "impressions"
    c, t = rep["arms"]["control"], rep["arms"]["treatment"]
    assert c["impressions"] == 1500 * 8  # the unknown-request record is not credited
    lo, hi = t["lift"]["evr"]["ci95"]
    assert lo < 0.25 < hi and lo > 0  # true lift 25 %, detected
    assert abs(c["evr"]["value"] - 0.20) < 0.02
    # play time follows EVR here: 2 s + 10 s * EVR
    assert abs(t["play_s"]["value"] - (2 + 10 * t["evr"]["value"])) < 1e-6
    text = ab_report.format_table(rep)
    assert "treatment" in text and "lift treatment vs control" in text
    dl = ab_report.daily_lift(df, "control")
    assert len(dl) == 3 and (dl["lo"] < dl["lift"]).all()
    png = ab_report.plot_daily(dl, tmp_path / "lift.png")
    assert png.stat().st_size > 1000


def test_aa_lift_ci_covers_zero(tmp_path):
    _write_log(tmp_path / "fb.jsonl", {"control": 0.2, "treatment": 0.2}, seed=3)
    t = ab_report.report(ab_report.load(tmp_path / "fb.jsonl"))["arms"]["treatment"]
    lo, hi = t["lift"]["evr"]["ci95"]
    assert lo < 0 < hi


def test_delta_method_wider_than_naive_binomial_for_clustered_users():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 2, 2000)  # very heterogeneous users
    n = np.full(2000, 20)
    x = rng.binomial(n, p)
    r = ab_report.ratio(x, n)
    naive = np.sqrt(r.value * (1 - r.value) / n.sum())
    assert r.se > 1.5 * naive


def test_empty_log_is_a_clear_error(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(ValueError, match="no feedback"):
        ab_report.load(tmp_path / "e.jsonl")


def test_cli_ab_report_prints_table_and_writes_png(tmp_path, capsys):
    from t2diff.cli import main

    _write_log(tmp_path / "fb.jsonl", {"control": 0.2, "treatment": 0.3}, users=300, imps=4)
    assert main(["ab", "report", "--log", str(tmp_path / "fb.jsonl"), "--out", str(tmp_path / "o"), "--json"]) == 0
    out = capsys.readouterr().out
    assert "lift treatment vs control" in out and "EVR" in out
    assert (tmp_path / "o" / "ab_daily_lift_evr.png").exists()
    rep = json.loads((tmp_path / "o" / "ab_report.json").read_text())
    assert rep["arms"]["treatment"]["lift"]["evr"]["value"] > 0
