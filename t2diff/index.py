"""Item-embedding index in Milvus: one collection per model version behind an alias.

Why this layout:

* **Atomic switch.** ``publish`` builds collection ``<prefix>_v<version>`` completely (insert, flush, index,
  load) and only then points the alias ``<alias>`` at it (``alter_alias``). Readers search the alias, so they see
  the previous version or the new one, never a half-written collection (tested under concurrent reads, on
  Milvus Lite and on a Milvus server).
* **Milvus Lite 2.5, not 3.x.** milvus-lite 2.5.1 runs Milvus' C++ engine (segcore + knowhere) as a local
  binary; 3.x replaced it with a Python engine whose search walks every row in Python loops. Measured on the
  2-core box, 100k x 8-d vectors, FLAT, top-20, nq 1: 2.5.1 1.15 ms p50, 3.2.2 64 ms (benchmarks/serve.md,
  eighth session). pymilvus 3.0.2 drives both (``MilvusClient("file.db")`` starts the embedded one).
* **Old versions** stay searchable by explicit ``version=`` for ``grace_s`` seconds after they stop being live
  (readers that resolved the old name finish their queries), and the newest ``keep`` collections are never
  dropped so a rollback (``set_live``) can re-point the alias without re-uploading.
* **Metric / index.** Scores are ``e_u @ e_i`` (the model trains a full softmax over inner products), so the
  metric is ``IP``; cosine would change the ranking because item norms carry popularity. The default index is
  ``FLAT`` (exact): T2Diff's item vectors are 8-d and catalogues here are <= 100k items, where exact IP search
  is both correct and the fastest type measured (see benchmarks/trainer.md). ``HNSW`` / ``IVF_FLAT`` are
  selectable for larger catalogues.
* **Several processes.** Milvus Lite (``MilvusClient("file.db")``) runs an in-process server that holds an
  exclusive ``flock`` on the data dir: a second process opening the same file gets "Open local milvus failed".
  With ``shared=True`` (the default) a local path is instead served by one detached Milvus Lite server process
  (its ``milvus`` binary listening on 127.0.0.1), started on demand by whichever process comes first
  (serialised by a lock file) and found by the others through ``<path>.server.json`` (``t2diff.lite_server``);
  everyone connects over gRPC, so the trainer writes and Ray Serve replicas read the same index. A Milvus
  server URI (``http://host:19530``) works the same way.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from t2diff.config import Section
from t2diff.lite_server import ensure_lite_server
from t2diff.paths import runs_dir

log = logging.getLogger(__name__)


class IndexSettings(Section):
    """``index`` section of the config file."""

    model_config = SettingsConfigDict(env_prefix="T2DIFF_INDEX__")

    uri: str = ""  # "" = $T2DIFF_RUNS_DIR/milvus/items.db (Milvus Lite); or http://host:port of a Milvus server
    token: str = ""
    shared: bool = True  # local path: go through one loopback milvus-lite server so several processes share it
    collection_prefix: str = "t2diff_items"
    alias: str = "t2diff_items_live"
    index_type: Literal["FLAT", "HNSW", "IVF_FLAT"] = "FLAT"  # HNSW on a Milvus server only (not in Lite 2.5)
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 128
    ivf_nlist: int = 256
    ivf_nprobe: int = 16
    # Payload bytes per insert RPC. Milvus Lite's insert time grows faster than its payload: 100k x 8-d rows took
    # 1.7 s in 2,000-row RPCs and 11.6 s in one 50,000-row RPC; at 64 dims 2.5 s in 1,000-row RPCs and 20 s in
    # 10,000-row ones (benchmarks/trainer.md, twentieth session). 256 KiB is ~6.5k rows at 8 dims, ~1k at 64.
    insert_batch_bytes: int = Field(262_144, ge=1)
    grace_s: float = 60.0  # a retired collection stays searchable this long
    keep: int = 2  # newest collections never dropped (rollback)
    server_start_timeout_s: float = 60.0

    def resolved_uri(self) -> str:
        return self.uri or str(runs_dir() / "milvus" / "items.db")


def rows_per_insert(dim: int, batch_bytes: int) -> int:
    """Rows in one insert RPC: as many (int64 id, float32 x dim) rows as fit ``batch_bytes``, at least one."""
    return max(1, batch_bytes // (8 + 4 * int(dim)))


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


# ---------------------------------------------------------------- the index

_NAME_RE = re.compile(r"_v(\d+)$")


class ItemIndex:
    """Versioned item-vector index. Versions are ints (the registry's version numbers)."""

    def __init__(self, uri: str | None = None, settings: IndexSettings | None = None, **overrides: Any) -> None:
        from pymilvus import MilvusClient  # heavy; only where the index is used

        s = settings or IndexSettings()
        upd = {k: v for k, v in {"uri": uri, **overrides}.items() if v is not None}
        self.settings = s.model_copy(update=upd) if upd else s
        target = self.settings.resolved_uri()
        self.lite = not is_remote(target)  # Milvus Lite (embedded or our loopback server)
        if self.lite:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            if self.settings.shared:
                target = ensure_lite_server(target, self.settings.server_start_timeout_s)
        self.uri = target
        self.client = MilvusClient(uri=target, token=self.settings.token or "", **self._client_options())
        self._retired: dict[str, float] = {}  # collection -> time it stopped being live (this process' view)
        self._last_pointer = 0  # id of the last live-pointer row this process wrote (Milvus Lite)
        self._dims: dict[str, int] = {}

    # Milvus Lite's server keeps gRPC's default ping policy (at most one ping per 5 min without data), while
    # pymilvus pings every 10 s, idle or not: after a minute or so of idling the server sends GOAWAY
    # "too_many_pings", and pymilvus' recovery of that shared connection then fails with "Fail connecting to
    # server" (seen: a publish after 90 s idle; tests/t2diff/test_index.py). A loopback connection needs no
    # keepalive, so Lite gets none; a Milvus server accepts pymilvus' default pings and keeps them.
    LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}

    def _client_options(self) -> dict[str, Any]:
        return {"grpc_options": dict(self.LITE_GRPC_OPTIONS)} if self.lite else {}

    # ---- names
    def collection_name(self, version: int) -> str:
        return f"{self.settings.collection_prefix}_v{int(version):06d}"

    def _version_of(self, name: str) -> int | None:
        if not name.startswith(self.settings.collection_prefix + "_v"):
            return None
        m = _NAME_RE.search(name)
        return int(m.group(1)) if m else None

    def versions(self) -> list[int]:
        """Versions whose collections exist (live or within grace / keep), ascending."""
        vs = [self._version_of(n) for n in self.client.list_collections()]
        return sorted(v for v in vs if v is not None)

    # ---- the live pointer
    # A Milvus server switches readers with an alias (alter_alias, one call). Milvus Lite 2.5 has no alias RPCs
    # (UNIMPLEMENTED), so there the live version is the newest row (largest id, a nanosecond clock) of a small
    # collection named like the alias. A switch *inserts* a row (an upsert is a delete plus an insert, and a
    # concurrent reader caught between them saw no live version at all) and then deletes all but the newest few;
    # reads use Strong consistency. A reader resolves the pointer and searches that version's collection, which
    # stays searchable through its grace period after a switch, so it sees the old version or the new one, never
    # a mix (tests/t2diff/test_index.py runs the same concurrent-reader test on both).
    POINTER_ROWS = 8
    def _live_collection(self) -> str | None:
        alias = self.settings.alias
        if self.lite:
            if not self.client.has_collection(alias):
                return None
            rows = self.client.query(alias, filter="id >= 0", output_fields=["id", "version"],
                                     consistency_level="Strong")
            return self.collection_name(int(max(rows, key=lambda r: r["id"])["version"])) if rows else None
        # Ask list_aliases first: describe_alias on a missing alias works but pymilvus logs a traceback.
        if alias not in _alias_names(self.client.list_aliases()):
            return None
        return self.client.describe_alias(alias)["collection_name"]

    def _point(self, name: str, first: bool) -> None:
        """Make collection ``name`` the live one (``first``: nothing was live yet)."""
        alias = self.settings.alias
        if not self.lite:
            (self.client.create_alias if first else self.client.alter_alias)(name, alias)
            return
        from pymilvus import DataType, MilvusClient

        if not self.client.has_collection(alias):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("version", DataType.INT64)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field; unused
            ip = self.client.prepare_index_params()
            ip.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
            self.client.create_collection(alias, schema=schema, index_params=ip)
        row_id = max(time.time_ns(), self._last_pointer + 1)
        self._last_pointer = row_id
        self.client.insert(alias, [{"id": row_id, "version": self._version_of(name), "vec": [0.0, 0.0]}])
        ids = sorted(int(r["id"]) for r in self.client.query(alias, filter="id >= 0", output_fields=["id"],
                                                             consistency_level="Strong"))
        if len(ids) > self.POINTER_ROWS:  # older pointers: never the newest, so readers do not notice
            self.client.delete(alias, filter=f"id < {ids[-self.POINTER_ROWS]}")

    def target(self, version: int | None = None) -> str:
        """The collection (or, on a server, the alias) a search for ``version`` (None = live) goes to."""
        if version is not None:
            return self.collection_name(version)
        if not self.lite:
            return self.settings.alias
        name = self._live_collection()
        if name is None:
            raise KeyError("no live version in the index yet")
        return name

    def live_version(self) -> int | None:
        name = self._live_collection()
        return None if name is None else self._version_of(name)

    # ---- writing
    def _index_params(self) -> Any:
        s = self.settings
        params: dict[str, Any] = {}
        if s.index_type == "HNSW":
            params = {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
        elif s.index_type == "IVF_FLAT":
            params = {"nlist": s.ivf_nlist}
        ip = self.client.prepare_index_params()
        ip.add_index(field_name="vec", index_type=s.index_type, metric_type="IP", params=params)
        return ip

    def _search_params(self) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {}
        if s.index_type == "HNSW":
            params = {"ef": s.hnsw_ef}
        elif s.index_type == "IVF_FLAT":
            params = {"nprobe": s.ivf_nprobe}
        return {"metric_type": "IP", "params": params}

    def publish(self, version: int, raw_item_ids: Sequence[int] | np.ndarray, vectors: Any,
                switch: bool = True) -> str:
        """Build the collection of ``version`` and (``switch``) make it live atomically; returns its name.

        ``vectors``: (N, D) float array or tensor, row i for ``raw_item_ids[i]``. Re-publishing a version that
        already exists but is not live rebuilds it (a crash may have left it half-written); re-publishing the
        live version is refused, since readers are on it.
        """
        from pymilvus import DataType, MilvusClient

        ids = np.asarray(raw_item_ids, dtype=np.int64)
        vecs = _as_float32(vectors)  # (N, D)
        if vecs.ndim != 2 or len(ids) != len(vecs):
            raise ValueError(f"need (N, D) vectors for N ids; got ids {ids.shape}, vectors {vecs.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("raw_item_ids contain duplicates")
        if not np.isfinite(vecs).all():
            raise ValueError("vectors contain NaN/inf; refusing to publish them")
        name = self.collection_name(version)
        live = self._live_collection()
        if name == live:
            raise ValueError(f"version {version} is live; versions are immutable")
        t0 = time.perf_counter()
        if self.client.has_collection(name):
            log.warning("collection %s exists but is not live (interrupted publish?); rebuilding", name)
            self.client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=int(vecs.shape[1]))
        self.client.create_collection(name, schema=schema)
        b = rows_per_insert(vecs.shape[1], self.settings.insert_batch_bytes)
        for i in range(0, len(ids), b):
            rows = [{"id": int(j), "vec": v} for j, v in zip(ids[i:i + b].tolist(), vecs[i:i + b])]
            self.client.insert(name, rows)
        self.client.flush(name)  # sealed segments: searching growing segments is ~20x slower
        # Milvus Lite builds the index inside the CreateIndex call; waiting (sync) would poll an RPC Lite lacks
        # (AllocTimestamp, logged as an error) and sleep 0.5 s. A real Milvus server is waited for.
        self.client.create_index(name, self._index_params(), sync=not self.lite)
        self.client.load_collection(name)
        t_build = time.perf_counter() - t0
        if switch:
            self._switch(name)
        log.info("published %d item vectors (dim %d) as %s in %.2fs (%.0f rows/s)%s", len(ids), vecs.shape[1],
                 name, t_build, len(ids) / max(t_build, 1e-9), ", now live" if switch else "")
        self.drop_expired()
        return name

    def _switch(self, name: str) -> None:
        old = self._live_collection()
        self._point(name, first=old is None)
        if old is not None and old != name:
            self._retired[old] = time.time()

    def set_live(self, version: int) -> None:
        """Point the alias at an existing version (rollback or roll forward)."""
        name = self.collection_name(version)
        if not self.client.has_collection(name):
            raise KeyError(f"version {version} has no collection (dropped after its grace period?)")
        self.client.load_collection(name)
        self._switch(name)
        self._retired.pop(name, None)

    def drop_expired(self, now: float | None = None) -> list[str]:
        """Drop collections that are not live, not among the newest ``keep``, and retired > ``grace_s`` ago.

        A collection this process never saw retire counts as retired when first seen here, so a restarted
        trainer still gives readers the full grace period.
        """
        now = time.time() if now is None else now
        live = self._live_collection()
        mine = {self._version_of(n): n for n in self.client.list_collections() if self._version_of(n) is not None}
        keep = set(sorted(mine)[-self.settings.keep:]) if self.settings.keep > 0 else set()
        dropped = []
        for v, name in mine.items():
            if name == live or v in keep:
                continue
            since = self._retired.setdefault(name, now)
            if now - since >= self.settings.grace_s:
                self.client.drop_collection(name)
                self._retired.pop(name, None)
                dropped.append(name)
        if dropped:
            log.info("dropped retired collections %s", dropped)
        return dropped

    # ---- reading
    def search(self, vectors: Any, k: int, exclude: Iterable[Iterable[int]] | None = None,
               version: int | None = None) -> list[list[tuple[int, float]]]:
        """Top-``k`` raw item ids by inner product for each query row; ``exclude[i]`` ids removed from row i.

        Excluded ids are filtered after over-fetching ``k + len(exclude[i])`` rather than by a filter
        expression: it keeps one request per batch and works for every index type.
        """
        q = _as_float32(vectors)
        if q.ndim == 1:
            q = q[None]
        ex = [set(int(x) for x in e) for e in exclude] if exclude is not None else [set() for _ in range(len(q))]
        if len(ex) != len(q):
            raise ValueError(f"exclude has {len(ex)} rows for {len(q)} queries")
        if len(q) == 0:
            return []
        target = self.target(version)
        limit = int(k) + max((len(e) for e in ex), default=0)
        res = self.client.search(target, data=q.tolist(), limit=limit, anns_field="vec",
                                 search_params=self._search_params(), output_fields=["id"])
        out = []
        for hits, e in zip(res, ex):
            row = [(int(h["id"]), float(h["distance"])) for h in hits if int(h["id"]) not in e]
            out.append(row[:k])
        return out

    def count(self, version: int | None = None) -> int:
        return int(self.client.query(self.target(version), filter="", output_fields=["count(*)"])[0]["count(*)"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _alias_names(res: Any) -> list[str]:
    if isinstance(res, dict):  # pymilvus returns {"aliases": [...], ...}
        res = res.get("aliases", [])
    return list(res or [])


def _as_float32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))
