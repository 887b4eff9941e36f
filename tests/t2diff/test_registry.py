"""Model registry: immutable versions, atomic LATEST pointer, rollback, racing publishers, pruning -- on a local
directory, an fsspec memory:// root, and (integration) a real S3 API served by moto on loopback."""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from t2diff.model import ModelConfig, build_model
from t2diff.registry import CLAIM_FILE, META_FILE, MODEL_FILE, ModelRegistry, RegistryConflict, RegistrySettings


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="sasrec", num_items=20, num_tags=5, max_tags=2, seq_len=8, session_len=3)
    tags = torch.randint(0, 6, (21, 2))
    return build_model(cfg, tags)


def _outputs(model) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_items()


def _put(reg: ModelRegistry, rel: str, data: bytes) -> None:
    """Write an object/file under the registry root behind its back (a crashed or racing publisher)."""
    if isinstance(reg.root, Path):
        (reg.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (reg.root / rel).write_bytes(data)
    else:
        fs, path = fsspec.core.url_to_fs(reg.root, **reg.settings.storage_options)
        fs.pipe_file(f"{path}/{rel}", data)


def _names(reg: ModelRegistry) -> set[str]:
    """Every file under the root, relative to it."""
    if isinstance(reg.root, Path):
        return {str(p.relative_to(reg.root)) for p in reg.root.rglob("*") if p.is_file()}
    fs, path = fsspec.core.url_to_fs(reg.root, **reg.settings.storage_options)
    fs.invalidate_cache(path)
    return {k[len(path):].strip("/") for k in fs.find(path)}


@pytest.fixture(params=["local", "memory"])
def make_reg(request, tmp_path):
    """make_reg(settings=None) -> a registry on a fresh local directory or a fresh memory:// root."""
    url = f"memory://reg-{uuid.uuid4().hex}"
    root = tmp_path / "reg" if request.param == "local" else url

    def make(settings: RegistrySettings | None = None) -> ModelRegistry:
        return ModelRegistry(root, settings)

    yield make
    mem = fsspec.filesystem("memory")
    if mem.exists(url):
        mem.rm(url, recursive=True)


# ---- behaviour, the same on every backend

def check_publish_load_and_rollback(reg: ModelRegistry) -> None:
    assert reg.latest() is None and reg.versions() == []
    with pytest.raises(KeyError):
        reg.load()
    m1, m2 = _model(1), _model(2)
    v1 = reg.publish(m1, extra={"catalog": {"a": 1}}, metrics={"recall@20": 0.1}, offsets={0: 5, 1: 7},
                     max_event_ts_ms=123, files={"notes.txt": b"hello"})
    v2 = reg.publish(m2, extra={"catalog": {"a": 2}}, metrics={"recall@20": 0.2}, offsets={0: 9, 1: 9})
    assert (v1, v2) == (1, 2) and reg.latest() == 2 and reg.versions() == [1, 2]
    meta = reg.meta(1)
    assert meta["offsets"] == {"0": 5, "1": 7} and meta["max_event_ts_ms"] == 123
    assert meta["metrics"]["recall@20"] == 0.1 and meta["model_config"]["arch"] == "sasrec"
    assert set(meta["sha256"]) == {MODEL_FILE, "notes.txt"} and reg.read_file(1, "notes.txt") == b"hello"
    model, extra, meta2 = reg.load()
    assert extra["catalog"] == {"a": 2} and meta2["version"] == 2
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(_outputs(model), _outputs(m2))
    reg.set_latest(1)  # rollback
    assert reg.latest() == 1
    assert reg.load()[1]["catalog"] == {"a": 1}
    assert torch.equal(_outputs(reg.load()[0]), _outputs(m1))
    with pytest.raises(KeyError):
        reg.set_latest(99)
    with pytest.raises(KeyError):
        reg.meta(99)
    # a second handle on the same root (another process) sees the same state
    again = ModelRegistry(reg.root, reg.settings)
    assert again.versions() == [1, 2] and again.latest() == 1


def test_publish_load_and_rollback(make_reg):
    reg = make_reg()
    check_publish_load_and_rollback(reg)
    if isinstance(reg.root, Path):
        assert not [p for p in reg.root.iterdir() if p.name.startswith(".tmp")]


def check_racing_publishers(regs: list[ModelRegistry]) -> None:
    """Each thread has its own registry handle (as separate processes would)."""
    m = _model()
    got: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(regs))

    def run(i: int) -> None:
        try:
            start.wait()
            got.append(regs[i].publish(m, metrics={"i": i}))
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(regs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    reg = regs[0]
    assert sorted(got) == list(range(1, len(regs) + 1)) == reg.versions()
    # each version holds the meta its publisher wrote (no overwrites), and its model.pt matches it
    assert sorted(reg.meta(v)["metrics"]["i"] for v in got) == list(range(len(regs)))
    assert all(reg.meta(v)["version"] == v for v in got)
    for v in got:
        reg.load(v)


def test_racing_publishers_get_distinct_versions(make_reg):
    check_racing_publishers([make_reg() for _ in range(4)])


def check_prune_keeps_latest(reg: ModelRegistry) -> None:
    assert reg.settings.keep == 2
    m = _model()
    for _ in range(2):
        reg.publish(m)
    reg.set_latest(1)  # rolled back: 1 must survive pruning
    reg.publish(m, set_latest=False)
    reg.publish(m, set_latest=False)
    assert reg.versions() == [1, 3, 4] and reg.latest() == 1
    assert reg.meta(1)["version"] == 1 and reg.load(1)[2]["version"] == 1
    assert not [n for n in _names(reg) if n.startswith("v000002")]  # nothing of 2 is left behind
    with pytest.raises(KeyError):
        reg.set_latest(2)


def test_prune_keeps_latest(make_reg):
    check_prune_keeps_latest(make_reg(RegistrySettings(keep=2)))


def check_incomplete_version_is_invisible(reg: ModelRegistry) -> None:
    """A publisher died after uploading model.pt but before meta.json: readers never see that version, and the
    next publish does not reuse (or clobber) its number."""
    v1 = reg.publish(_model(1))
    _put(reg, f"v000002/{MODEL_FILE}", b"half a checkpoint")
    assert reg.versions() == [v1] and reg.latest() == v1
    with pytest.raises(KeyError):
        reg.meta(2)
    with pytest.raises(KeyError):
        reg.set_latest(2)
    v3 = reg.publish(_model(3))
    assert v3 == 3 and reg.versions() == [1, 3] and reg.latest() == 3
    assert torch.equal(_outputs(reg.load()[0]), _outputs(_model(3)))


def test_incomplete_version_is_invisible(make_reg):
    check_incomplete_version_is_invisible(make_reg())


def test_overwritten_model_fails_loudly(make_reg):
    """meta.json records model.pt's sha256: a version whose weights were replaced is refused, not served."""
    reg = make_reg()
    reg.publish(_model(1))
    two = ModelRegistry(reg.root, reg.settings)
    two.publish(_model(2), set_latest=False)
    _put(reg, f"v000001/{MODEL_FILE}", reg.read_file(2, MODEL_FILE))  # a racing writer's bytes
    with pytest.raises(ValueError, match="sha256"):
        reg.load(1)
    assert reg.load(2)[2]["version"] == 2


def test_extra_file_names_are_checked(make_reg):
    reg = make_reg()
    for bad in (MODEL_FILE, META_FILE, CLAIM_FILE, "a/b", ".hidden"):
        with pytest.raises(ValueError):
            reg.publish(_model(), files={bad: b"x"})
    assert reg.versions() == []


# ---- roots and settings

def test_roots(tmp_path):
    reg = ModelRegistry(f"file://{tmp_path}/reg")
    assert reg.root == tmp_path / "reg" and reg.path(3) == tmp_path / "reg" / "v000003"
    assert RegistrySettings(root="memory://x/").resolved_root() == "memory://x"
    assert RegistrySettings(root=str(tmp_path)).resolved_root() == tmp_path
    assert ModelRegistry("memory://paths").path(3) == "memory://paths/v000003"
    with pytest.raises(ValueError, match="mangled"):
        ModelRegistry(Path("s3://bucket/reg"))
    with pytest.raises(ValueError, match="cannot open"):
        ModelRegistry("nosuchproto://x/y")
    s = RegistrySettings(root="s3://b/p", storage_options={"endpoint_url": "http://127.0.0.1:1"})
    assert s.storage_options["endpoint_url"].endswith(":1")
    with pytest.raises(Exception):
        RegistrySettings(endpoint="x")  # extra="forbid"


# ---- a real S3 API (moto's server on loopback; s3fs speaks HTTP to it)

@pytest.fixture(scope="module")
def moto_s3():
    """Storage options for s3fs against a ThreadedMotoServer on a free loopback port, bucket "bkt"."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    opts = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
    fs.mkdir("bkt")
    yield opts
    server.stop()


@pytest.fixture
def s3_reg(moto_s3):
    prefix = f"s3://bkt/reg-{uuid.uuid4().hex[:8]}"

    def make(keep: int = 0) -> ModelRegistry:
        return ModelRegistry(settings=RegistrySettings(root=prefix, keep=keep, storage_options=moto_s3))

    return make


@pytest.mark.integration
def test_s3_conditional_create_is_honoured(moto_s3):
    """What version allocation relies on: S3 PUT with If-None-Match: * (s3fs mode="create") fails when the key
    exists, and s3fs turns the 412 into FileExistsError."""
    fs = fsspec.filesystem("s3", **moto_s3)
    key = f"bkt/probe-{uuid.uuid4().hex}"
    fs.pipe_file(key, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(key, b"second", mode="create")
    assert fs.cat_file(key) == b"first"


@pytest.mark.integration
def test_s3_publish_load_rollback(s3_reg):
    reg = s3_reg()
    assert isinstance(reg.root, str) and reg.path(1).startswith("s3://bkt/reg-")
    check_publish_load_and_rollback(reg)
    assert {CLAIM_FILE, META_FILE, MODEL_FILE, "notes.txt"} == {n.split("/")[1] for n in _names(reg)
                                                                if n.startswith("v000001/")}


@pytest.mark.integration
def test_s3_incomplete_version_is_invisible(s3_reg):
    check_incomplete_version_is_invisible(s3_reg())


@pytest.mark.integration
def test_s3_racing_publishers_get_distinct_versions(s3_reg):
    check_racing_publishers([s3_reg() for _ in range(4)])


@pytest.mark.integration
def test_s3_stale_number_is_refused_by_the_store(s3_reg, monkeypatch):
    """Force the race deterministically: a publisher whose listing is stale tries a number another one holds;
    the store's conditional create (not the listing) sends it to the next number."""
    a, b = s3_reg(), s3_reg()
    a.publish(_model(1))
    monkeypatch.setattr(type(b._store), "_listing", lambda self: (set(), set()))  # sees an empty registry
    assert b.publish(_model(2)) == 2
    monkeypatch.undo()
    assert a.versions() == [1, 2] and a.meta(1)["writer"] != a.meta(2)["writer"]
    assert torch.equal(_outputs(a.load(1)[0]), _outputs(_model(1)))


@pytest.mark.integration
def test_s3_claim_taken_over_is_detected(s3_reg, monkeypatch):
    """A store that ignored If-None-Match let another writer take our number: do not commit the version."""
    reg = s3_reg()
    real_put = reg._store.fs.pipe_file  # s3fs binds its sync methods per instance

    def put(path, data, mode="overwrite", **kw):
        real_put(path, data, mode=mode, **kw)
        if path.endswith(f"/{MODEL_FILE}"):  # meanwhile, someone overwrote the claim
            real_put(path.rsplit("/", 1)[0] + f"/{CLAIM_FILE}", b"other-writer")

    monkeypatch.setattr(reg._store.fs, "pipe_file", put)
    with pytest.raises(RegistryConflict):
        reg.publish(_model())
    monkeypatch.undo()
    assert reg.versions() == []


@pytest.mark.integration
def test_s3_prune(s3_reg):
    check_prune_keeps_latest(s3_reg(keep=2))


@pytest.mark.integration
def test_s3_missing_bucket_fails_at_start(moto_s3):
    with pytest.raises(RuntimeError, match="not reachable"):
        ModelRegistry(settings=RegistrySettings(root="s3://no-such-bucket/reg", storage_options=moto_s3))


@pytest.mark.integration
def test_stream_trainer_publishes_to_s3(s3_reg, tmp_path):
    """trainer.online: StreamTrainer -> Publisher -> registry on S3; the published version loads and matches."""
    from streaming.local_log import LocalEventLog
    from streaming.settings import StreamSettings
    from trainer.online.loop import StreamTrainer
    from trainer.online.settings import OnlineTrainerSettings
    from trainer.online.synthetic import produce, synthetic_catalog, synthetic_events, tiny_config

    reg = s3_reg()
    stream = StreamSettings(log_dir=tmp_path / "log", partitions=2, known_items="any", known_users="any")
    el = LocalEventLog(stream.resolved_log_dir(), partitions=2)
    cat = synthetic_catalog(30, num_tags=6)
    torch.manual_seed(0)
    model = build_model(tiny_config(cat), torch.from_numpy(cat.tags))
    produce(el, stream.topic, synthetic_events(200, 10, np.asarray(cat.raw_ids), seed=3))
    el.flush()
    s = OnlineTrainerSettings(work_dir=tmp_path / "work", cold_tags="none", batch_size=64, poll_max=300,
                              idle_exit_s=0.3, poll_timeout_s=0.05, log_every_s=60, threads=1, window=500,
                              publish_index=False, publish_every_events=100, publish_every_s=1e9)
    tr = StreamTrainer(s, stream, reg.settings, event_log=el, init=(model, cat))
    try:
        res = tr.run()
        assert res["stats"]["published"] >= 1 and not tr.publisher.failures
        v = reg.latest()
        assert v is not None and v == reg.versions()[-1]
        loaded, extra, meta = reg.load(v)
        assert meta["offsets"] == {str(p): o for p, o in tr.offsets.items()}
        assert extra["catalog"]["raw_ids"] == list(cat.raw_ids)
        assert torch.equal(_outputs(loaded), _outputs(tr.model.cpu()))
    finally:
        tr.close()
        el.close()
