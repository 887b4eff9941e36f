"""Grafana dashboards as code. ``python -m deploy.dashboards`` writes deploy/grafana/dashboards/*.json;
``--check`` exits 1 when the committed JSON differs from what this module generates (tests run the same check).

Three dashboards, all on one Prometheus data source chosen by the ``datasource`` variable:
  t2diff-ab        engagement per arm (requests, EVR, play duration, follows), treatment-vs-control lift
  t2diff-serving   latency p50/p99 per deployment (histogram_quantile), errors, fallbacks, model versions
  t2diff-pipeline  freshness lags, consumer lag, trainer throughput, prequential recall, dead letters by reason
Every series comes from deploy.names, which tests check against the metrics defined in the code.

The builder below is small on purpose. grafana-foundation-sdk (Grafana's typed Python builders) was tried first:
its automatic layout put a full-width panel at x=20 of a 24-wide row and it left every refId empty, so the
layout, ids and refIds would have had to be set by hand anyway; tests/deploy checks this layout instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from deploy import names as N

log = logging.getLogger(__name__)

OUT_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
# The chart ships a copy for the Grafana sidecar (metrics.grafanaDashboards.enabled); Helm reads only chart files.
CHART_COPY_DIR = Path(__file__).resolve().parent / "helm" / "t2diff" / "files" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
W = "$__rate_interval"  # Grafana picks a window >= 4 scrape intervals, so rate() never sees < 2 samples


def ratio(num: str, den: str, by: str = "arm", sel: str = "") -> str:
    """sum by (by) (rate(num)) / sum by (by) (rate(den)): rates per arm, the ratio of sums (not mean of ratios)."""
    grp = f" by ({by})" if by else ""
    return f"sum{grp} (rate({num}{sel}[{W}])) / sum{grp} (rate({den}{sel}[{W}]))"


def quantile(q: float, base: str, by: str, sel: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({N.hist(base)}{sel}[{W}])))"


class Dashboard:
    """Lays panels out left to right in rows of 24 grid units; ``row()`` starts a titled row."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "options": [], "refresh": 1, "regex": "",
        }]
        self._x = self._y = self._row_h = 0

    def variable(self, name: str, label: str, query: str, multi: bool = True, default: str | None = None) -> None:
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"var_{name}"},
            "refresh": 2, "sort": 1, "multi": multi, "includeAll": multi, "hide": 0, "options": [],
            "current": {"text": default, "value": default} if default else {},
        })

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}, "panels": []})
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0

    def panel(self, title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries",
              w: int = 12, h: int = 8, description: str = "", min0: bool = True) -> None:
        if self._x + w > 24:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit}
        if min0:
            defaults["min"] = 0
        p: dict[str, Any] = {
            "type": kind, "title": title, "description": description, "datasource": DS,
            "id": len(self.panels) + 1, "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)],
        }
        if kind == "timeseries":
            defaults["custom"] = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
            p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                       "calcs": ["lastNotNull", "mean", "max"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        self.panels.append(p)
        self._x += w
        self._row_h = max(self._row_h, h)

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["t2diff"],
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"}, "timezone": "utc",
            "annotations": {"list": []}, "templating": {"list": self.variables}, "panels": self.panels,
        }


