"""Prometheus config and alert rules: generated files in sync, metric names exist in the code, and promtool
(Debian's prometheus package, via make deploy-tools) checks the config, the rules and their unit tests."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from deploy import alerts
from deploy.promql import check

PROM = Path(alerts.DEPLOY) / "prometheus"


def _run(cmd, cwd=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_committed_rules_match_generator():
    assert alerts.write(check=True) == [], "run `python -m deploy.alerts`"
    assert alerts.OUTPUTS[0].read_text() == alerts.OUTPUTS[1].read_text()


def test_required_alerts_and_their_metrics(code_series):
    rules = {r["alert"]: r for g in alerts.rules()["groups"] for r in g["rules"]}
    assert "histogram_quantile(0.99" in rules["T2DiffRecallLatencyP99High"]["expr"]
    assert "t2diff_stream_apply_latency_seconds_bucket" in rules["T2DiffFeatureFreshnessLagHigh"]["expr"]
    assert "t2diff_dead_letters_total" in rules["T2DiffDeadLetterRateHigh"]["expr"]
    problems = [f"{name}: {p}" for name, r in rules.items() for p in check(r["expr"], code_series)]
    assert not problems, "\n".join(problems)
    for r in rules.values():
        assert r["labels"]["severity"] in {"page", "ticket"} and r["annotations"]["summary"]


def test_promtool_checks_rules_and_local_config(promtool):
    _run([promtool, "check", "rules", str(PROM / "alerts.yml")])
    _run([promtool, "check", "config", str(PROM / "prometheus.yml")])


def test_promtool_alert_unit_tests(promtool):
    out = _run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROM)
    assert "SUCCESS" in out


def test_promtool_rejects_a_broken_rule(promtool, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "X", "expr": "sum by (le (rate(x[5m]))", "for": "5m"}]}]}))
    proc = subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_kubernetes_scrape_config(promtool, tmp_path):
    """Debian's promtool is built without Kubernetes discovery, so the file is checked with that block swapped
    for file_sd (everything else, relabelling included, is promtool-checked) and the SD block structurally."""
    doc = yaml.safe_load((PROM / "prometheus-kubernetes.yml").read_text())
    job = doc["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "endpoints"}]
    keeps = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    # Must select what the chart renders: label t2diff.io/metrics="true" on the Service, port named `metrics`.
    assert keeps[("__meta_kubernetes_service_label_t2diff_io_metrics",)] == "true"
    assert keeps[("__meta_kubernetes_endpoint_port_name",)] == "metrics"
    assert "deployment" not in {r.get("target_label") for r in job["relabel_configs"]}
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    del job["kubernetes_sd_configs"]
    doc["rule_files"] = [str(PROM / "alerts.yml")]
    (tmp_path / "p.yml").write_text(yaml.safe_dump(doc))
    _run([promtool, "check", "config", str(tmp_path / "p.yml")])
