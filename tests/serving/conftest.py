import os

import pytest

from t2diff.net import free_port


@pytest.fixture(scope="module")
def tiny():
    """A 60-item synthetic catalogue, a small T2Diff config (T = 8) and two models of it (versions 1 and 2)."""
    import torch

    from serving.world import synthetic_catalog
    from t2diff.model import ModelConfig, build_model

    cat = synthetic_catalog(60, seed=1)
    cfg = ModelConfig(num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags, diffusion_steps=8)
    torch.manual_seed(0)
    return cat, cfg, build_model(cfg, torch.as_tensor(cat.tags)), build_model(cfg, torch.as_tensor(cat.tags))


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for the whole serving test session (2 shared cores: no dashboard, 2 CPUs)."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    started = not ray.is_initialized()  # reuse a Ray another test module started; shut down only our own
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    if started:
        ray.shutdown()
