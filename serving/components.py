"""Build the plain components (model provider, feature source, searcher, popularity) from settings.
Kept apart from the Ray deployments so the same wiring runs in tests and in-process benches."""
from __future__ import annotations

import functools
import gc
import json
import logging
from pathlib import Path
from typing import Any

from serving.encoder import (FeastFeatures, FileFeatures, ModelProvider, StaticFeatures, UserEncoder,
                             compile_user_tower)
from serving.popularity import PopularitySource
from serving.retriever import ExactRetriever, Retriever, milvus_searcher
from serving.settings import ServingSettings, SourceConfig
from serving.types import BackendUnavailable

log = logging.getLogger(__name__)


def _registry(settings: ServingSettings) -> Any:
    from t2diff.registry import ModelRegistry, RegistrySettings

    return ModelRegistry(settings=RegistrySettings.load(settings.config_path, key="registry"))


def model_provider(settings: ServingSettings, source: str, device: str = "cpu",
                   ready: Any = None, prepare: Any = None) -> ModelProvider:
    src = settings.sources[source]
    if src.registry:
        reg = _registry(settings)

        def load(version: Any) -> tuple[Any, dict[str, Any], Any]:
            model, extra, meta = reg.load(version, map_location=device)
            return model, extra, int(meta.get("version", version))

        return ModelProvider(load, latest=reg.latest, ready=ready, device=device, prepare=prepare)

    ckpt = Path(src.checkpoint)  # type: ignore[arg-type]
    if not ckpt.is_absolute():
        from t2diff.paths import runs_dir

        ckpt = runs_dir() / ckpt

    def load_ckpt(version: Any) -> tuple[Any, dict[str, Any], Any]:
        from t2diff.model import load_checkpoint

        model, extra = load_checkpoint(ckpt, map_location=device)
        return model, extra, f"ckpt-{ckpt.stem}"

    return ModelProvider(load_ckpt, latest=None, device=device, prepare=prepare)


def feature_source(settings: ServingSettings, seq_len: int = 50) -> Any:
    f = settings.features
    if f.kind == "feast":
        return FeastFeatures(settings.config_path)
    if f.kind == "file":
        return FileFeatures.from_file(Path(f.path))  # type: ignore[arg-type]
    return StaticFeatures.from_dataset(f.dataset, seq_len)


def popularity(settings: ServingSettings) -> PopularitySource:
    src: SourceConfig = settings.sources[settings.fallback_source]
    if src.counts_path is not None:
        d = json.loads(Path(src.counts_path).read_text())
        return PopularitySource([int(k) for k in d], list(d.values()), name=settings.fallback_source)
    p = PopularitySource.from_dataset(src.dataset)
    p.name = settings.fallback_source
    return p


class LazySearcher:
    """Opens the Milvus index on first use and again after a failure, so a retriever replica starts and
    answers (with index_unavailable -> fallback) while Milvus is down, and recovers when it is back."""

    def __init__(self, settings: ServingSettings, source: str) -> None:
        self.settings, self.src = settings, settings.sources[source]
        self.index: Any = None

    def search(self, vectors: Any, k: int, exclude: Any = None, version: Any = None) -> Any:
        if self.index is None:
            self.index = milvus_searcher(self.settings.config_path, self.src.index_uri, self.src.collection_prefix)
        try:
            return self.index.search(vectors, k, exclude, version=version)
        except Exception as e:
            if "released" in str(e) and self._load(version):
                return self.index.search(vectors, k, exclude, version=version)
            self.index = None
            raise BackendUnavailable("index_unavailable", f"{type(e).__name__}: {e}") from e

    def _load(self, version: Any) -> bool:
        """A Milvus Lite server that restarted comes back with every collection released (not loaded);
        load the one asked for instead of failing every search until someone republishes."""
        try:
            name = self.index.target(version)
            self.index.client.load_collection(name)
            log.warning("index collection %s was released (server restart?); loaded it again", name)
            return True
        except Exception as e:
            log.error("could not load released collection for version %s: %s", version, e)
            return False

    def warm(self) -> None:
        try:
            if self.index is None:
                self.index = milvus_searcher(self.settings.config_path, self.src.index_uri,
                                             self.src.collection_prefix)
        except Exception as e:  # Milvus down at start-up: the replica still starts and falls back
            log.warning("index not reachable at start-up: %s", e)

    def has_version(self, version: Any) -> bool:
        try:
            if self.index is None:
                self.index = milvus_searcher(self.settings.config_path, self.src.index_uri,
                                             self.src.collection_prefix)
            return int(version) in self.index.versions()
        except Exception as e:
            log.warning("cannot list index versions: %s", e)
            self.index = None
            return False