def ab_dashboard() -> Dashboard:
    d = Dashboard("t2diff-ab", "T2Diff / A/B engagement",
                  "Engagement per arm from the app's feedback (POST /feedback). EVR = effective views / impressions.")
    d.variable("arm", "Arms", f"label_values({N.SERVE_REQUESTS}, arm)")
    d.variable("treatment", "Treatment", f"label_values({N.SERVE_REQUESTS}, arm)", multi=False, default="t2diff")
    d.variable("control", "Control", f"label_values({N.SERVE_REQUESTS}, arm)", multi=False, default="control")
    arm = '{arm=~"$arm"}'
    t, c = '{arm="$treatment"}', '{arm="$control"}'

    d.row("Lift: treatment vs control")
    evr_t = ratio(N.SERVE_EFFECTIVE_VIEWS, N.SERVE_IMPRESSIONS, by="", sel=t)
    evr_c = ratio(N.SERVE_EFFECTIVE_VIEWS, N.SERVE_IMPRESSIONS, by="", sel=c)
    play_t = ratio(N.hist(N.SERVE_PLAY_SECONDS, "sum"), N.SERVE_IMPRESSIONS, by="", sel=t)
    play_c = ratio(N.hist(N.SERVE_PLAY_SECONDS, "sum"), N.SERVE_IMPRESSIONS, by="", sel=c)
    fol_t = ratio(N.SERVE_FOLLOWS, N.SERVE_IMPRESSIONS, by="", sel=t)
    fol_c = ratio(N.SERVE_FOLLOWS, N.SERVE_IMPRESSIONS, by="", sel=c)
    lift_doc = "(treatment / control) - 1 over the rate window; both arms' ratios are sums over replicas."
    d.panel("EVR lift", [(f"({evr_t}) / ({evr_c}) - 1", "EVR lift")], unit="percentunit", kind="stat", w=8,
            h=5, description=lift_doc, min0=False)
    d.panel("Play-duration lift (seconds played per impression)", [(f"({play_t}) / ({play_c}) - 1", "play lift")],
            unit="percentunit", kind="stat", w=8, h=5, description=lift_doc, min0=False)
    d.panel("Follow-rate lift", [(f"({fol_t}) / ({fol_c}) - 1", "follow lift")], unit="percentunit", kind="stat",
            w=8, h=5, description=lift_doc, min0=False)
    d.panel("EVR and play-duration lift over time", [
        (f"({evr_t}) / ({evr_c}) - 1", "EVR lift"),
        (f"({play_t}) / ({play_c}) - 1", "play-duration lift"),
    ], unit="percentunit", w=24, min0=False)

    d.row("Engagement per arm")
    d.panel("Effective view rate (EVR)", [(ratio(N.SERVE_EFFECTIVE_VIEWS, N.SERVE_IMPRESSIONS, sel=arm), "{{arm}}")],
            unit="percentunit")
    d.panel("Follow rate", [(ratio(N.SERVE_FOLLOWS, N.SERVE_IMPRESSIONS, sel=arm), "{{arm}}")], unit="percentunit")
    d.panel("Mean play duration per play", [
        (ratio(N.hist(N.SERVE_PLAY_SECONDS, "sum"), N.hist(N.SERVE_PLAY_SECONDS, "count"), sel=arm), "{{arm}}")],
        unit="s")
    d.panel("Play duration p50 / p90", [
        (quantile(0.5, N.SERVE_PLAY_SECONDS, "arm", arm), "p50 {{arm}}"),
        (quantile(0.9, N.SERVE_PLAY_SECONDS, "arm", arm), "p90 {{arm}}"),
    ], unit="s")
    d.panel("Play rate (plays / impressions)", [(ratio(N.SERVE_PLAYS, N.SERVE_IMPRESSIONS, sel=arm), "{{arm}}")],
            unit="percentunit")
    d.panel("Impressions / s", [(f"sum by (arm) (rate({N.SERVE_IMPRESSIONS}{arm}[{W}]))", "{{arm}}")], unit="ops")

    d.row("Traffic per arm")
    d.panel("Recall requests / s", [(f"sum by (arm) (rate({N.SERVE_REQUESTS}{arm}[{W}]))", "{{arm}}")],
            unit="reqps", w=8)
    d.panel("Candidates per request", [(ratio(N.SERVE_CANDIDATES, N.SERVE_REQUESTS, sel=arm), "{{arm}}")], w=8)
    d.panel("Fallback answers / s", [
        (f"sum by (arm, reason) (rate({N.SERVE_FALLBACKS}{arm}[{W}]))", "{{arm}} {{reason}}")], unit="reqps", w=8)
    return d


def serving_dashboard() -> Dashboard:
    d = Dashboard("t2diff-serving", "T2Diff / serving latency",
                  "Ray Serve recall path: ingress (end to end), encoder (Feast + user tower), retriever (Milvus).")
    d.variable("deployment", "Deployment", f"label_values({N.hist(N.SERVE_LATENCY)}, deployment)")
    sel = '{deployment=~"$deployment"}'
    d.row("Latency per deployment")
    d.panel("p50 latency", [(quantile(0.5, N.SERVE_LATENCY, "deployment", sel), "{{deployment}}")], unit="s", w=8)
    d.panel("p99 latency", [(quantile(0.99, N.SERVE_LATENCY, "deployment", sel), "{{deployment}}")], unit="s", w=8)
    d.panel("Mean latency", [(ratio(N.hist(N.SERVE_LATENCY, "sum"), N.hist(N.SERVE_LATENCY, "count"),
                                    by="deployment", sel=sel), "{{deployment}}")], unit="s", w=8)
    d.panel("p99 latency by stage", [
        (quantile(0.99, N.SERVE_LATENCY, "deployment, stage", sel), "{{deployment}} / {{stage}}")], unit="s")
    d.panel("Observations / s", [
        (f"sum by (deployment) (rate({N.hist(N.SERVE_LATENCY, 'count')}{sel}[{W}]))", "{{deployment}}")],
        unit="ops", w=12)
    d.panel("Ingress GC pauses: seconds paused / s, max pause (p99)", [
        (f"sum by (generation) (rate({N.hist(N.SERVE_GC_PAUSE, 'sum')}[{W}]))", "paused, gen {{generation}}"),
        (quantile(0.99, N.SERVE_GC_PAUSE, "generation"), "p99 pause, gen {{generation}}")], unit="s", w=12,
        description="Every collection stalls the requests in flight; collections under load mean something makes "
                    "reference cycles per request (benchmarks/serve.md, run 17).")
    d.row("Errors and degraded modes")
    d.panel("Errors / s by kind", [
        (f"sum by (deployment, kind) (rate({N.SERVE_ERRORS}{sel}[{W}]))", "{{deployment}} {{kind}}")],
        unit="ops", w=8)
    d.panel("Fallbacks / s by reason", [
        (f"sum by (reason) (rate({N.SERVE_FALLBACKS}[{W}]))", "{{reason}}")], unit="ops", w=8)
    d.panel("Rejected requests (4xx) / s", [
        (f"sum by (endpoint, reason) (rate({N.SERVE_BAD_REQUESTS}[{W}]))", "{{endpoint}} {{reason}}")],
        unit="ops", w=8)
    d.panel("Model version in use", [
        (f"max by (source, version) ({N.SERVE_MODEL_VERSION})", "{{source}} = {{version}}")],
        kind="stat", w=24, h=5)
    return d


