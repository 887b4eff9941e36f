"""Prometheus alert rules as code. ``python -m deploy.alerts`` writes deploy/prometheus/alerts.yml and the copy
the Helm chart ships in a PrometheusRule (deploy/helm/t2diff/files/alerts.yml: Helm can only read files inside
the chart); ``--check`` fails when either differs from the generator. promtool checks and unit-tests the file
in tests/deploy (deploy/prometheus/alerts_test.yml).

Thresholds are defaults for the embedded CPU set-up; each alert says what to look at first.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from deploy import names as N

log = logging.getLogger(__name__)

DEPLOY = Path(__file__).resolve().parent
OUTPUTS = (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "helm" / "t2diff" / "files" / "alerts.yml")

# p99 per deployment. The serving goal is p99 <= 15 ms at 200 rps (benchmarks/serve.md); the page fires far
# above it, on real degradation rather than noise. Tune per cluster.
P99_LATENCY_S = 0.25
FEATURE_LAG_S = 30.0  # event -> session features p99
MODEL_LAG_S = 600.0  # event -> searchable in a published model version (p90)
INDEX_LAG_S = 120.0  # one publish: registry + Milvus upsert/index/alias (p90)
CONSUMER_LAG_RECORDS = 10_000
DEAD_LETTER_RATIO = 0.01  # of the records a stage (feature consumer, trainer) handled


def _rule(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity, "team": "recsys"},
            "annotations": {"summary": summary, "description": description}}


def _dead_letter_ratio() -> str:
    """Dead letters / records handled, per stage, each against its own denominator: the feature consumer
    handles applied + dead-lettered records; the trainer counts every record it consumed."""
    def dl(stage: str) -> str:
        return f'sum(rate({N.DEAD_LETTERS}{{stage="{stage}"}}[5m]))'
    features = f"{dl('features')} / (sum(rate({N.STREAM_APPLIED}[5m])) + {dl('features')})"
    trainer = f"{dl('trainer')} / sum(rate({N.TRAINER_RECORDS}[5m]))"
    # label_replace tags each ratio with its stage, so `or` keeps both and the alert says which one.
    return (f'label_replace({features}, "stage", "features", "", "")'
            f' or label_replace({trainer}, "stage", "trainer", "", "")')


def rules() -> dict[str, Any]:
    lat = f"sum by (le, deployment) (rate({N.hist(N.SERVE_LATENCY)}[5m]))"
    apply = f"sum by (le) (rate({N.hist(N.STREAM_APPLY_LATENCY)}[5m]))"
    return {"groups": [
        {"name": "t2diff-serving", "rules": [
            _rule("T2DiffRecallLatencyP99High", f"histogram_quantile(0.99, {lat}) > {P99_LATENCY_S}", "10m",
                  "page", "p99 latency of {{ $labels.deployment }} above %gs" % P99_LATENCY_S,
                  "p99 is {{ $value | humanizeDuration }} over 5m. Check encoder batching, Milvus search latency "
                  "and replica CPU; the serving dashboard splits it by stage."),
            _rule("T2DiffServingErrors", f"sum by (deployment, kind) (rate({N.SERVE_ERRORS}[5m])) > 0.1", "10m",
                  "ticket", "{{ $labels.deployment }} errors of kind {{ $labels.kind }}",
                  "{{ $value | humanize }} errors/s; requests fall back to popularity meanwhile."),
        ]},
        {"name": "t2diff-freshness", "rules": [
            _rule("T2DiffFeatureFreshnessLagHigh", f"histogram_quantile(0.99, {apply}) > {FEATURE_LAG_S:g}", "10m",
                  "page", "session features are more than %gs behind events" % FEATURE_LAG_S,
                  "p99 event -> feature lag is {{ $value | humanizeDuration }}. Check the consumer's throughput "
                  "and the online store (Redis) latency."),
            _rule("T2DiffConsumerLagHigh", f"max by (topic, group) ({N.STREAM_CONSUMER_LAG}) > {CONSUMER_LAG_RECORDS}",
                  "15m", "ticket", "consumer group {{ $labels.group }} is {{ $value }} records behind",
                  "The consumer runs as one replica (its session state is one SQLite file): check its throughput, "
                  "the online store latency, or a stuck partition."),
            _rule("T2DiffModelFreshnessLagHigh",
                  f"histogram_quantile(0.9, sum by (le) (rate({N.hist(N.TRAINER_EVENT_TO_SEARCHABLE)}[15m])))"
                  f" > {MODEL_LAG_S:g}", "15m", "ticket",
                  "events take more than %gs to reach a searchable model version" % MODEL_LAG_S,
                  "p90 event -> searchable is {{ $value | humanizeDuration }}. Check trainer throughput, the "
                  "publish interval and Milvus publish time."),
            _rule("T2DiffIndexPublishSlow",
                  f"histogram_quantile(0.9, sum by (le) (rate({N.hist(N.TRAINER_PUBLISH_SECONDS)}[30m])))"
                  f" > {INDEX_LAG_S:g}", "30m", "ticket",
                  "publishing a model version to the index takes more than %gs" % INDEX_LAG_S,
                  "p90 publish time is {{ $value | humanizeDuration }}. Check Milvus load/index time."),
            _rule("T2DiffTrainerStalled",
                  f"sum(rate({N.TRAINER_RECORDS}[15m])) == 0 and max({N.TRAINER_LAG}) > 0", "15m", "page",
                  "the stream trainer consumes nothing while records wait",
                  "{{ $value }} records/s with a non-zero lag: the trainer is stuck or crash-looping."),
        ]},
        {"name": "t2diff-dead-letters", "rules": [
            _rule("T2DiffDeadLetterRateHigh", f"({_dead_letter_ratio()}) > {DEAD_LETTER_RATIO:g}", "10m", "page",
                  "more than %g%% of records go to dead letters at stage {{ $labels.stage }}" % (DEAD_LETTER_RATIO * 100),
                  "{{ $value | humanizePercentage }} of the records the {{ $labels.stage }} stage handled were "
                  "dead-lettered; the reasons are on the pipeline dashboard (dead letters by reason)."),
        ]},
    ]}


def render() -> str:
    head = "# Generated by `python -m deploy.alerts` (deploy/alerts.py): edit the generator, not this file.\n"
    return head + yaml.safe_dump(rules(), sort_keys=False, width=120)


def write(check: bool = False) -> list[Path]:
    text, stale = render(), []
    for path in OUTPUTS:
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.alerts", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed rules are not what is generated")
    args = ap.parse_args(argv)
    stale = write(args.check)
    for p in stale:
        print(f"{'stale' if args.check else 'wrote'} {p}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
