"""Grafana dashboards: committed JSON == generator output, sound layout, and every query reads metrics (and
labels) that the code defines."""
from __future__ import annotations

import json
import re

import pytest

from deploy import dashboards
from deploy.promql import check

LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)")


@pytest.fixture(scope="module")
def series(code_series):
    return code_series


@pytest.fixture(scope="module")
def committed():
    return {p.name: json.loads(p.read_text()) for p in sorted(dashboards.OUT_DIR.glob("*.json"))}


def test_committed_json_matches_generator():
    generated = dashboards.render_all()
    for d in (dashboards.OUT_DIR, dashboards.CHART_COPY_DIR):
        on_disk = {p.name: p.read_text() for p in d.glob("*.json")}
        assert set(on_disk) == set(generated), f"{d}: run `python -m deploy.dashboards`"
        for name, text in generated.items():
            assert on_disk[name] == text, f"{d / name} is stale: run `python -m deploy.dashboards`"


def test_check_mode_detects_a_stale_file(tmp_path):
    assert dashboards.write(tmp_path) != []  # empty dir: all written
    assert dashboards.write(tmp_path, check=True) == []
    first = sorted(tmp_path.glob("*.json"))[0]
    first.write_text(first.read_text().replace('"title"', '"titel"', 1))
    assert dashboards.write(tmp_path, check=True) == [str(first)]
    assert dashboards.main(["--out", str(tmp_path), "--check"]) == 1


def test_required_views_exist(committed):
    titles = {d["uid"]: " | ".join(p["title"] for p in d["panels"]).lower() for d in committed.values()}
    assert {"t2diff-ab", "t2diff-serving", "t2diff-pipeline"} == set(titles)
    for needle in ("evr lift", "play-duration lift", "effective view rate", "play duration"):
        assert needle in titles["t2diff-ab"], needle
    for needle in ("p50 latency", "p99 latency"):
        assert needle in titles["t2diff-serving"], needle
    for needle in ("event -> feature", "event -> searchable", "model -> index", "trainer throughput",
                   "prequential recall", "dead letters"):
        assert needle in titles["t2diff-pipeline"], needle
    serving_exprs = " ".join(t["expr"] for p in committed["t2diff-serving.json"]["panels"]
                             for t in p.get("targets", []))
    assert "histogram_quantile(0.99, sum by (le, deployment)" in serving_exprs


def test_layout_and_structure(committed):
    for name, d in committed.items():
        assert d["templating"]["list"][0]["name"] == "datasource", name
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (name, p["title"])
            cover = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cover & cells, f"{name}: panel {p['title']!r} overlaps another"
            cells |= cover
            if p["type"] != "row":
                assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), (name, p["title"])
                assert p["datasource"]["uid"] == "${datasource}"


def test_every_query_uses_metrics_defined_in_code(committed, series):
    problems = []
    for name, d in committed.items():
        for p in d["panels"]:
            for t in p.get("targets", []):
                problems += [f"{name} / {p['title']}: {x}" for x in check(t["expr"], series)]
        for v in d["templating"]["list"]:
            if v["type"] != "query":
                continue
            m = LABEL_VALUES.fullmatch(v["query"]["query"].strip())
            assert m, f"{name}: variable {v['name']} is not label_values(metric, label)"
            metric, label = m.groups()
            if metric not in series or label not in series[metric]:
                problems.append(f"{name}: variable {v['name']} reads {metric}{{{label}}}, not defined in code")
    assert not problems, "\n".join(problems)


def test_layout_preview_png(tmp_path, committed):
    from deploy import preview

    out = preview.draw(committed["t2diff-serving.json"], tmp_path / "serving.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_a_metric_renamed_in_the_code_fails_the_check(tmp_path, committed):
    """End to end: copy the files that define metrics, rename one metric, rescan: the dashboards now fail."""
    import shutil

    from deploy.metrics_scan import REPO_ROOT, exposed_series, scan_code

    for rel in {d.source.split(":")[0] for d in scan_code()}:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / rel, tmp_path / rel)
    renamed = 0
    for f in tmp_path.rglob("*.py"):
        text = f.read_text()
        if '"t2diff_dead_letters"' in text:
            f.write_text(text.replace('"t2diff_dead_letters"', '"t2diff_dead_letterz"'))
            renamed += 1
    assert renamed == 1
    series = exposed_series(scan_code(tmp_path))
    problems = [x for d in committed.values() for p in d["panels"] for t in p.get("targets", [])
                for x in check(t["expr"], series)]
    assert any("t2diff_dead_letters_total" in x for x in problems), problems
