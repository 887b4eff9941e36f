"""End-to-end: the demo loop on a small slice of the real KuaiRand log, every component through its public
entry point (the same code path as `make demo`, smaller knobs). Asserts on the report's contents."""
from __future__ import annotations

import json
import math

import pytest

from t2diff.paths import data_dir

requires_data = pytest.mark.skipif(not (data_dir() / "kuairand").exists(), reason="../shared/data not present")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@requires_data
def test_demo_small_slice(tmp_path):
    from t2diff.demo.orchestrator import run_demo
    from t2diff.demo.settings import DemoSettings

    s = DemoSettings(warm_days=2, replay_days=1, max_requests=20, k=50, replay_minutes=0.4, offline_epochs=1,
                     drain_timeout_s=10, startup_timeout_s=180, prequential_buckets=4)
    rep = run_demo(s, tmp_path / "demo")
    out = tmp_path / "demo"
    doc = json.loads((out / "report.json").read_text())
    arms = doc["ab"]["arms"]
    assert {"treatment", "control", "popular", "frozen"} <= set(arms), doc["skipped"]
    for name, a in arms.items():
        assert a["n"] > 0, name
        for m, v in a["metrics"].items():
            assert 0 <= v["lo"] <= v["mean"] <= v["hi"], (name, m, v)  # a CI around every mean
    assert doc["ab"]["control"] == "control"
    for n, a in arms.items():
        if n != "control":  # lifts are computed (NaN only when the control earned nothing at all)
            assert set(a["lift"]) == set(a["metrics"]), n
            if arms["control"]["metrics"]["recall"]["mean"] > 0:
                assert not math.isnan(a["lift"]["recall"]["lift"]), n
    assert doc["freshness"]["event_to_feature"]["n"] > 0, doc["skipped"]
    assert set(doc["freshness"]) >= {"event_to_feature", "event_to_model_version", "model_to_index"}
    assert all(doc["latency"][a]["n"] > 0 for a in arms)
    assert doc["prequential"], "no prequential points"
    for png in ("ab.png", "freshness.png", "latency.png", "prequential.png"):
        assert (out / png).stat().st_size > 1000, png
    text = (out / "report.txt").read_text()
    assert "lift treatment" in text and "freshness" in text
    # honesty: whatever was not measured is said, and a degraded run says it was degraded
    if doc["meta"]["client_mode"] == "in_process":
        assert any("IN PROCESS" in x for x in doc["skipped"])
    assert rep["ab"]["paired_requests"] == doc["ab"]["paired_requests"]
