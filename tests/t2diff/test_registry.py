"""Model registry: immutable versions, atomic LATEST pointer, rollback, racing publishers, pruning."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from t2diff.model import ModelConfig, build_model
from t2diff.registry import ModelRegistry, RegistrySettings


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="sasrec", num_items=20, num_tags=5, max_tags=2, seq_len=8, session_len=3)
    tags = torch.randint(0, 6, (21, 2))
    return build_model(cfg, tags)


def test_publish_load_and_rollback(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.latest() is None and reg.versions() == []
    with pytest.raises(KeyError):
        reg.load()
    m1, m2 = _model(1), _model(2)
    v1 = reg.publish(m1, extra={"catalog": {"a": 1}}, metrics={"recall@20": 0.1}, offsets={0: 5, 1: 7},
                     max_event_ts_ms=123)
    v2 = reg.publish(m2, extra={"catalog": {"a": 2}}, metrics={"recall@20": 0.2}, offsets={0: 9, 1: 9})
    assert (v1, v2) == (1, 2) and reg.latest() == 2 and reg.versions() == [1, 2]
    meta = reg.meta(1)
    assert meta["offsets"] == {"0": 5, "1": 7} and meta["max_event_ts_ms"] == 123
    assert meta["metrics"]["recall@20"] == 0.1 and meta["model_config"]["arch"] == "sasrec"
    model, extra, meta2 = reg.load()
    assert extra["catalog"] == {"a": 2} and meta2["version"] == 2
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    reg.set_latest(1)  # rollback
    assert reg.latest() == 1
    assert reg.load()[1]["catalog"] == {"a": 1}
    with pytest.raises(KeyError):
        reg.set_latest(99)
    assert not [p for p in (tmp_path / "reg").iterdir() if p.name.startswith(".tmp")]


def test_racing_publishers_get_distinct_versions(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    m = _model()
    got: list[int] = []
    threads = [threading.Thread(target=lambda i=i: got.append(reg.publish(m, metrics={"i": i}))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4]
    # each version dir holds the meta its publisher wrote (no overwrites)
    assert sorted(reg.meta(v)["metrics"]["i"] for v in got) == [0, 1, 2, 3]
    assert all(reg.meta(v)["version"] == v for v in got)


def test_prune_keeps_latest(tmp_path):
    reg = ModelRegistry(tmp_path / "reg", RegistrySettings(keep=2))
    m = _model()
    for _ in range(2):
        reg.publish(m)
    reg.set_latest(1)  # rolled back: 1 must survive pruning
    reg.publish(m, set_latest=False)
    reg.publish(m, set_latest=False)
    assert reg.versions() == [1, 3, 4]
    assert json.loads((tmp_path / "reg" / "v000001" / "meta.json").read_text())["version"] == 1