def pipeline_dashboard() -> Dashboard:
    d = Dashboard("t2diff-pipeline", "T2Diff / streaming pipeline and trainer",
                  "Freshness from event to feature, to model version, to index; trainer progress; dead letters.")
    d.row("Freshness")
    d.panel("Event -> feature (p50 / p99)", [
        (quantile(0.5, N.STREAM_APPLY_LATENCY, "group"), "p50 {{group}}"),
        (quantile(0.99, N.STREAM_APPLY_LATENCY, "group"), "p99 {{group}}"),
    ], unit="s", w=8, description="Event produced to the log -> its session features written to the online store.")
    d.panel("Event -> searchable in the index (p50 / p99)", [
        (quantile(0.5, N.TRAINER_EVENT_TO_SEARCHABLE, "job"), "p50"),
        (quantile(0.99, N.TRAINER_EVENT_TO_SEARCHABLE, "job"), "p99"),
    ], unit="s", w=8, description="Event produced -> the model version trained on it is live behind the Milvus alias.")
    d.panel("Model -> index (publish time p50 / p99)", [
        (quantile(0.5, N.TRAINER_PUBLISH_SECONDS, "job"), "p50"),
        (quantile(0.99, N.TRAINER_PUBLISH_SECONDS, "job"), "p99"),
    ], unit="s", w=8, description="Registry version written -> item vectors upserted, indexed, alias switched.")
    d.panel("Consumer lag (records)", [
        (f"max by (topic, group) ({N.STREAM_CONSUMER_LAG})", "features {{group}}"),
        (f"max({N.TRAINER_LAG})", "trainer"),
    ], w=12)
    d.panel("Published model version", [(f"max({N.TRAINER_VERSION})", "version")], kind="stat", w=12)
    d.row("Trainer")
    d.panel("Trainer throughput", [
        (f"sum(rate({N.TRAINER_RECORDS}[{W}]))", "records/s"),
        (f"sum(rate({N.TRAINER_SAMPLES}[{W}]))", "new samples trained/s"),
    ], unit="ops")
    d.panel("Prequential Recall@K (test-then-train)", [
        (f'max by (k, model) ({N.TRAINER_PREQ_RECALL}{{scope="window"}})', "R@{{k}} {{model}} (window)"),
        (f'max by (k, model) ({N.TRAINER_PREQ_RECALL}{{scope="cumulative"}})', "R@{{k}} {{model}} (cumulative)"),
    ], unit="percentunit",
        description="Each new positive is scored by the current model before training on it; `frozen` is the "
                    "start model scored on the same events when compare_frozen is on.")
    d.row("Stream and dead letters")
    d.panel("Events produced / applied per second", [
        (f"sum by (topic) (rate({N.STREAM_PRODUCED}[{W}]))", "produced {{topic}}"),
        (f"sum by (group) (rate({N.STREAM_APPLIED}[{W}]))", "applied {{group}}"),
    ], unit="ops")
    d.panel("Dead letters / s by reason", [
        (f"sum by (stage, reason) (rate({N.DEAD_LETTERS}[{W}]))", "{{stage}} {{reason}}")], unit="ops")
    return d


DASHBOARDS = (ab_dashboard, serving_dashboard, pipeline_dashboard)


def render_all() -> dict[str, str]:
    """File name -> JSON text (stable: sorted keys, 2-space indent, trailing newline)."""
    out = {}
    for build in DASHBOARDS:
        d = build()
        out[f"{d.uid}.json"] = json.dumps(d.to_json(), indent=2, sort_keys=True) + "\n"
    return out


def write(out_dir: Path | None = None, check: bool = False) -> list[str]:
    """Write (or with ``check`` only compare) the dashboards into ``out_dir`` (default: deploy/grafana/dashboards
    and the chart's copy); returns the paths that differed. Files no generator makes count as stale too."""
    rendered = render_all()
    stale = []
    for d in [out_dir] if out_dir else [OUT_DIR, CHART_COPY_DIR]:
        d.mkdir(parents=True, exist_ok=True)
        for extra in sorted(set(p.name for p in d.glob("*.json")) - set(rendered)):
            stale.append(str(d / extra))
            if not check:
                (d / extra).unlink()
        for name, text in rendered.items():
            path = d / name
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
                if not check:
                    path.write_text(text)
    for p in stale:
        log.info("%s %s", "stale" if check else "wrote", p)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.dashboards", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="one directory instead of the repo's two")
    ap.add_argument("--check", action="store_true", help="fail if the committed JSON is not what is generated")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stale = write(args.out, args.check)
    if args.check and stale:
        print(f"stale dashboards (run python -m deploy.dashboards): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
