"""User encoder: session features -> user vector with the model's user tower (T2Diff: reverse diffusion +
mixed attention; any arch of t2diff.model through the same ``encode_users``).

Plain classes, no Ray: :class:`ModelProvider` owns "which model version is live" (registry ``latest``, a
pinned version, or a checkpoint file) and swaps it by reference, so a request that already took the old
model finishes on it and no request waits for a load. :class:`UserEncoder` turns a batch of user ids into
vectors.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from serving.types import BackendUnavailable, EncodeResult

log = logging.getLogger(__name__)


@dataclass
class History:
    """A user's recent items (raw ids, oldest -> newest) and their times (ms; may be None if unknown)."""

    items: list[int]
    ts_ms: list[int] | None = None


class FeatureSource(Protocol):
    def histories(self, user_ids: list[int]) -> list[History | None]: ...  # None = unknown user


@dataclass
class LoadedModel:
    model: Any
    catalog: Any  # t2diff.data.Catalog
    version: int | str
    seq_len: int
    device: str = "cpu"


def catalog_of(extra: dict[str, Any]) -> Any:
    from t2diff.data import Catalog

    cat = extra.get("catalog")
    if cat is None:
        raise ValueError("checkpoint has no 'catalog' in its extra; serving cannot map raw item ids")
    return cat if isinstance(cat, Catalog) else Catalog.from_dict(cat)


def _prepare(model: Any, device: str) -> Any:
    model.eval()
    return model.to(device) if hasattr(model, "to") else model


def compile_user_tower(lm: LoadedModel, num_steps: int | None = None) -> None:
    """Ahead-of-time compile the whole user tower (item lookup, ``num_steps`` reverse steps, mixed attention) for
    CPU serving (``encoder_compile``; default steps: the model's own).

    Why: at serving batch sizes the user tower is dispatch-bound -- ~70 tiny kernels per reverse step plus the
    head -- and in eager mode every one of them holds the GIL that the replica's HTTP handling needs. The
    tower is exported with a dynamic batch dimension, compiled with AOTInductor in a child process and run
    through its C entry point with the GIL released (t2diff/model/aot.py says why and measures it), before the
    version goes live (ModelProvider's ``prepare``). On CUDA the encoder uses its CUDA graph instead.
    """
    from t2diff.model.aot import compile_in_child

    if getattr(lm.model, "diffusion", None) is None or not hasattr(lm.model, "set_compiled_tower") \
            or str(lm.device).startswith("cuda"):
        return
    if lm.model.cfg.tied_input:  # the exported tower reads raw item vectors
        log.warning("version %s is a tied_input model: served eager, not AOT-compiled", lm.version)
        return
    lm.model.set_compiled_tower(compile_in_child(lm.model, lm.seq_len, num_steps))
    log.info("serving version %s with the AOT-compiled user tower", lm.version)


