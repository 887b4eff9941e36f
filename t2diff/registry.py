"""Model registry: immutable versions plus a ``LATEST`` pointer, on a local filesystem or an object store.

Layout under ``root`` (``registry.root``; default ``$T2DIFF_RUNS_DIR/registry``)::

    v000001/model.pt     t2diff.model.save_checkpoint(...): config, weights, extra (catalog, ...)
    v000001/meta.json    version, created_at, metrics, offsets, max_event_ts_ms, model config, sha256 of files
    LATEST               "1\\n" -- the version serving should use

``root`` is a local (or mounted) directory, ``file://DIR`` (the same), or a URL that fsspec opens:
``s3://bucket/prefix`` (s3fs; ``registry.storage_options`` are passed to it, e.g. ``endpoint_url``) or
``memory://name`` (tests). On both kinds of storage a version exists for readers iff its ``meta.json`` does.
Readers poll ``latest()`` (one small read) and load the new version when it changes -- serving learns of new
versions without a restart.

Local filesystem -- why it is safe without a database:

* A version is written into ``.tmp-*`` and renamed to ``vNNNNNN`` in one ``os.rename``: a directory either
  does not exist or is complete, and rename onto an existing directory fails, which also allocates version
  numbers without a lock when two publishers race. Files are fsynced before the rename.
* ``LATEST`` is replaced with ``os.replace`` (atomic on POSIX); rollback is ``set_latest(older)``.
* prune renames a version away before deleting it, so no reader sees half a directory.

Object store -- there is no atomic directory rename, but a single-object PUT is atomic and S3 lists consistently:

* Number first: the publisher claims ``vNNNNNN/CLAIM`` (a random writer token) with a conditional create (S3
  ``If-None-Match: *``, s3fs ``pipe_file(mode="create")``) and takes the next number when it exists. Claiming
  before uploading matters: a conditional create of meta.json alone would come too late, two publishers of the
  same number would already have overwritten each other's model.pt.
* Then model.pt and the extra files, then ``meta.json`` LAST (also a conditional create). meta.json is the
  commit marker: ``versions()`` lists only versions that have one, so a half-uploaded version (or one whose
  publisher died) is never visible; its number is skipped (a failed upload is removed, a crashed one's objects
  stay until removed by hand). The checkpoint is serialised to bytes in memory and uploaded; ``load`` reads bytes.
* For stores that ignore ``If-None-Match`` (some S3-compatible servers; fsspec backends other than s3 and
  memory emulate it with exists-then-write): the publisher re-reads CLAIM before committing and raises
  :class:`RegistryConflict` if another writer took it over, and ``load`` checks the sha256 that meta.json
  records for model.pt, so a mixed-up version fails loudly instead of serving wrong weights. On such stores run
  one publisher per registry.
* ``LATEST`` is one small object replaced by one PUT: readers see the old number or the new one.
* prune deletes ``meta.json`` first (the version vanishes for readers in one step), then the rest.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic_settings import SettingsConfigDict

from t2diff.config import Section
from t2diff.paths import fsync_path, runs_dir

log = logging.getLogger(__name__)

LATEST = "LATEST"
MODEL_FILE = "model.pt"
META_FILE = "meta.json"
CLAIM_FILE = "CLAIM"  # object stores only: who holds a version number

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_VERSION_DIR = re.compile(r"^v(\d+)$")
_ATOMIC_CREATE = {"s3", "s3a", "memory"}  # backends whose conditional create is atomic (memory: under a lock)
_MEMORY_LOCK = threading.Lock()  # fsspec's memory store is process-global; its "xb" is exists-then-write


class RegistryConflict(RuntimeError):
    """Another publisher holds the version number this one claimed (a store that ignores conditional writes)."""


class RegistrySettings(Section):
    """``registry`` section of the config file."""

    model_config = SettingsConfigDict(env_prefix="T2DIFF_REGISTRY__")

    root: str = ""  # "" = $T2DIFF_RUNS_DIR/registry; a directory, file://DIR, s3://bucket/prefix, memory://name
    keep: int = 0  # 0 = keep every version; else prune older ones beyond the newest `keep` (never LATEST)
    # fsspec options for URL roots, e.g. {"endpoint_url": "http://minio:9000", "key": ..., "secret": ...}
    # (s3fs also reads the usual AWS_* environment variables and credential files).
    storage_options: dict[str, Any] = {}

    def resolved_root(self) -> Path | str:
        """A local ``Path``, or the URL of an object-store root (str)."""
        return _local_or_url(self.root) if self.root else runs_dir() / "registry"


def _local_or_url(root: str | Path) -> Path | str:
    if isinstance(root, Path):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/[^/]", str(root)):  # Path("s3://b/x") == Path("s3:/b/x")
            raise ValueError(f"registry root {root!s} looks like a URL mangled by Path(): pass URLs as str")
        return root
    if root.startswith("file://"):
        return Path(root[len("file://"):])
    return root.rstrip("/") if _URL.match(root) else Path(root)


def _dirname(version: int) -> str:
    return f"v{int(version):06d}"


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, indent=1, default=_json_default).encode()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new content, never a torn file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        _write_synced(Path(tmp), text.encode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class _LocalStore:
    """A POSIX directory: versions appear by rename, LATEST by os.replace (module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def location(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def committed(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.root.iterdir()
                      if (m := _VERSION_DIR.match(p.name)) and p.is_dir() and (p / META_FILE).exists())

    def write_pointer(self, rel: str, text: str) -> None:
        write_atomic(self.root / rel, text)

    def commit(self, files: dict[str, bytes], body: dict[str, Any]) -> int:
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            for name, data in files.items():
                _write_synced(tmp / name, data)
            version = (self.committed() or [0])[-1] + 1
            while True:  # rename fails if another publisher took this number: take the next one
                body["version"] = version
                _write_synced(tmp / META_FILE, _dumps(body))
                try:
                    os.rename(tmp, self.root / _dirname(version))
                    break
                except OSError:
                    if not (self.root / _dirname(version)).exists():
                        raise
                    version += 1
            fsync_path(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def delete(self, version: int) -> None:
        # Rename first so a reader never sees a half-deleted version directory.
        trash = self.root / f".trash-{_dirname(version)}-{os.getpid()}"
        os.rename(self.root / _dirname(version), trash)
        shutil.rmtree(trash, ignore_errors=True)


class _FsspecStore:
    """An fsspec filesystem (S3, memory, ...): versions appear by their meta.json (module docstring)."""

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        import fsspec

        opts = dict(storage_options)
        protocol = url.split("://", 1)[0]
        if protocol in ("s3", "s3a"):
            opts.setdefault("use_listings_cache", False)  # other processes publish: never trust a cached listing
        try:
            self.fs, self.path = fsspec.core.url_to_fs(url, **opts)
        except (ImportError, ValueError) as e:
            raise ValueError(f"registry root {url}: cannot open it with fsspec ({e}); supported: a directory, "
                             "file://, s3:// (s3fs), memory://") from e
        self.url = url
        self.lock = _MEMORY_LOCK if protocol == "memory" else None
        if protocol not in _ATOMIC_CREATE:
            log.warning("registry %s: conditional create is not atomic on %s://; run one publisher per registry",
                        url, protocol)
        try:  # fail at start-up, not at the first publish: bucket missing, endpoint or credentials wrong
            self._listing()
        except Exception as e:
            raise RuntimeError(f"registry root {url} is not reachable: {type(e).__name__}: {e}") from e

    def _p(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def location(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(self._p(rel))

    def exists(self, rel: str) -> bool:
        self.fs.invalidate_cache(self.path)
        return self.fs.exists(self._p(rel))

    def _listing(self) -> tuple[set[int], set[int]]:
        """(numbers with any object, numbers with meta.json) from one recursive listing."""
        self.fs.invalidate_cache(self.path)
        seen: set[int] = set()
        done: set[int] = set()
        for key in self.fs.find(self.path):
            parts = key[len(self.path):].strip("/").split("/")
            if (m := _VERSION_DIR.match(parts[0])) is not None:
                seen.add(int(m.group(1)))
                if parts[1:] == [META_FILE]:
                    done.add(int(m.group(1)))
        return seen, done

    def committed(self) -> list[int]:
        return sorted(self._listing()[1])

    def write_pointer(self, rel: str, text: str) -> None:
        self.fs.pipe_file(self._p(rel), text.encode())  # one PUT: readers see old or new

    def _create(self, rel: str, data: bytes) -> None:
        """Write ``rel`` only if it does not exist (FileExistsError otherwise)."""
        with self.lock or contextlib.nullcontext():
            self.fs.pipe_file(self._p(rel), data, mode="create")

    def commit(self, files: dict[str, bytes], body: dict[str, Any]) -> int:
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        version = max(self._listing()[0] or {0}) + 1  # claimed numbers too: a dead publisher's stays taken
        while True:
            try:
                self._create(f"{_dirname(version)}/{CLAIM_FILE}", token.encode())
                break
            except FileExistsError:
                version += 1
        d = _dirname(version)
        try:
            for name, data in files.items():
                self.fs.pipe_file(self._p(f"{d}/{name}"), data)
            holder = self.read(f"{d}/{CLAIM_FILE}").decode()
            if holder != token:
                raise RegistryConflict(f"{self.location(d)} was claimed by {holder} too (the store ignored a "
                                       f"conditional write?); not committing it. Run one publisher per registry.")
        except RegistryConflict:
            raise  # the directory is not ours alone: leave it
        except BaseException:
            self._remove_quietly(d)
            raise
        body.update(version=version, writer=token)
        self._create(f"{d}/{META_FILE}", _dumps(body))  # the commit point
        return version

    def _remove_quietly(self, d: str) -> None:
        try:
            self.fs.rm(self._p(d), recursive=True)
        except Exception:  # noqa: BLE001 -- best effort; an invisible version without meta.json is harmless
            log.warning("registry %s: could not remove the failed upload %s", self.url, d, exc_info=True)

    def delete(self, version: int) -> None:
        d = _dirname(version)
        self.fs.rm_file(self._p(f"{d}/{META_FILE}"))  # the version disappears for readers here
        self._remove_quietly(d)


class ModelRegistry:
    """``root``: a local path (``Path`` or str), ``file://DIR``, or an fsspec URL (``s3://bucket/prefix``);
    default ``settings.root``. ``self.root`` is a ``Path`` for local roots and the URL (str) otherwise."""

    def __init__(self, root: str | Path | None = None, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.root: Path | str = _local_or_url(root) if root is not None else self.settings.resolved_root()
        self._store = (_LocalStore(self.root) if isinstance(self.root, Path)
                       else _FsspecStore(self.root, self.settings.storage_options))

    # ---- reading
    def versions(self) -> list[int]:
        """Committed versions (those whose meta.json exists), ascending."""
        return self._store.committed()

    def path(self, version: int) -> Path | str:
        """The version's directory: a ``Path`` for local roots, a URL otherwise."""
        return self._store.location(_dirname(version))

    def latest(self) -> int | None:
        """The version the ``LATEST`` pointer names, or None before the first publish."""
        try:
            text = self._store.read(LATEST).decode().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    def meta(self, version: int) -> dict[str, Any]:
        try:
            return json.loads(self._store.read(f"{_dirname(version)}/{META_FILE}"))
        except FileNotFoundError:
            raise KeyError(f"no version {version} in {self.root}") from None

    def read_file(self, version: int, name: str, meta: dict[str, Any] | None = None) -> bytes:
        """A file of a committed version, checked against the sha256 its meta.json records (if any)."""
        meta = self.meta(version) if meta is None else meta
        data = self._store.read(f"{_dirname(version)}/{name}")
        want = (meta.get("sha256") or {}).get(name)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise ValueError(f"{self._store.location(_dirname(version))}/{name}: sha256 differs from meta.json "
                             f"(overwritten by a racing publisher or corrupted); not loading it")
        return data

    def load(self, version: int | None = None, map_location: str = "cpu") -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(model, extra, meta) of ``version`` (default: latest)."""
        from t2diff.model import load_checkpoint

        if version is None:
            version = self.latest()
            if version is None:
                raise KeyError(f"registry {self.root} has no published version")
        meta = self.meta(version)
        data = self.read_file(version, MODEL_FILE, meta)
        model, extra = load_checkpoint(data, map_location=map_location,
                                       name=str(self._store.location(f"{_dirname(version)}/{MODEL_FILE}")))
        return model, extra, meta

    # ---- writing
    def publish(self, model: Any, extra: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                offsets: dict[str, Any] | None = None, set_latest: bool = True, files: dict[str, bytes] | None = None,
                **meta: Any) -> int:
        """Write a new immutable version; returns its number. ``meta`` keys (max_event_ts_ms, ...) go to
        meta.json. ``files``: extra small files (name -> bytes) stored in the version dir."""
        from t2diff.model.checkpoint import checkpoint_bytes

        t0 = time.perf_counter()
        bad = [n for n in files or {} if n in (MODEL_FILE, META_FILE, CLAIM_FILE) or "/" in n or n.startswith(".")]
        if bad:
            raise ValueError(f"extra file names {bad}: reserved or not a plain name")
        blobs = {MODEL_FILE: checkpoint_bytes(model, **(extra or {})), **(files or {})}
        cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
        body = {
            "created_at": time.time(),
            "metrics": metrics or {},
            "offsets": {str(k): v for k, v in (offsets or {}).items()},
            "model_config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
            **meta,
            "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()},
        }
        version = self._store.commit(blobs, body)
        if set_latest:
            self.set_latest(version)
        log.info("registry %s: published version %d in %.2fs", self.root, version, time.perf_counter() - t0)
        self.prune()
        return version

    def set_latest(self, version: int) -> None:
        """Point ``LATEST`` at an existing version (publish, rollback, roll forward)."""
        if not self._store.exists(f"{_dirname(version)}/{META_FILE}"):
            raise KeyError(f"no version {version} in {self.root}")
        self._store.write_pointer(LATEST, f"{int(version)}\n")

    def prune(self) -> list[int]:
        """Delete versions older than the newest ``keep`` (never the one LATEST names)."""
        if self.settings.keep <= 0:
            return []
        vs, cur = self.versions(), self.latest()
        doomed = [v for v in vs[: -self.settings.keep] if v != cur]
        for v in doomed:
            self._store.delete(v)
        return doomed


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
