"""Model registry: immutable version directories plus a ``LATEST`` pointer.

Layout under ``root`` (``registry.root``; default ``$T2DIFF_RUNS_DIR/registry``)::

    v000001/model.pt     t2diff.model.save_checkpoint(...): config, weights, extra (catalog, ...)
    v000001/meta.json    version, created_at, metrics, offsets, max_event_ts_ms, model config, ...
    LATEST               "1\\n" -- the version serving should use

Why it is safe without a database:

* A version is written into ``.tmp-*`` and renamed to ``vNNNNNN`` in one ``os.rename``: a directory either
  does not exist or is complete, and rename onto an existing directory fails, which also allocates version
  numbers without a lock when two publishers race. Files are fsynced before the rename.
* ``LATEST`` is replaced with ``os.replace`` (atomic on POSIX); rollback is ``set_latest(older)``.
* Readers poll ``latest()`` (one small file read) and load the new version when it changes -- serving learns of
  new versions without a restart.

Object-store paths (s3://...) are not implemented: ``root`` must be a local or mounted filesystem (a shared
volume in Kubernetes). An fsspec-backed variant would keep the same layout and the same pointer semantics.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic_settings import SettingsConfigDict

from t2diff.config import Section
from t2diff.paths import fsync_path, runs_dir

log = logging.getLogger(__name__)

LATEST = "LATEST"
MODEL_FILE = "model.pt"
META_FILE = "meta.json"


class RegistrySettings(Section):
    """``registry`` section of the config file."""

    model_config = SettingsConfigDict(env_prefix="T2DIFF_REGISTRY__")

    root: str = ""  # "" = $T2DIFF_RUNS_DIR/registry
    keep: int = 0  # 0 = keep every version; else prune older ones beyond the newest `keep` (never LATEST)

    def resolved_root(self) -> Path:
        return Path(self.root) if self.root else runs_dir() / "registry"


def _dirname(version: int) -> str:
    return f"v{int(version):06d}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new content, never a torn file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


class ModelRegistry:
    def __init__(self, root: str | Path | None = None, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.root = Path(root) if root is not None else self.settings.resolved_root()
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- reading
    def versions(self) -> list[int]:
        out = []
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith("v") and p.name[1:].isdigit() and (p / META_FILE).exists():
                out.append(int(p.name[1:]))
        return sorted(out)

    def path(self, version: int) -> Path:
        return self.root / _dirname(version)

    def latest(self) -> int | None:
        """The version the ``LATEST`` pointer names, or None before the first publish."""
        try:
            text = (self.root / LATEST).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    def meta(self, version: int) -> dict[str, Any]:
        p = self.path(version) / META_FILE
        if not p.exists():
            raise KeyError(f"no version {version} in {self.root}")
        return json.loads(p.read_text())

    def load(self, version: int | None = None, map_location: str = "cpu") -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(model, extra, meta) of ``version`` (default: latest)."""
        from t2diff.model import load_checkpoint

        if version is None:
            version = self.latest()
            if version is None:
                raise KeyError(f"registry {self.root} has no published version")
        meta = self.meta(version)
        model, extra = load_checkpoint(self.path(version) / MODEL_FILE, map_location=map_location)
        return model, extra, meta

    # ---- writing
    def publish(self, model: Any, extra: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                offsets: dict[str, Any] | None = None, set_latest: bool = True, files: dict[str, bytes] | None = None,
                **meta: Any) -> int:
        """Write a new immutable version; returns its number. ``meta`` keys (max_event_ts_ms, ...) go to
        meta.json. ``files``: extra small files (name -> bytes) stored in the version dir."""
        from t2diff.model import save_checkpoint

        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            save_checkpoint(tmp / MODEL_FILE, model, **(extra or {}))
            fsync_path(tmp / MODEL_FILE)
            for name, data in (files or {}).items():
                (tmp / name).write_bytes(data)
                fsync_path(tmp / name)
            cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
            body = {
                "created_at": time.time(),
                "metrics": metrics or {},
                "offsets": {str(k): v for k, v in (offsets or {}).items()},
                "model_config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
                **meta,
            }
            version = (self.versions() or [0])[-1] + 1
            while True:  # rename fails if another publisher took this number: take the next one
                body["version"] = version
                (tmp / META_FILE).write_text(json.dumps(body, indent=1, default=_json_default))
                fsync_path(tmp / META_FILE)
                try:
                    os.rename(tmp, self.path(version))
                    break
                except OSError:
                    if not self.path(version).exists():
                        raise
                    version += 1
            fsync_path(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if set_latest:
            self.set_latest(version)
        log.info("registry %s: published version %d in %.2fs", self.root, version, time.perf_counter() - t0)
        self.prune()
        return version

    def set_latest(self, version: int) -> None:
        """Point ``LATEST`` at an existing version (publish, rollback, roll forward)."""
        if not (self.path(version) / META_FILE).exists():
            raise KeyError(f"no version {version} in {self.root}")
        write_atomic(self.root / LATEST, f"{int(version)}\n")

    def prune(self) -> list[int]:
        """Delete versions older than the newest ``keep`` (never the one LATEST names)."""
        if self.settings.keep <= 0:
            return []
        vs, cur = self.versions(), self.latest()
        doomed = [v for v in vs[: -self.settings.keep] if v != cur]
        for v in doomed:
            # Rename first so a reader never sees a half-deleted version directory.
            trash = self.root / f".trash-{_dirname(v)}-{os.getpid()}"
            os.rename(self.path(v), trash)
            shutil.rmtree(trash, ignore_errors=True)
        return doomed


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