class ModelProvider:
    """Which model serves a source. ``refresh()`` is cheap (reads one pointer) and is called periodically.

    ``ready(version)``: only switch to a registry version once its item index exists too, so the encoder
    never produces vectors for a version the retriever cannot search.
    """

    def __init__(self, loader: Callable[[int | str | None], tuple[Any, dict[str, Any], int | str]],
                 latest: Callable[[], int | str | None] | None = None,
                 ready: Callable[[int | str], bool] | None = None, device: str = "cpu",
                 prepare: Callable[[LoadedModel], None] | None = None) -> None:
        """``prepare``: run on every loaded model before it goes live (e.g. :func:`compile_user_tower`), so
        no request waits for it."""
        self._loader, self._latest, self._ready = loader, latest, ready or (lambda v: True)
        self._prepare_fn = prepare
        self.device = device
        self.pinned: int | str | None = None
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self.last_error: str | None = None

    def current(self) -> LoadedModel | None:
        return self._current

    def pin(self, version: int | str | None) -> None:
        """Serve ``version`` regardless of the registry pointer (rollback); None follows latest again."""
        self.pinned = version
        self.refresh()

    def load_version(self, version: int | str | None) -> LoadedModel:
        """Load one specific version (for a retriever that must match the encoder's version)."""
        model, extra, v = self._loader(version)
        lm = LoadedModel(_prepare(model, self.device), catalog_of(extra), v, int(model.cfg.seq_len), self.device)
        if self._prepare_fn is not None:
            self._prepare_fn(lm)
        return lm

    def refresh(self) -> bool:
        """Load the wanted version if it differs from the live one. True when a swap happened."""
        with self._lock:
            try:
                want = self.pinned if self.pinned is not None else (self._latest() if self._latest else None)
                cur = self._current
                if cur is not None and (want is None or want == cur.version):
                    return False
                if want is not None and not self._ready(want):
                    log.info("version %s not in the index yet; staying on %s", want, cur and cur.version)
                    return False
                t0 = time.perf_counter()
                lm = self.load_version(want)
                self._current = lm  # atomic reference swap: in-flight batches keep the old object
                self.last_error = None
                log.info("serving model version %s (was %s), loaded in %.0f ms", lm.version,
                         cur and cur.version, (time.perf_counter() - t0) * 1000)
                return True
            except Exception as e:  # registry unreachable / corrupt version: keep serving the old one
                self.last_error = f"{type(e).__name__}: {e}"
                log.error("model refresh failed, keeping %s: %s", self._current and self._current.version, e)
                return False


