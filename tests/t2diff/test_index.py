"""Milvus Lite item index: exact round trip, atomic version switch under concurrent reads, grace/rollback,
and two processes sharing one db through the loopback server; the same against a real Milvus server."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from t2diff.index import ItemIndex, IndexSettings, rows_per_insert
from t2diff.lite_server import stop_lite_server


@pytest.fixture
def index(tmp_path):
    idx = ItemIndex(str(tmp_path / "items.db"), shared=False, grace_s=3600, keep=2)
    yield idx
    idx.close()


def test_round_trip_matches_torch_inner_product(index):
    g = torch.Generator().manual_seed(0)
    vecs = torch.randn(3000, 8, generator=g)  # (N, D)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11  # raw ids are not row numbers
    index.publish(1, ids, vecs)
    q = torch.randn(6, 8, generator=g)  # (B, D)
    got = index.search(q, k=20)
    scores = q @ vecs.T  # (B, N) the reference ranking
    top = torch.topk(scores, 23, dim=1)
    for b in range(6):
        assert [r for r, _ in got[b]] == ids[top.indices[b, :20].numpy()].tolist()
        np.testing.assert_allclose([s for _, s in got[b]], top.values[b, :20].numpy(), rtol=1e-4, atol=1e-4)
    # exclusions drop exactly the listed ids and still return k
    ex = [ids[top.indices[b, :3].numpy()].tolist() for b in range(6)]
    got_ex = index.search(q, k=20, exclude=ex)
    for b in range(6):
        assert [r for r, _ in got_ex[b]] == ids[top.indices[b, 3:23].numpy()].tolist()
        assert index.search(q[b], k=20, exclude=[ex[b]]) == [got_ex[b]]  # one query alone: the same
    # a long exclusion list (a full history) still returns k, none of them excluded
    many = ids[top.indices[0, :60].numpy()].tolist()
    one = index.search(q[0], k=20, exclude=[many])[0]
    assert len(one) == 20 and not set(r for r, _ in one) & set(many)
    assert [r for r, _ in one] == [r for r, _ in index.search(q[:1], k=80)[0] if r not in set(many)][:20]
    assert index.live_version() == 1 and index.count() == 3000


def test_insert_batches_are_bounded_by_bytes(tmp_path, monkeypatch):
    # one row is an int64 id + dim float32s; a budget below one row still sends one row per RPC
    assert rows_per_insert(8, 262_144) == 262_144 // 40
    assert rows_per_insert(64, 262_144) == 262_144 // 264
    assert rows_per_insert(64, 1) == 1
    idx = ItemIndex(str(tmp_path / "items.db"), shared=False, insert_batch_bytes=40 * 300)  # 300 rows at dim 8
    sizes = []
    real_insert = idx.client.insert

    def counting_insert(name, rows, **kw):
        sizes.append(len(rows))
        return real_insert(name, rows, **kw)

    monkeypatch.setattr(idx.client, "insert", counting_insert)
    vecs = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    ids = np.arange(1000, dtype=np.int64) + 5
    try:
        idx.publish(1, ids, vecs)
        data_batches = [n for n in sizes if n != 1]  # the live-pointer row is a one-row insert of its own
        assert data_batches == [300, 300, 300, 100]
        assert idx.count() == 1000
        got = idx.search(vecs[:3], k=5)
        want = np.argsort(-(vecs[:3] @ vecs.T), axis=1)[:, :5] + 5
        assert [[r for r, _ in g] for g in got] == want.tolist()
    finally:
        idx.close()
    with pytest.raises(ValueError):
        IndexSettings(insert_batch_bytes=0)


def test_rejects_bad_input(index):
    with pytest.raises(ValueError):
        index.publish(1, [1, 1], np.zeros((2, 4)))
    with pytest.raises(ValueError):
        index.publish(1, [1, 2], np.full((2, 4), np.nan))
    with pytest.raises(ValueError):
        index.publish(1, [1, 2, 3], np.zeros((2, 4)))
    index.publish(1, [1, 2], np.eye(2, 4))
    with pytest.raises(ValueError):  # the live version is immutable
        index.publish(1, [1, 2], np.eye(2, 4))


def _version_vectors(v: int, n: int) -> np.ndarray:
    # Every item of version v scores v + tiny item offset for query e_0: a mixed or partial read is visible.
    x = np.zeros((n, 4), dtype=np.float32)
    x[:, 0] = v + np.arange(n) * 1e-4
    return x


def _read_live(reader: ItemIndex, k: int, seen: list, errors: list, stop: threading.Event) -> None:
    """Search the live version for e_0 until ``stop``: (hits, {versions seen in them}) per read."""
    q = np.array([[1.0, 0, 0, 0]], dtype=np.float32)
    while not stop.is_set():
        try:
            hits = reader.search(q, k=k)[0]
        except Exception as e:  # noqa: BLE001 -- any failure during a switch is a test failure
            errors.append(repr(e))
            return
        seen.append((len(hits), {int(round(s)) for _, s in hits}))


def _until_seen(seen: list, errors: list, version: int, min_reads: int, timeout_s: float = 30.0) -> None:
    """Let the reader run until it has made more than ``min_reads`` reads and its latest returned ``version`` (or
    it failed, or time ran out): a fixed sleep raced the reader on a loaded machine (a search against the server
    can outlast it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not errors and not (len(seen) > min_reads and version in seen[-1][1]):
        time.sleep(0.05)


def test_alias_switch_is_atomic_under_concurrent_reads(tmp_path):
    uri = str(tmp_path / "items.db")
    writer = ItemIndex(uri, shared=False, grace_s=3600, keep=10)
    n, k = 400, 50
    writer.publish(1, np.arange(n), _version_vectors(1, n))
    reader = ItemIndex(uri, shared=False)  # separate client, same in-process server
    seen, errors, stop = [], [], threading.Event()
    t = threading.Thread(target=_read_live, args=(reader, k, seen, errors, stop))
    t.start()
    for v in range(2, 6):
        writer.publish(v, np.arange(n), _version_vectors(v, n))
    _until_seen(seen, errors, 5, min_reads=10)
    stop.set()
    t.join(10)
    writer.close()
    reader.close()
    assert not errors
    assert len(seen) > 10
    assert all(cnt == k and len(vs) == 1 for cnt, vs in seen), "a read saw a partial or mixed index"
    order = [next(iter(vs)) for _, vs in seen]
    assert order == sorted(order), "versions went backwards"
    assert order[-1] == 5


def test_grace_period_keep_and_rollback(tmp_path):
    idx = ItemIndex(str(tmp_path / "items.db"), shared=False, grace_s=100, keep=1)
    for v in (1, 2, 3):
        idx.publish(v, np.arange(10), _version_vectors(v, 10))
    assert idx.versions() == [1, 2, 3]  # retired ones within their grace period stay searchable
    assert round(idx.search(np.array([1.0, 0, 0, 0]), 1, version=1)[0][0][1]) == 1
    idx.set_live(2)  # rollback
    assert idx.live_version() == 2
    assert round(idx.search(np.array([1.0, 0, 0, 0]), 1)[0][0][1]) == 2
    dropped = idx.drop_expired(now=time.time() + 101)
    assert dropped == ["t2diff_items_v000001"]  # 2 is live, 3 is the newest (keep=1)
    assert idx.versions() == [2, 3]
    with pytest.raises(KeyError):
        idx.set_live(1)
    for _ in range(6):  # Milvus Lite keeps the live pointer as rows; old ones are pruned, the newest wins
        idx.set_live(3)
        idx.set_live(2)
    assert idx.live_version() == 2
    rows = idx.client.query(idx.settings.alias, filter="id >= 0", output_fields=["id"])
    assert 0 < len(rows) <= ItemIndex.POINTER_ROWS
    idx.close()


def test_settings_forbid_unknown_keys():
    with pytest.raises(Exception):
        IndexSettings(index_typ="FLAT")


WRITER = """
import numpy as np, sys
from t2diff.index import ItemIndex
idx = ItemIndex(sys.argv[1], shared=True)
idx.publish(int(sys.argv[2]), np.arange(100), np.eye(100, 8, dtype=np.float32) * float(sys.argv[2]))
print("ok", idx.uri)
"""


@pytest.mark.integration
def test_two_processes_share_one_lite_db(tmp_path):
    db = tmp_path / "shared.db"
    try:
        reader = ItemIndex(str(db), shared=True)  # starts the loopback server
        assert reader.live_version() is None
        out = subprocess.run([sys.executable, "-c", WRITER, str(db), "7"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert reader.uri in out.stdout  # the writer found the running server instead of opening the file
        assert reader.live_version() == 7
        hits = reader.search(np.eye(1, 8, dtype=np.float32), 1)[0]
        assert hits[0][0] == 0 and hits[0][1] == pytest.approx(7.0)
        reader.close()
    finally:
        assert stop_lite_server(db)


@pytest.mark.integration
@pytest.mark.slow
def test_lite_connections_survive_idling(tmp_path):
    """A process that idles (a trainer between publishes, a serving replica at night) must find the shared
    Milvus Lite server again. With pymilvus' default 10 s keepalive pings the Lite server answered GOAWAY
    "too_many_pings" after ~90 s idle and the next client for that address failed with "Fail connecting to
    server" (the serving app tests' publish during a version swap failed this way)."""
    db = tmp_path / "items.db"
    try:
        a = ItemIndex(str(db))
        a.publish(1, np.arange(10), _version_vectors(1, 10))
        time.sleep(100)
        b = ItemIndex(str(db))  # a second client in the same process shares a's connection
        b.publish(2, np.arange(10), _version_vectors(2, 10))
        assert a.live_version() == 2 and b.versions() == [1, 2]
        assert round(a.search(np.array([1.0, 0, 0, 0]), 1)[0][0][1]) == 2
    finally:
        stop_lite_server(db)


@pytest.mark.integration
def test_milvus_server_round_trip_atomic_switch_and_rollback(milvus_server_uri):
    """The same index code against a real Milvus server (``index.uri: http://...``): exact top-k against torch,
    exclusions, version switches never seen partial by a concurrent reader, rollback and expiry."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:8]}"  # the session's server is shared: a namespace per test
    idx = ItemIndex(milvus_server_uri, collection_prefix=prefix, alias=f"{prefix}_live", grace_s=100, keep=1)
    assert not idx.lite and idx.versions() == []
    g = torch.Generator().manual_seed(0)
    vecs = torch.randn(3000, 8, generator=g)  # (N, D)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11
    idx.publish(1, ids, vecs)
    q = torch.randn(6, 8, generator=g)
    top = torch.topk(q @ vecs.T, 23, dim=1)
    got = idx.search(q, k=20)
    ex = [ids[top.indices[b, :3].numpy()].tolist() for b in range(6)]
    got_ex = idx.search(q, k=20, exclude=ex)
    for b in range(6):
        assert [r for r, _ in got[b]] == ids[top.indices[b, :20].numpy()].tolist()
        np.testing.assert_allclose([s for _, s in got[b]], top.values[b, :20].numpy(), rtol=1e-4, atol=1e-4)
        assert [r for r, _ in got_ex[b]] == ids[top.indices[b, 3:23].numpy()].tolist()
        assert idx.search(q[b], k=20, exclude=[ex[b]]) == [got_ex[b]]  # one query alone: the same
    assert idx.live_version() == 1 and idx.count() == 3000

    n, k = 400, 50
    reader = ItemIndex(milvus_server_uri, collection_prefix=prefix, alias=f"{prefix}_live")
    seen, errors, stop = [], [], threading.Event()
    idx.publish(2, np.arange(n), _version_vectors(2, n))  # another dimension: a new collection, not a mutation
    t = threading.Thread(target=_read_live, args=(reader, k, seen, errors, stop))
    t.start()
    for v in (3, 4):
        idx.publish(v, np.arange(n), _version_vectors(v, n))
    _until_seen(seen, errors, 4, min_reads=5)
    stop.set()
    t.join(30)
    assert not errors and len(seen) > 5
    assert all(cnt == k and len(vs) == 1 for cnt, vs in seen), "a read saw a partial or mixed index"
    order = [next(iter(vs)) for _, vs in seen]
    assert order == sorted(order) and order[-1] == 4
    idx.set_live(3)  # rollback
    assert reader.live_version() == 3
    assert round(reader.search(np.array([1.0, 0, 0, 0]), 1)[0][0][1]) == 3
    dropped = idx.drop_expired(now=time.time() + 101)
    assert set(dropped) == {f"{prefix}_v000001", f"{prefix}_v000002"}  # 3 is live, 4 the newest (keep=1)
    assert idx.versions() == [3, 4]
    reader.close()
    idx.close()
