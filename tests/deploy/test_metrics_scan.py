"""The source scanner that backs the "every metric a dashboard or alert uses exists" check."""
from __future__ import annotations

import textwrap

from deploy.metrics_scan import MetricDef, exposed_series, scan_code, scan_file
from deploy.promql import check, parse


def test_scan_resolves_prefixes_namespaces_and_labels(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(textwrap.dedent('''
        from prometheus_client import Counter, Gauge, Histogram
        import prometheus_client as pc
        BASE = "t2x_"
        A = Counter(BASE + "hits", "h", ["arm"])
        class M:
            def __init__(self):
                p = "t2x_srv_"
                self.lat = Histogram(p + "latency_seconds", "l", labelnames=("deployment", "stage"))
        G = pc.Gauge("lag", "g", namespace="t2x", subsystem="stream")
        T = Counter("t2x_done_total", "already suffixed")
        NOT_A_METRIC = dict(name="t2x_fake")
    '''))
    defs = {d.name: d for d in scan_file(src, tmp_path)}
    assert set(defs) == {"t2x_hits", "t2x_srv_latency_seconds", "t2x_stream_lag", "t2x_done_total"}
    assert defs["t2x_srv_latency_seconds"].labels == ("deployment", "stage")
    series = exposed_series(list(defs.values()))
    assert series["t2x_hits_total"] == {"arm"}
    assert series["t2x_done_total"] == set()  # not t2x_done_total_total
    assert {"t2x_srv_latency_seconds_bucket", "t2x_srv_latency_seconds_sum",
            "t2x_srv_latency_seconds_count"} <= set(series)
    assert "le" in series["t2x_srv_latency_seconds_bucket"]
    assert "t2x_stream_lag" in series


def test_scan_survives_a_file_mid_edit(tmp_path):
    (tmp_path / "broken.py").write_text("from prometheus_client import Counter\nC = Counter('x', \n")
    assert scan_file(tmp_path / "broken.py", tmp_path) == []


def test_scan_finds_the_repo_metrics():
    names = {d.name for d in scan_code()}
    # ARCHITECTURE.md names this one; the streaming package defines it.
    assert "t2diff_dead_letters" in names


def test_promql_reader():
    p = parse('histogram_quantile(0.99, sum by (le, deployment) (rate(a_bucket{stage="x",arm=~"$arm"}[5m]))) '
              '/ on(job) group_left sum(rate(b_total[$__rate_interval] offset 1h)) > bool 0.5 and up == 1')
    assert p.metrics == {"a_bucket", "b_total", "up"}
    assert p.grouping == {"le", "deployment", "job"}
    assert {s.metric: s.matchers for s in p.selectors}["a_bucket"] == {"stage", "arm"}


def test_check_reports_missing_metrics_and_labels():
    series = exposed_series([MetricDef("t2x_req", "counter", ("arm",), "x.py:1")])
    assert check('sum by (arm) (rate(t2x_req_total{arm="a"}[5m]))', series) == []
    assert any("t2x_gone_total" in p for p in check("rate(t2x_gone_total[5m])", series))
    assert any("label 'kind'" in p for p in check('rate(t2x_req_total{kind="a"}[5m])', series))
    assert any("grouping label 'kind'" in p for p in check("sum by (kind) (rate(t2x_req_total[5m]))", series))
    assert check("rate(t2x_req_total[5m])", {}) != []
