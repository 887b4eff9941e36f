"""Helm chart: rendered offline with the real helm binary (make deploy-tools), manifests validated against the
Kubernetes schemas (kubernetes-validate, strict), custom resources checked structurally, and the rendered
config.yaml validated by the pydantic section classes the processes use."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml

from deploy import alerts, chart

VALUES = chart.CHART_DIR / "values.yaml"
# Top-level config key -> the Section class that reads it (docs/ARCHITECTURE.md "Config").
SECTION_CLASSES = {
    "stream": "streaming.settings:StreamSettings",
    "features": "feature_store.settings:FeatureSettings",
    "online_trainer": "trainer.online.settings:OnlineTrainerSettings",
    "registry": "t2diff.registry:RegistrySettings",
    "index": "t2diff.index:IndexSettings",
    "serving": "serving.settings:ServingSettings",
}
ALL_ON = ["serving.kuberay.enabled=true", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
          "trainer.gpu.enabled=true", "kafka.enabled=true", "redis.enabled=true", "milvus.enabled=true"]


def _by_kind(docs):
    out: dict[str, dict[str, dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


def _pod_specs(docs):
    for d in docs:
        if d["kind"] == "Deployment":
            yield d["metadata"]["name"], d["spec"]["template"]
        elif d["kind"] == "RayService":
            rc = d["spec"]["rayClusterConfig"]
            yield d["metadata"]["name"] + "/head", rc["headGroupSpec"]["template"]
            for g in rc["workerGroupSpecs"]:
                yield d["metadata"]["name"] + "/" + g["groupName"], g["template"]


def _section_classes():
    found, missing = {}, []
    for key, path in SECTION_CLASSES.items():
        mod, _, cls = path.partition(":")
        try:
            found[key] = getattr(importlib.import_module(mod), cls)
        except (ImportError, AttributeError):
            missing.append(path)
    return found, missing


def _validate_config(cfg: dict, tmp_path: Path) -> dict:
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump(cfg))
    found, missing = _section_classes()
    assert not missing, f"section classes named in SECTION_CLASSES are not in the code: {missing}"
    # A section no process reads would swallow misspelled keys silently: every rendered section has a reader.
    assert set(cfg) <= set(found), f"rendered sections without a settings class: {set(cfg) - set(found)}"
    return {key: cls.load(f, key=key) for key, cls in found.items()}


@pytest.fixture(scope="module")
def default_docs(helm):
    return chart.render(helm=helm)


@pytest.fixture(scope="module")
def all_on_docs(helm):
    return chart.render(set_args=ALL_ON + ["secrets.existingSecret=t2diff-creds"], helm=helm)


def test_lint_strict(helm):
    chart.lint(helm)
    chart.lint(helm, set_args=ALL_ON + ["metrics.grafanaDashboards.enabled=true"])


def test_default_render_is_valid(default_docs):
    assert chart.validate(default_docs) == []
    k = _by_kind(default_docs)
    assert set(k["Deployment"]) == {"rec-t2diff-consumer", "rec-t2diff-trainer", "rec-t2diff-serving"}
    assert "RayService" not in k and "ServiceMonitor" not in k and "PrometheusRule" not in k
    assert set(k["PersistentVolumeClaim"]) == {"rec-t2diff-runs"}
    for single in ("rec-t2diff-trainer", "rec-t2diff-consumer"):  # single writers, never two at once
        dep = k["Deployment"][single]
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    for dep in k["Deployment"].values():  # slow starts (data, Feast repo, Ray) must not trip the liveness probe
        c = dep["spec"]["template"]["spec"]["containers"][0]
        sp = c["startupProbe"]
        assert sp["periodSeconds"] * sp["failureThreshold"] == 600 and "livenessProbe" in c
    trainer = k["Deployment"]["rec-t2diff-trainer"]
    assert "nvidia.com/gpu" not in str(trainer["spec"]["template"]["spec"]["containers"][0]["resources"])


def test_everything_on_is_valid(all_on_docs):
    assert chart.validate(all_on_docs) == []
    k = _by_kind(all_on_docs)
    assert "rec-t2diff-serving" not in k["Deployment"]  # KubeRay replaces the plain Deployment
    rs = k["RayService"]["rec-t2diff-serving"]
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["config"] == "/etc/t2diff/config.yaml"
    module, _, func = app["import_path"].partition(":")
    src = Path(importlib.util.find_spec(module).origin).read_text()
    assert func in {n.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef)}, app["import_path"]
    gpu = k["Deployment"]["rec-t2diff-trainer"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "CUDA_VISIBLE_DEVICES" not in {e["name"] for e in gpu["env"]}
    # The PrometheusRule ships exactly the generated alert rules.
    assert k["PrometheusRule"]["rec-t2diff"]["spec"] == alerts.rules()


def test_grafana_dashboard_configmaps(helm):
    import json

    from deploy import dashboards

    docs = chart.render(set_args=["metrics.grafanaDashboards.enabled=true"], helm=helm)
    assert chart.validate(docs) == []
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {name: json.loads(text) for cm in cms for name, text in cm["data"].items()}
    assert shipped == {n: json.loads(t) for n, t in dashboards.render_all().items()}


def test_kuberay_auto_follows_the_cluster(helm):
    def kinds(**kw):
        return {(d["kind"], d["metadata"]["name"]) for d in chart.render(helm=helm, **kw)}

    assert ("Deployment", "rec-t2diff-serving") in kinds()  # default auto, no KubeRay CRD
    with_crd = kinds(api_versions=["ray.io/v1/RayService"])
    assert ("RayService", "rec-t2diff-serving") in with_crd and ("Deployment", "rec-t2diff-serving") not in with_crd
    forced_off = kinds(api_versions=["ray.io/v1/RayService"], set_args=["serving.kuberay.enabled=false"])
    assert ("Deployment", "rec-t2diff-serving") in forced_off


def test_invalid_manifest_is_caught(helm):
    # resources pass through unchecked by the values schema; the Kubernetes schema catches the bad quantity.
    docs = chart.render({"consumer": {"resources": {"requests": {"cpu": ["1"]}}}}, helm=helm)
    errs = chart.validate(docs)
    assert any("rec-t2diff-consumer" in e and "resources" in e for e in errs), errs
    docs = chart.render(set_args=["serving.kuberay.enabled=true", "serving.kuberay.workers.replicas=9"], helm=helm)
    assert any("minReplicas <= replicas <= maxReplicas" in e for e in chart.validate(docs))


def test_selectors_match_pods(all_on_docs, default_docs):
    for docs in (default_docs, all_on_docs):
        for name, tpl in _pod_specs(docs):
            assert tpl["spec"]["enableServiceLinks"] is False, name
        pods = {name: t["metadata"]["labels"] for name, t in _pod_specs(docs)}
        for d in docs:
            if d["kind"] == "Deployment":
                sel = d["spec"]["selector"]["matchLabels"]
                assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            if d["kind"] == "Service":
                sel = d["spec"]["selector"]
                assert any(sel.items() <= lb.items() for lb in pods.values()), d["metadata"]["name"]


def test_metrics_services_match_scraping(all_on_docs):
    k = _by_kind(all_on_docs)
    mon = k["ServiceMonitor"]["rec-t2diff"]["spec"]
    selected = [s for s in k["Service"].values()
                if mon["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    comps = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected}
    assert comps == {"consumer", "trainer", "serving"}
    port_name = mon["endpoints"][0]["port"]
    pods = dict(_pod_specs(all_on_docs))
    for s in selected:
        port = next(p for p in s["spec"]["ports"] if p["name"] == port_name)
        # targetPort names a container port on every pod the Service selects
        for name, tpl in pods.items():
            if s["spec"]["selector"].items() <= tpl["metadata"]["labels"].items():
                names = {p.get("name") for c in tpl["spec"]["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, (s["metadata"]["name"], name)
    # prometheus.yml (local job) uses the chart's default ports
    local = yaml.safe_load((alerts.DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ports = {sc["labels"]["component"]: int(sc["targets"][0].rsplit(":", 1)[1])
             for sc in local["scrape_configs"][0]["static_configs"]}
    v = yaml.safe_load(VALUES.read_text())
    assert ports == {"serving": v["serving"]["httpPort"], "consumer": v["consumer"]["metricsPort"],
                     "trainer": v["trainer"]["metricsPort"]}


def test_secrets_only_by_reference(helm, default_docs):
    assert "secretKeyRef" not in yaml.safe_dump_all(default_docs)
    docs = chart.render({"secrets": {"existingSecret": "creds", "env": [
        {"name": "T2DIFF_STREAM__KAFKA__SASL_PASSWORD", "key": "kafka-password"}]}}, helm=helm)
    assert chart.validate(docs) == []
    for name, tpl in _pod_specs(docs):
        env = {e["name"]: e for c in tpl["spec"]["containers"] for e in c["env"]}
        ref = env["T2DIFF_STREAM__KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "creds", "key": "kafka-password"}, name
    assert not any(d["kind"] == "Secret" for d in docs)


def test_persistence_modes(helm):
    k = _by_kind(chart.render(set_args=["persistence.enabled=false"], helm=helm))
    assert "PersistentVolumeClaim" not in k
    vols = k["Deployment"]["rec-t2diff-trainer"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "runs", "emptyDir": {}} in vols
    k = _by_kind(chart.render(set_args=["persistence.existingClaim=shared"], helm=helm))
    assert "PersistentVolumeClaim" not in k
    vols = k["Deployment"]["rec-t2diff-serving"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "shared"}} in vols
    docs = chart.render(set_args=["datasets.existingClaim=shared-data"], helm=helm)
    assert chart.validate(docs) == []
    for name, tpl in _pod_specs(docs):
        c = tpl["spec"]["containers"][0]
        assert {"name": "datasets", "mountPath": "/data", "readOnly": True} in c["volumeMounts"], name
        assert {"name": "T2DIFF_DATA_DIR", "value": "/data"} in c["env"], name


def test_default_config_validates(default_docs, tmp_path):
    cfg = chart.config_of(default_docs)
    assert set(SECTION_CLASSES) <= set(cfg)
    s = _validate_config(cfg, tmp_path)
    if "serving" in s:
        assert s["serving"].host == "0.0.0.0" and str(s["serving"].config_path) == "/etc/t2diff/config.yaml"
    if "stream" in s:
        assert s["stream"].backend == "local"  # no Kafka configured: embedded log
    if "index" in s:
        assert s["index"].uri == "http://rec-milvus:19530"  # bundled Milvus by default


def test_endpoints_reach_the_sections(helm, tmp_path):
    docs = chart.render({
        "milvus": {"enabled": False},
        "externalKafka": {"bootstrapServers": "k1:9092, k2:9092"},
        "externalRedis": {"host": "redis.db", "port": 6380},
        "externalMilvus": {"uri": "http://milvus.db:19530"},
        "config": {"stream": {"partitions": 16, "kafka": {"client_id": "t2diff-prod"}},
                   "online_trainer": {"publish_every_s": 120}},
    }, helm=helm)
    assert chart.validate(docs) == []
    s = _validate_config(chart.config_of(docs), tmp_path)
    st, fs, ix, ot = s["stream"], s["features"], s["index"], s["online_trainer"]
    assert st.backend == "kafka" and st.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert st.kafka.client_id == "t2diff-prod" and st.partitions == 16
    assert fs.online_store == "redis" and fs.redis_connection_string == "redis.db:6380"
    assert ix.uri == "http://milvus.db:19530"
    assert ot.metrics_port == 9102 and ot.publish_every_s == 120
    bundled = chart.config_of(chart.render(set_args=ALL_ON, helm=helm))
    assert bundled["stream"]["kafka"]["bootstrap_servers"] == ["rec-kafka:9092"]
    assert bundled["features"]["redis_connection_string"] == "rec-redis-master:6379"
    assert bundled["index"]["uri"] == "http://rec-milvus:19530"


def test_unworkable_setups_are_refused(helm):
    with pytest.raises(chart.ChartError, match="shared Milvus server"):
        chart.render(set_args=["milvus.enabled=false"], helm=helm)
    with pytest.raises(chart.ChartError, match="not both"):
        chart.render(set_args=["externalMilvus.uri=http://m:19530"], helm=helm)  # milvus.enabled defaults to true
    with pytest.raises(chart.ChartError, match="not both"):
        chart.render(set_args=["kafka.enabled=true", "externalKafka.bootstrapServers=k:9092"], helm=helm)


def test_embedded_stores_colocate_pods(helm, default_docs, all_on_docs):
    def affinities(docs):
        return {name: tpl["spec"].get("affinity") for name, tpl in _pod_specs(docs)}

    # Embedded log + SQLite online store: every pod requires the node of the release's other pods.
    for name, aff in affinities(default_docs).items():
        term = aff["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname", name
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rec"
    # Kafka + Redis + Milvus servers: nothing to share on disk, pods spread freely.
    assert all(a is None for a in affinities(all_on_docs).values())
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}}
    docs = chart.render({"trainer": {"affinity": own}}, helm=helm)
    assert affinities(docs)["rec-t2diff-trainer"] == own
    assert chart.validate(docs) == []


def test_config_typo_fails_validation(helm, tmp_path):
    from pydantic import ValidationError

    cfg = chart.config_of(chart.render(set_args=["config.stream.bakend=kafka"], helm=helm))
    with pytest.raises(ValidationError, match="bakend"):
        _validate_config(cfg, tmp_path)


def test_values_schema_in_sync_and_enforced(helm):
    from deploy import values_schema

    assert (chart.CHART_DIR / "values.schema.json").read_text() == values_schema.render(), \
        "run `python -m deploy.values_schema`"
    for bad, msg in [("consumer.replicaCont=2", "replicaCont"), ("config.strem.backend=kafka", "strem"),
                     ("serving.replicaCount=many", "want integer"), ("serving.httpPort=0", "minimum")]:
        with pytest.raises(chart.ChartError, match=msg):
            chart.render(set_args=[bad], helm=helm)
    with pytest.raises(chart.ChartError, match="key"):
        chart.render({"secrets": {"existingSecret": "s", "env": [{"name": "X"}]}}, helm=helm)


# ---- `## @param` documentation of values.yaml ------------------------------------------------------------

def _leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def param_problems(text: str) -> list[str]:
    values = yaml.safe_load(text)
    params = re.findall(r"^## @param (\S+) \S", text, flags=re.M)
    problems = [f"duplicate @param {p}" for p in {p for p in params if params.count(p) > 1}]
    for p in params:
        node = values
        for part in p.split("."):
            if not isinstance(node, dict) or part not in node:
                problems.append(f"@param {p} names no value")
                break
            node = node[part]
    documented = set(params)
    for leaf in _leaves(values):
        parts = leaf.split(".")
        if not any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1)):
            problems.append(f"value {leaf} has no ## @param line")
    return problems


def test_every_value_has_a_param_line():
    assert param_problems(VALUES.read_text()) == []


def test_param_check_catches_gaps():
    text = "## @param a.b Doc\na:\n  b: 1\n  c: 2\n## @param d.e Doc\nd: {}\n"
    assert sorted(param_problems(text)) == ["@param d.e names no value", "value a.c has no ## @param line",
                                            "value d has no ## @param line"]


def test_container_commands_exist_in_the_cli(default_docs):
    """Each Deployment runs `t2diff <args>`: the real CLI parser must accept exactly those args."""
    from t2diff.cli import build_parser

    parser = build_parser()
    for d in default_docs:
        if d["kind"] != "Deployment":
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["command"] == ["t2diff"]
        try:
            ns = parser.parse_args(c["args"])
        except SystemExit:
            pytest.fail(f"{d['metadata']['name']}: `t2diff {' '.join(c['args'])}` is not a command of t2diff.cli")
        assert ns.config == "/etc/t2diff/config.yaml" and callable(ns.func)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if getattr(ns, "metrics_port", None) is not None:
            assert ns.metrics_port == ports["metrics"]
