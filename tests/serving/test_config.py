"""The shipped serve config and the settings defaults stay in step with the app builder."""
from pathlib import Path

import yaml

import serving
from serving.app import load_settings
from serving.settings import ServingSettings

SERVE_CONFIG = Path(serving.__file__).parent / "serve_config.yaml"


def test_serve_config_names_the_builder_and_the_deployments():
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(SERVE_CONFIG.read_text())
    ServeDeploySchema.model_validate(doc)  # Ray's own schema for serve deploy
    app = doc["applications"][0]
    mod, fn = app["import_path"].split(":")
    assert mod == "serving.app" and hasattr(serving.app, fn)
    s = ServingSettings()
    expected = {"Ingress"} | {f"{p}_{n}" for n in s.model_sources() for p in ("UserEncoder", "Retriever")}
    assert {d["name"] for d in app["deployments"]} == expected
    enc = next(d for d in app["deployments"] if d["name"] == "UserEncoder_t2diff")
    assert set(enc["user_config"]) == {"version", "poll_s", "max_batch_size", "wait_ms", "num_steps"}


def test_load_settings_from_one_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("serving:\n  port: 9001\n  k_max: 50\nregistry:\n  root: /x\n")
    s = load_settings(p)
    assert s.port == 9001 and s.k_max == 50 and s.config_path == p.resolve()


def test_local_topology_deploys_the_ingress_alone_with_the_encoder_options():
    from serving.app import build_app

    s = ServingSettings(topology="local", num_gpus_encoder=0.5, encoder_steps=10)
    ingress = build_app(s)._bound_deployment
    assert ingress.name == "Ingress"
    assert ingress.init_args[1:4] == ({}, {}, {})  # no encoder, retriever or recaller handles
    assert ingress.init_args[4] == sorted(s.model_sources())  # each model source runs in the replica
    assert ingress.ray_actor_options["num_gpus"] == 0.5
    cfg = ingress.user_config["recallers"]
    assert set(cfg) == set(s.model_sources())
    assert all(c["num_steps"] == 10 and set(c) == {"version", "poll_s", "max_batch_size", "wait_ms", "num_steps"}
               for c in cfg.values())
