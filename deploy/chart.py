"""Render the Helm chart offline (``helm template``) and validate what comes out.

The chart declares Kafka, Redis and Milvus as dependencies from remote chart repositories, which CI cannot
reach, and ``helm template`` refuses a chart whose declared dependencies are missing from charts/. So rendering
works on a temporary copy whose charts/ holds an empty stub chart (right name and version, no templates) per
dependency: the parent chart's own templates, conditions and endpoint wiring are rendered for real; the bundled
services' own manifests are not (they are the upstream charts' business).

``python -m deploy.chart [--set k=v ...]`` prints the rendered manifests, validated.
Tools: helm from ``make deploy-tools`` (.venv/bin/helm), kubernetes-validate (PyPI) with its bundled schemas.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

log = logging.getLogger(__name__)

CHART_DIR = Path(__file__).resolve().parent / "helm" / "t2diff"
K8S_VERSION = "1.33.0"  # schema version the manifests are validated against
# Custom resources: kubernetes-validate has no schema for them, so they get structural checks instead.
CRD_KINDS = {("ray.io/v1", "RayService"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")}


class ChartError(RuntimeError):
    pass


def find_helm() -> str | None:
    """helm from the venv (make deploy-tools) first, then PATH."""
    venv_helm = Path(sys.executable).parent / "helm"
    if venv_helm.exists() and os.access(venv_helm, os.X_OK):
        return str(venv_helm)
    return shutil.which("helm")


def _stub_dependencies(chart: Path) -> None:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    for dep in meta.get("dependencies") or []:
        # "32.x.x" -> "32.0.0": any version inside the declared range.
        version = ".".join("0" if p in ("x", "X", "*") else p for p in str(dep["version"]).split("."))
        stub = chart / "charts" / dep["name"]
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "Chart.yaml").write_text(yaml.safe_dump({
            "apiVersion": "v2", "name": dep["name"], "version": version,
            "description": "offline stub of the upstream chart (deploy/chart.py)"}))


@contextlib.contextmanager
def _staged_chart(helm: str | None) -> Iterator[tuple[str, Path]]:
    """(helm binary, a temp copy of the chart with its dependencies stubbed): helm needs the subcharts present,
    and their repositories cannot be reached from here, so both render and lint work on such a copy."""
    helm = helm or find_helm()
    if helm is None:
        raise ChartError("helm not found: run `make deploy-tools` (installs it into .venv/bin)")
    with tempfile.TemporaryDirectory(prefix="t2diff-chart-") as tmp:
        chart = Path(tmp) / "t2diff"
        shutil.copytree(CHART_DIR, chart, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
        _stub_dependencies(chart)
        yield helm, chart


def render(values: dict[str, Any] | None = None, set_args: list[str] | None = None, release: str = "rec",
           namespace: str = "recsys", helm: str | None = None,
           api_versions: list[str] | None = None) -> list[dict[str, Any]]:
    """``helm template`` the chart with extra ``values`` (a values file) and ``--set`` strings;
    ``api_versions`` pretends the cluster serves those (e.g. ``ray.io/v1/RayService``)."""
    with _staged_chart(helm) as (helm, chart):
        cmd = [helm, "template", release, str(chart), "--namespace", namespace]
        if values:
            vf = chart.parent / "values.yaml"
            vf.write_text(yaml.safe_dump(values))
            cmd += ["--values", str(vf)]
        for s in set_args or []:
            cmd += ["--set", s]
        for api in api_versions or []:
            cmd += ["--api-versions", api]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ChartError(f"helm template failed: {proc.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    log.debug("rendered %d manifests", len(docs))
    return docs


def lint(helm: str | None = None, strict: bool = True, set_args: list[str] | None = None) -> str:
    with _staged_chart(helm) as (helm, chart):
        cmd = [helm, "lint", str(chart)] + (["--strict"] if strict else [])
        for a in set_args or []:
            cmd += ["--set", a]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ChartError(f"helm lint failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _check_crd(doc: dict[str, Any]) -> list[str]:
    kind, spec, errs = doc["kind"], doc.get("spec") or {}, []
    if kind == "RayService":
        if not isinstance(spec.get("serveConfigV2"), str):
            errs.append("RayService.spec.serveConfigV2 must be a YAML string")
        else:
            apps = (yaml.safe_load(spec["serveConfigV2"]) or {}).get("applications") or []
            if not apps or not all("import_path" in a for a in apps):
                errs.append("serveConfigV2 needs applications with import_path")
        cluster = spec.get("rayClusterConfig") or {}
        head = (cluster.get("headGroupSpec") or {}).get("template", {}).get("spec", {})
        if not head.get("containers"):
            errs.append("RayService head group has no containers")
        for g in cluster.get("workerGroupSpecs") or []:
            if not (g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 0)):
                errs.append(f"worker group {g.get('groupName')}: need minReplicas <= replicas <= maxReplicas")
        # The pod templates are ordinary PodSpecs: validate them with the core schema.
        pods = [head] + [g.get("template", {}).get("spec", {}) for g in cluster.get("workerGroupSpecs") or []]
        for pod in pods:
            errs += _validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod})
    elif kind == "ServiceMonitor":
        if not spec.get("endpoints") or not (spec.get("selector") or {}).get("matchLabels"):
            errs.append("ServiceMonitor needs endpoints and selector.matchLabels")
    elif kind == "PrometheusRule":
        groups = spec.get("groups") or []
        if not groups or not all(g.get("rules") for g in groups):
            errs.append("PrometheusRule needs groups with rules")
    return errs


@functools.lru_cache(maxsize=None)
def _schema_file(path: str) -> Any:
    from kubernetes_validate.utils import schema_contents

    return schema_contents(path, K8S_VERSION)


@functools.lru_cache(maxsize=None)
def _validator(api_version: str, kind: str) -> Any:
    """A strict validator for one kind, built once. Same schema files and reference set-up as
    kubernetes_validate.validate, which re-reads the multi-megabyte definitions file on every call."""
    import jsonschema
    from kubernetes_validate.utils import all_versions, major_minor
    from referencing import Registry, Resource

    version = [v for v in all_versions() if major_minor(v) <= major_minor(K8S_VERSION)][-1]
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    base = f"kubernetes-json-schema/v{version}-local-strict"
    schema = _schema_file(f"{base}/{kind.lower()}-{group}.json")
    registry = Resource.from_contents(_schema_file(f"{base}/_definitions.json")) @ (
        Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _validate_core(doc: dict[str, Any]) -> list[str]:
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        validator = _validator(doc["apiVersion"], doc["kind"])
    except FileNotFoundError:
        return [f"{name}: no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {K8S_VERSION}"]
    errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    return [f"{name}: {'/'.join(str(p) for p in e.path)}: {e.message}" for e in errs]


def validate(docs: list[dict[str, Any]]) -> list[str]:
    """Schema-validate core kinds (strict: unknown fields fail) and structurally check the custom resources."""
    errs: list[str] = []
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            errs += _check_crd(doc)
        else:
            errs += _validate_core(doc)
    return errs


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The config.yaml that the ConfigMap carries, parsed."""
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    if len(cms) != 1:
        raise ChartError(f"expected one *-config ConfigMap, found {len(cms)}")
    return yaml.safe_load(cms[0]["data"]["config.yaml"]) or {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.chart", description="render + validate the Helm chart")
    ap.add_argument("--set", action="append", default=[], help="helm --set key=value (repeatable)")
    ap.add_argument("-f", "--values", type=Path, help="extra values file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    values = yaml.safe_load(args.values.read_text()) if args.values else None
    docs = render(values, args.set)
    errs = validate(docs)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    for e in errs:
        log.error("%s", e)
    log.info("%d manifests, %d problems", len(docs), len(errs))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
