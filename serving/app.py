"""Typed app builder: ``build_app(settings)`` -> a Ray Serve Application (Ingress bound to one encoder and one
retriever per model source, to one Recaller per model source with ``topology: fused``, or alone with
``topology: local``, where each source's Recaller runs inside the ingress replica).
``serve run serving.app:app_from_config config=...`` or ``t2diff serve``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from serving.settings import ServingSettings

log = logging.getLogger(__name__)


def build_app(settings: ServingSettings) -> Any:
    from serving.deployments import (EncoderDeployment, IngressDeployment, RecallerDeployment,
                                     RetrieverDeployment)

    cfg = settings.model_dump(mode="json")
    encoders, retrievers, recallers, local = {}, {}, {}, {}
    used = {a.source for a in settings.experiment.arms}
    fused = settings.topology == "fused"
    logs = {"enable_access_log": settings.access_log}
    for name, src in settings.model_sources().items():
        if name not in used and settings.arms_file is None:
            continue  # no arm can reach it (with an arms file, any source may be switched on later)
        user_config = {"version": src.version, "poll_s": src.poll_s, "max_batch_size": settings.batch.max_batch_size,
                       "wait_ms": settings.batch.wait_ms, "num_steps": settings.encoder_steps}
        if settings.topology == "local":
            local[name] = user_config
            continue
        # The encoder's options (replicas, GPU, user_config) apply to the fused Recaller too: it holds the encoder.
        encoder_cls, kind = (RecallerDeployment, "Recaller") if fused else (EncoderDeployment, "UserEncoder")
        dep = encoder_cls.options(
            name=f"{kind}_{name}", num_replicas=settings.encoder_replicas,
            max_ongoing_requests=settings.max_ongoing_requests,
            ray_actor_options={"num_cpus": 0, "num_gpus": settings.num_gpus_encoder}, logging_config=logs,
            user_config=user_config,
        ).bind(name, cfg)
        if fused:
            recallers[name] = dep
            continue
        encoders[name] = dep
        retrievers[name] = RetrieverDeployment.options(
            name=f"Retriever_{name}", num_replicas=settings.retriever_replicas,
            max_ongoing_requests=settings.max_ongoing_requests, logging_config=logs).bind(name, cfg)
    options: dict[str, Any] = {}
    if local:  # the ingress holds the user towers: it takes the encoder's GPU and user_config
        options = {"ray_actor_options": {"num_cpus": 0, "num_gpus": settings.num_gpus_encoder},
                   "user_config": {"recallers": local}}
    return IngressDeployment.options(num_replicas=settings.ingress_replicas,
                                     max_ongoing_requests=settings.max_ongoing_requests,
                                     logging_config=logs, **options).bind(cfg, encoders, retrievers, recallers,
                                                                          sorted(local))


def load_settings(config: str | Path | None = None, **overrides: Any) -> ServingSettings:
    s = ServingSettings.load(config, key="serving", **overrides)
    if config is not None and s.config_path is None:
        s = s.model_copy(update={"config_path": Path(config).resolve()})
    return s


def app_from_config(args: dict[str, str]) -> Any:
    """Entry for ``serve run serving.app:app_from_config config=path.yaml`` and serve config YAMLs."""
    return build_app(load_settings(args.get("config")))


def start(settings: ServingSettings, blocking: bool = False, name: str = "t2diff", num_cpus: int | None = None) -> Any:
    """Start Ray (if needed) and Serve on settings.host:port, deploy, return the ingress handle."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    handle = serve.run(build_app(settings), name=name, route_prefix="/", blocking=blocking)
    log.info("serving on http://%s:%d (arms: %s)", settings.host, settings.port,
             ", ".join(f"{a.name}={a.weight:g}->{a.source}" for a in settings.experiment.arms))
    return handle
