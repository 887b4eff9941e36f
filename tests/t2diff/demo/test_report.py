"""The report: every section present, text names every arm, PNGs written, skipped items listed, JSON clean."""
from __future__ import annotations

import json

from t2diff.demo.moments import RequestMoment, Watched
from t2diff.demo.report import build_report, format_report, percentiles, write_report


def _moments(n):
    return [RequestMoment(f"r{i}", i, 1651420800000 + i * 3_600_000, [5],
                          [Watched(i % 4, 0, 12_000, i % 2 == 0, True, i == 3)]) for i in range(n)]


def test_percentiles():
    p = percentiles(list(range(1, 101)))
    assert p["n"] == 100 and p["p50_ms"] == 50.5 and p["max_ms"] == 100 and abs(p["p99_ms"] - 99.01) < 1e-9
    assert percentiles([]) == {"n": 0}


def test_report_written(tmp_path):
    ms = _moments(24)
    answers = {m.request_id: {"treatment": [0, 1, 2], "control": [0], "popularity": [3]} for m in ms}
    rep = build_report(ms, answers, latency_ms={"treatment": [5.0, 7.0], "control": [3.0]},
                       freshness_ms={"event_to_feature": [120.0, 80.0], "event_to_model_version": []},
                       trainer_prequential=[{"event_ts_ms": 1651420800000, "recall": 0.1}],
                       control="control", buckets=4, meta={"split": "x"},
                       skipped=["model_to_index: no index in this run"])
    txt = format_report(rep)
    for needle in ("treatment", "control", "popularity", "lift treatment", "event_to_feature", "(no samples)",
                   "SKIPPED", "model_to_index", "prequential recall"):
        assert needle in txt, needle
    paths = write_report(rep, tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert set(doc) >= {"ab", "freshness", "latency", "prequential", "skipped", "meta"}
    assert doc["ab"]["arms"]["treatment"]["metrics"]["recall"]["mean"] == 0.75
    for key in ("ab_png", "freshness_png", "latency_png", "prequential_png"):
        assert paths[key].exists() and paths[key].stat().st_size > 1000, key
    assert len(paths["csv"].read_text().splitlines()) == 1 + 24 * 3