class UserEncoder:
    """``seed``: the reverse process draws its noise from a generator seeded once (None: torch's global one).
    ``reseed_per_batch``: restart that generator for every batch, so the noise depends on the batch alone and
    one history encoded twice (two arms on one model, a paired in-process comparison) gives one vector."""

    def __init__(self, provider: ModelProvider, features: FeatureSource, seed: int | None = None,
                 num_steps: int | None = None, cuda_graph_batch: int = 0, reseed_per_batch: bool = False,
                 reverse: str = "torch") -> None:
        self.provider, self.features, self.num_steps = provider, features, num_steps
        self.reverse = reverse  # CUDA graph of the PyTorch reverse loop ("torch") or of the Triton kernel
        if reseed_per_batch and seed is None:
            raise ValueError("reseed_per_batch needs a seed")
        self.seed, self.reseed_per_batch = seed, reseed_per_batch
        # On CUDA the reverse process is launch-bound (benchmarks/encode.md: 47 ms eager vs 7 ms graphed at
        # batch 1, T=50): capture it once per (model version, steps) for batches up to cuda_graph_batch.
        self.cuda_graph_batch = cuda_graph_batch
        self._graphed: tuple[Any, Any] | None = None  # ((id(model), steps), GraphedEncoder)
        self._gen = None
        if seed is not None:
            import torch

            self._gen = torch.Generator().manual_seed(seed)

    def warmup(self) -> None:
        """One forward pass at start-up, so the first real requests do not pay for cold kernels / allocator
        (on a loaded CPU that first batch alone could pass the ingress's timeout)."""
        import torch

        lm = self.provider.current()
        if lm is None:
            return
        n = min(5, lm.catalog.num_items)
        hist = torch.zeros((1, lm.seq_len), dtype=torch.long)  # (1, L)
        hist[0, lm.seq_len - n:] = torch.arange(1, n + 1)
        with torch.inference_mode():
            lm.model.encode_users(hist.to(lm.device), None, None, num_steps=self.num_steps)

    def encode_batch(self, user_ids: list[int], deadlines: list[float] | None = None,
                     now_ms: list[int | None] | None = None) -> list[EncodeResult]:
        """``deadlines``: wall-clock times (time.time()) after which the caller has given up on a request.
        ``now_ms``: each request's clock (ms) for the time-lag feature, where the caller has one (a replay of a
        log at the log's own times); None, or a None entry, = the user's latest event."""
        t0 = time.perf_counter()
        if deadlines is not None:
            now = time.time()
            live = [j for j, d in enumerate(deadlines) if d > now]
            if len(live) < len(user_ids):
                out: list[EncodeResult] = [EncodeResult("overloaded", batch_size=len(user_ids))
                                           for _ in user_ids]
                if live:
                    sub_now = None if now_ms is None else [now_ms[j] for j in live]
                    for j, r in zip(live, self.encode_batch([user_ids[j] for j in live], now_ms=sub_now)):
                        out[j] = r
                for r in out:
                    r.encode_ms = (time.perf_counter() - t0) * 1000.0
                return out
        return self._encode(user_ids, t0, now_ms)

    def _encode(self, user_ids: list[int], t0: float, now_ms: list[int | None] | None = None) -> list[EncodeResult]:
        import torch

        lm = self.provider.current()
        if lm is None:
            return [EncodeResult("model_unavailable") for _ in user_ids]
        try:
            hists = self.features.histories(user_ids)
        except BackendUnavailable as e:
            return [EncodeResult(e.kind) for _ in user_ids]  # type: ignore[arg-type]
        except Exception as e:
            log.warning("feature read failed: %s", e)
            return [EncodeResult("features_unavailable") for _ in user_ids]
        out: list[EncodeResult | None] = [None] * len(user_ids)
        rows, row_of = [], []
        L = lm.seq_len
        for j, h in enumerate(hists):
            if h is None:
                out[j] = EncodeResult("unknown_user")
                continue
            idx = lm.catalog.indices(h.items, unknown=0)  # items newer than the model map to padding
            keep = idx > 0
            if not keep.any():
                out[j] = EncodeResult("empty_history", seen=[int(x) for x in h.items])
                continue
            ts = np.asarray(h.ts_ms if h.ts_ms is not None else np.zeros(len(idx)), dtype=np.int64)
            rows.append((idx[keep][-L:], ts[keep][-L:]))
            row_of.append(j)
        if rows:
            B = len(rows)
            # filled in numpy, wrapped once: a torch slice assignment per row cost ~2 % of the ingress's GIL time
            hist_np = np.zeros((B, L), dtype=np.int64)  # (B, L) left-padded, most recent last
            ts_np = np.zeros((B, L), dtype=np.int64)  # (B, L) ms, 0 at padding
            for b, (ii, tt) in enumerate(rows):
                hist_np[b, L - len(ii):] = ii
                ts_np[b, L - len(tt):] = tt
            hist, hist_ts = torch.from_numpy(hist_np), torch.from_numpy(ts_np)
            # "now" for the time-lag feature is the user's latest event unless the caller gave its own clock:
            # on replayed logs wall-clock time would be years past the history and far outside what the model
            # saw in training.
            now_ts = hist_ts.max(dim=1).values  # (B,)
            for b, j in enumerate(row_of):
                if now_ms is not None and now_ms[j] is not None:
                    now_ts[b] = int(now_ms[j])  # the caller's request clock
            if self.reseed_per_batch:
                self._gen.manual_seed(self.seed)  # type: ignore[union-attr]
            graphed = self._graph_for(lm) if B <= self.cuda_graph_batch else None
            with torch.inference_mode():
                if graphed is not None:
                    e_u = graphed(hist.to(lm.device), hist_ts.to(lm.device), now_ts.to(lm.device))  # (B, D)
                else:
                    e_u = lm.model.encode_users(hist.to(lm.device), hist_ts.to(lm.device), now_ts.to(lm.device),
                                                generator=self._gen, num_steps=self.num_steps)  # (B, D)
            vecs = e_u.float().cpu().numpy()
            for b, j in enumerate(row_of):
                h = hists[j]
                out[j] = EncodeResult("ok", vecs[b].tolist(), lm.version, [int(x) for x in h.items])
        ms = (time.perf_counter() - t0) * 1000.0
        for r in out:
            r.encode_ms, r.batch_size = ms, len(user_ids)  # type: ignore[union-attr]
        return out  # type: ignore[return-value]


    def _graph_for(self, lm: LoadedModel) -> Any:
        """The CUDA-graphed encoder of this model version (built on first use), or None on CPU / failure."""
        if not str(lm.device).startswith("cuda") or getattr(lm.model, "diffusion", None) is None:
            return None
        key = (id(lm.model), self.num_steps)
        if self._graphed is not None and self._graphed[0] == key:
            return self._graphed[1]
        try:
            from t2diff.model.graphed import GraphedEncoder

            reverse = None
            if self.reverse == "triton":
                from t2diff.model.triton_reverse import supports

                why = supports(lm.model.diffusion.unet)
                if why:
                    log.warning("version %s: Triton reverse process unavailable (%s); CUDA graph of the loop",
                                lm.version, why)
                else:
                    reverse = "triton"
            g = GraphedEncoder(lm.model, batch_size=self.cuda_graph_batch, num_steps=self.num_steps, reverse=reverse)
        except Exception as e:  # eager still works; never fail a request over the fast path
            log.warning("CUDA graph capture failed, staying eager: %s", e)
            self.cuda_graph_batch = 0
            return None
        self._graphed = (key, g)
        return g


