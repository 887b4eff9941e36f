"""A self-contained serving world on disk: registry version(s), Milvus collection, a baseline checkpoint,
session features, popularity counts and the config YAML that ties them together.

Used by the serving tests (tiny synthetic catalogue), by ``t2diff bench serve`` (ML-1M's real catalogue and
user histories, or a 100k-item synthetic catalogue) and by ``t2diff serve --world`` for a local demo. When
the registry already holds a trained model it is used as is; otherwise an untrained model of the same
config stands in (latency does not depend on the weights).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger(__name__)


@dataclass
class World:
    root: Path
    config_path: Path
    registry_root: Path
    index_uri: str
    catalog: Any
    users: list[int]
    model_cfg: Any

    def registry(self) -> Any:
        from t2diff.registry import ModelRegistry

        return ModelRegistry(self.registry_root)

    def index(self) -> Any:
        from t2diff.index import ItemIndex

        return ItemIndex(self.index_uri)

    def publish(self, model: Any) -> int:
        """Publish ``model`` as the next version: registry first (not live), then the index, then LATEST.
        Serving switches only when both exist, so the order is belt and braces."""
        reg = self.registry()
        v = reg.publish(model, extra={"catalog": self.catalog.to_dict()}, set_latest=False)
        import torch

        with torch.inference_mode():
            e_i = model.encode_items()[1:]  # (N, D)
        idx = self.index()
        try:
            idx.publish(v, self.catalog.raw_ids, e_i)
        finally:
            idx.close()
        reg.set_latest(v)
        return v

    def stop_index(self) -> None:
        from t2diff.index import is_remote
        from t2diff.lite_server import stop_lite_server

        if not is_remote(self.index_uri):  # a Milvus server is not ours to stop
            stop_lite_server(self.index_uri)


def synthetic_catalog(num_items: int, num_tags: int = 20, max_tags: int = 3, seed: int = 0) -> Any:
    from t2diff.data import Catalog

    rng = np.random.default_rng(seed)
    tags = np.zeros((num_items + 1, max_tags), dtype=np.int64)
    tags[1:, 0] = rng.integers(1, num_tags + 1, num_items)
    raw = np.arange(1, num_items + 1, dtype=np.int64) * 10 + 7  # raw ids != model indices on purpose
    return Catalog(f"synthetic-{num_items}", raw, tags, num_tags)


def build_world(root: Path, num_items: int = 200, num_users: int = 300, dataset: str | None = None,
                arch: str = "t2diff", baseline_arch: str = "sasrec", seed: int = 0,
                serving: dict[str, Any] | None = None, model_path: Path | None = None,
                baseline_path: Path | None = None, treatment_index: str = "milvus",
                index_uri: str | None = None) -> World:
    """Write everything under ``root``. ``dataset`` ("ml-1m"): the real catalogue and each user's last 50
    items as session features; otherwise a synthetic catalogue of ``num_items`` with random histories.
    ``model_path`` / ``baseline_path``: trained checkpoints to serve (their catalogue must be the data
    set's); without them untrained models of the default config stand in. ``index_uri``: a Milvus server
    (``http://host:port``) instead of the embedded Milvus Lite file under ``root``."""
    import torch

    from t2diff.model import ModelConfig, build_model, save_checkpoint

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    feats_path = root / "features.jsonl"
    with open(feats_path, "w") as f:
        if dataset:
            from t2diff.data import load_dataset

            inter, catalog = load_dataset(dataset)
            order = np.lexsort((inter.ts_ms, inter.user))
            u, it, ts = inter.user[order], inter.item[order], inter.ts_ms[order]
            bounds = np.flatnonzero(np.diff(u)) + 1
            users = []
            for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(u)]):
                s2 = max(s, e - 50)
                f.write(json.dumps({"user_id": int(u[s]), "items": it[s2:e].tolist(), "ts_ms": ts[s2:e].tolist()})
                        + "\n")
                users.append(int(u[s]))
            ids, counts = np.unique(inter.item, return_counts=True)
        else:
            catalog = synthetic_catalog(num_items, seed=seed)
            users = list(range(1, num_users + 1))
            # skewed item popularity, so popularity and the model disagree in a visible way
            p = 1.0 / np.arange(1, num_items + 1) ** 0.8
            p /= p.sum()
            for uid in users:
                n = int(rng.integers(3, 50))
                items = catalog.raw_ids[rng.choice(num_items, n, p=p)]
                ts = np.sort(rng.integers(1_650_000_000_000, 1_650_100_000_000, n))
                f.write(json.dumps({"user_id": uid, "items": items.tolist(), "ts_ms": ts.tolist()}) + "\n")
            ids = catalog.raw_ids
            counts = np.round(p * 1e6).astype(np.int64)
    pop = {str(int(i)): int(c) for i, c in zip(ids, counts)}
    (root / "popularity.json").write_text(json.dumps(pop))

    trained = None
    if model_path is not None:
        from serving.encoder import catalog_of
        from t2diff.model import load_checkpoint

        trained, extra = load_checkpoint(model_path)
        catalog = catalog_of(extra)
    cfg = trained.cfg if trained is not None else ModelConfig(
        arch=arch, num_items=catalog.num_items, num_tags=catalog.num_tags, max_tags=catalog.max_tags)
    registry_root = root / "registry"
    index_uri = index_uri or str(root / "milvus" / "items.db")
    base_cfg = ModelConfig(arch=baseline_arch, num_items=catalog.num_items, num_tags=catalog.num_tags,
                           max_tags=catalog.max_tags)
    if baseline_path is not None:
        import shutil

        shutil.copyfile(baseline_path, root / "baseline.pt")
    else:
        save_checkpoint(root / "baseline.pt", build_model(base_cfg, torch.as_tensor(catalog.tags)),
                        catalog=catalog.to_dict())
    sv: dict[str, Any] = {
        "port": 18000,
        "feedback_log": str(root / "feedback.jsonl"),
        "features": {"kind": "file", "path": str(feats_path)},
        "experiment": {"salt": "world", "arms": [
            {"name": "treatment", "weight": 0.5, "source": "t2diff"},
            {"name": "control", "weight": 0.5, "source": "baseline"}]},
        "sources": {
            "t2diff": {"kind": "model", "registry": True, "index": treatment_index, "poll_s": 1.0},
            "baseline": {"kind": "model", "registry": False, "checkpoint": str(root / "baseline.pt"),
                         "index": "exact"},
            "popularity": {"kind": "popularity", "counts_path": str(root / "popularity.json")},
        },
    }
    sv.update(serving or {})
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "registry": {"root": str(registry_root)},
        "index": {"uri": index_uri},
        "serving": {**sv, "config_path": str(config_path)},
    }, sort_keys=False))
    world = World(root, config_path, registry_root, index_uri, catalog, users, cfg)
    if world.registry().latest() is None:
        world.publish(trained if trained is not None else build_model(cfg, torch.as_tensor(catalog.tags)))
    log.info("serving world at %s: %d items, %d users", root, catalog.num_items, len(users))
    return world


def publish_next(root: Path, seed: int = 123) -> int:
    """Publish a new version of the world's latest model (weights jittered by ``seed``), as the trainer would
    from its own process: registry (not live), index, then LATEST."""
    import torch

    from serving.encoder import catalog_of
    from t2diff.index import ItemIndex
    from t2diff.registry import ModelRegistry

    doc = yaml.safe_load((Path(root) / "config.yaml").read_text())
    reg = ModelRegistry(doc["registry"]["root"])
    model, extra, _ = reg.load()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    cat = catalog_of(extra)
    v = reg.publish(model, extra={"catalog": cat.to_dict()}, set_latest=False)
    idx = ItemIndex(doc["index"]["uri"])
    try:
        with torch.inference_mode():
            idx.publish(v, cat.raw_ids, model.encode_items()[1:])
    finally:
        idx.close()
    reg.set_latest(v)
    return v


if __name__ == "__main__":  # python -m serving.world publish ROOT [SEED]: used by the bench's swap phase
    import sys

    if len(sys.argv) >= 3 and sys.argv[1] == "publish":
        print(publish_next(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 123))
