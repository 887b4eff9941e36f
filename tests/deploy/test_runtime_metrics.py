"""Cross-checks of the source scanner against the live prometheus-client objects, and promtool's lint of what a
scrape of each component returns."""
from __future__ import annotations

import subprocess

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from deploy.metrics_scan import exposed_series, scan_code

# Modules that define the metrics (cheap to import: prometheus-client only).
MODULES = {"serving/metrics.py": "serving.metrics", "streaming/metrics.py": "streaming.metrics",
           "trainer/online/telemetry.py": "trainer.online.telemetry"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("", "_sum", "_count"), "info": ("_info",)}


def _registries():
    import importlib

    for mod in MODULES.values():
        importlib.import_module(mod)
    from serving.metrics import ServingMetrics

    serving = ServingMetrics(CollectorRegistry())
    return serving, REGISTRY


def _runtime_series(registry) -> set[str]:
    return {fam.name + sfx for fam in registry.collect() if fam.name.startswith("t2diff_")
            for sfx in SUFFIXES[fam.type]}


def test_scanner_agrees_with_the_live_metric_objects():
    serving, default = _registries()
    live = _runtime_series(serving.registry) | _runtime_series(default)
    defs = scan_code()
    scanned = {name for d in defs if d.source.split(":")[0] in MODULES for name in d.exposed()}
    assert scanned <= live, f"scanned but not live: {scanned - live}"
    # Anything else in the default registry (other modules imported earlier in a full test run, or tests'
    # own metrics) must be found by the scanner too.
    everywhere = set(exposed_series(defs)) | set(exposed_series(scan_code(packages=("tests",))))
    assert live <= everywhere, f"live but not found by the scanner: {live - everywhere}"


def test_promtool_lints_the_exposition(promtool):
    serving, default = _registries()
    serving.requests.labels("treatment").inc()
    serving.latency.labels("ingress", "end_to_end").observe(0.012)
    serving.play_duration.labels("treatment").observe(9.0)
    serving.set_version("t2diff", "3")
    # Only our modules' metrics (the default registry may hold other tests' metrics in a full run).
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    ours = CollectorRegistry()
    for mod in ("streaming.metrics", "trainer.online.telemetry"):
        for obj in vars(importlib.import_module(mod)).values():
            if isinstance(obj, MetricWrapperBase):
                ours.register(obj)
    for name, text in (("serving", serving.render()), ("streaming + trainer", generate_latest(ours))):
        assert b"# TYPE t2diff_" in text, name
        proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
        assert proc.returncode == 0, f"{name}: {proc.stdout.decode()} {proc.stderr.decode()}"
    bad = b"# HELP x_seconds latency\n# TYPE x_seconds counter\nx_seconds 1\n"  # counter without _total
    proc = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True, timeout=60)
    assert proc.returncode != 0 and b"_total" in proc.stdout + proc.stderr  # the lint really runs