class ExactByVersion:
    """Exact search over the item vectors of whichever model version the encoder used (kept: 2 versions)."""

    def __init__(self, provider: ModelProvider) -> None:
        self.provider = provider
        self.cache: dict[Any, ExactRetriever] = {}
        self.provider.refresh()  # load at start-up, not on the first request
        lm = provider.current()
        if lm is not None:
            self.cache[lm.version] = ExactRetriever.from_model(lm.model, lm.catalog, lm.version)

    def search(self, vectors: Any, k: int, exclude: Any = None, version: Any = None) -> Any:
        if version is None:
            lm = self.provider.current() or (self.provider.refresh() and self.provider.current())
            version = lm.version if lm else None
        if version not in self.cache:
            # load exactly the version the encoder used (a pinned / rolled-back one too), not "latest"
            try:
                lm = self.provider.load_version(version)
            except Exception as e:
                raise BackendUnavailable("index_unavailable", f"no item vectors for version {version}: {e}") from e
            self.cache[lm.version] = ExactRetriever.from_model(lm.model, lm.catalog, lm.version)
            while len(self.cache) > 2:
                self.cache.pop(next(iter(self.cache)))
        return self.cache[version].search(vectors, k, exclude, version=version)


def retriever(settings: ServingSettings, source: str) -> Retriever:
    src = settings.sources[source]
    if src.index == "milvus":
        return Retriever(LazySearcher(settings, source))
    return Retriever(ExactByVersion(model_provider(settings, source)))


def encoder(settings: ServingSettings, source: str, device: str = "cpu") -> UserEncoder:
    src = settings.sources[source]
    ready = None
    if src.registry and src.index == "milvus":
        ready = LazySearcher(settings, source).has_version  # switch only once the index has the version
    provider = model_provider(settings, source, device=device, ready=ready,
                              prepare=functools.partial(compile_user_tower, num_steps=settings.encoder_steps)
                              if settings.encoder_compile else None)
    if src.version is not None:
        provider.pinned = int(src.version) if str(src.version).isdigit() else src.version
    provider.refresh()
    return UserEncoder(provider, feature_source(settings), num_steps=settings.encoder_steps,
                       cuda_graph_batch=settings.batch.max_batch_size if device.startswith("cuda") else 0,
                       reverse=settings.encoder_reverse)


def settle_gc(threshold: int, switch_interval_ms: float | None = None) -> None:
    """End of a replica's start-up: freeze what exists (never collected again: the models, catalogues and
    imported libraries live as long as the replica) and collect the young generation less often; set the
    GIL switch interval when given (settings.switch_interval_ms says why).

    Why: a full collection walks every tracked object; in an ingress replica with the user towers loaded that is
    ~240k objects (torch, Ray, FastAPI, pydantic) and 113 ms measured on the 2-core box, a stall for every request
    in flight, a few times a minute under load: the p99 tail. 0 keeps Python's defaults.
    """
    if switch_interval_ms is not None:
        import sys

        sys.setswitchinterval(switch_interval_ms / 1000.0)
    if not threshold:
        return
    gc.collect()
    gc.freeze()
    _, t1, t2 = gc.get_threshold()
    gc.set_threshold(threshold, t1, t2)