# ---------------------------------------------------------------- feature sources

class StaticFeatures:
    """Each user's last ``seq_len`` items of a data set, in memory: benches and demos without Feast."""

    def __init__(self, seqs: dict[int, History]) -> None:
        self.seqs = seqs

    def histories(self, user_ids: list[int]) -> list[History | None]:
        return [self.seqs.get(int(u)) for u in user_ids]

    @classmethod
    def from_dataset(cls, name: str, seq_len: int = 50) -> "StaticFeatures":
        from t2diff.data import load_dataset

        inter, _ = load_dataset(name)
        order = np.lexsort((inter.ts_ms, inter.user))  # stable by user then time
        users, items, ts = inter.user[order], inter.item[order], inter.ts_ms[order]
        bounds = np.flatnonzero(np.diff(users)) + 1
        seqs = {}
        for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(users)]):
            seqs[int(users[s])] = History(items[max(s, e - seq_len):e].tolist(), ts[max(s, e - seq_len):e].tolist())
        log.info("static features from %s: %d users", name, len(seqs))
        return cls(seqs)


class FeastFeatures:
    """Reads ``user_session_v1`` through feature_store.client.FeatureClient; any failure to reach the
    online store is ``features_unavailable`` (the ingress falls back), never an error to the caller. The
    client is (re)built lazily so a replica starts even while the online store is down."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self.client: Any = None

    def _client(self) -> Any:
        if self.client is None:
            from feature_store.client import FeatureClient
            from feature_store.settings import FeatureSettings

            self.client = FeatureClient(FeatureSettings.load(self.config_path, key="features"))
        return self.client

    def histories(self, user_ids: list[int]) -> list[History | None]:
        try:
            feats = self._client().get_user_features(user_ids)
        except Exception as e:
            self.client = None  # reconnect next time
            raise BackendUnavailable("features_unavailable", f"{type(e).__name__}: {e}") from e
        return [None if f is None else _history_of(f) for f in feats]


class FileFeatures(StaticFeatures):
    """Histories from a JSONL file of ``{"user_id", "items", "ts_ms"}`` (tests, benches, demos)."""

    @classmethod
    def from_file(cls, path: Path) -> "FileFeatures":
        import json

        seqs = {}
        with open(path) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    seqs[int(d["user_id"])] = History([int(x) for x in d["items"]],
                                                      [int(x) for x in d["ts_ms"]] if d.get("ts_ms") else None)
        return cls(seqs)


def _history_of(f: Any) -> History:
    items = [int(x) for x in (getattr(f, "last_items", None) or [])]
    ts = getattr(f, "last_ts_ms", None)
    if isinstance(ts, (list, tuple, np.ndarray)) and len(ts) == len(items):
        return History(items, [int(t) for t in ts])
    # a single "last event time": spread it over the history (no per-item lags known)
    return History(items, [int(ts)] * len(items) if ts else None)
