"""Where Milvus Lite's ~30 ms per search goes, and whether any setting removes it.

Measures, in one run, the median / p90 wall time of ``MilvusClient.search`` (limit 70, metric IP, 20+ timed
calls after 3 warm-up calls) over 100,000 x 8 float vectors, for these variants, each beside numpy exact search
(``q @ V.T`` + argpartition) timed the same way:

* consistency level given at create_collection (Strong / Bounded / Eventually) and per search call;
* output_fields ["id"] / [] / None;
* one 100k insert vs 20k batches; after flush, ``compact`` + wait;
* index type: FLAT, IVF_FLAT (nlist 128, nprobe 8/16), HNSW (M 16, ef 64/128), AUTOINDEX;
* the embedded ``MilvusClient("file.db")`` form vs the detached loopback server that t2diff/index.py starts
  (``ensure_lite_server``) vs calling the engine's ``Collection.search`` in-process (no gRPC, no pymilvus);
* catalogue size 10k / 30k / 100k (FLAT, nq 1) -- the per-call cost grows with rows, not with queries;
* a cProfile of the in-process engine search, showing which functions take the time.

Run: ``.venv/bin/python benchmarks/scripts/milvus_lite_latency.py [--calls N]`` (about 1-2 min on 2 cores;
databases go under /tmp/milvus_lite_latency/, removed first).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import time
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient

ROOT = Path("/tmp/milvus_lite_latency")
N, DIM, K = 100_000, 8, 70
RNG = np.random.default_rng(0)
V = RNG.standard_normal((N, DIM)).astype(np.float32)
CALLS = 25
ROWS: list[tuple] = []


def timed(fn, calls: int | None = None, warm: int = 3) -> tuple[float, float]:
    """(median ms, p90 ms) of ``fn()`` over ``calls`` calls after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(calls or CALLS):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts)), float(np.percentile(ts, 90))


def numpy_ms(nq: int, vecs: np.ndarray = V) -> float:
    q = RNG.standard_normal((nq, DIM)).astype(np.float32)
    return timed(lambda: np.argpartition(-(q @ vecs.T), K - 1, axis=1)[:, :K])[0]


def report(variant: str, nq: int, fn, vecs: np.ndarray = V) -> None:
    med, p90 = timed(fn)
    base = numpy_ms(nq, vecs)
    ROWS.append((variant, nq, med, p90, base))
    print(f"{variant:<58} nq {nq:>2}  median {med:7.2f} ms  p90 {p90:7.2f} ms  numpy {base:5.2f} ms", flush=True)


def build(c: MilvusClient, name: str, index_type: str = "FLAT", params: dict | None = None, n: int = N,
          batch: int = 20_000, consistency: str | None = None, compact: bool = False) -> None:
    """Create, insert (in ``batch`` rows), flush, index and load ``name`` as ItemIndex.publish does."""
    if c.has_collection(name):
        c.drop_collection(name)
    sch = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    sch.add_field("id", DataType.INT64, is_primary=True)
    sch.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    kw = {"consistency_level": consistency} if consistency else {}
    c.create_collection(name, schema=sch, **kw)
    for i in range(0, n, batch):
        c.insert(name, [{"id": j, "vec": v} for j, v in zip(range(i, min(i + batch, n)), V[i:i + batch])])
    c.flush(name)
    if compact:
        job = c.compact(name)
        while c.get_compaction_state(job) != "Completed":
            time.sleep(0.05)
    ip = c.prepare_index_params()
    ip.add_index("vec", index_type=index_type, metric_type="IP", params=params or {})
    c.create_index(name, ip, sync=False)  # Lite builds inside the call (see t2diff/index.py)
    c.load_collection(name)


def searcher(c: MilvusClient, name: str, nq: int, **kw):
    q = RNG.standard_normal((nq, DIM)).astype(np.float32).tolist()
    kw.setdefault("output_fields", ["id"])
    return lambda: c.search(name, data=q, limit=K, anns_field="vec", **kw)


def engine_collection(db_path: Path, name: str):
    """The milvus_lite Collection behind an embedded client (same process), to time search without gRPC."""
    from milvus_lite.server_manager import server_manager_instance
    _server, db, _port = server_manager_instance._servers[str(db_path.resolve())]  # noqa: SLF001
    return db.get_collection(name)


def main() -> int:
    global CALLS
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=CALLS)
    CALLS = ap.parse_args().calls
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    db = ROOT / "embedded.db"
    c = MilvusClient(str(db))

    # 1. baseline as the serving path builds it, nq sweep
    build(c, "flat")
    for nq in (1, 4, 16, 32):
        report("embedded FLAT, default consistency, batches 20k", nq, searcher(c, "flat", nq))

    # 2. consistency level, per call and at creation
    for lvl in ("Strong", "Bounded", "Session", "Eventually"):
        report(f"  search(consistency_level={lvl!r})", 1, searcher(c, "flat", 1, consistency_level=lvl))
    for lvl in ("Strong", "Bounded", "Eventually"):
        build(c, f"cl_{lvl}", consistency=lvl)
        got = c.describe_collection(f"cl_{lvl}").get("consistency_level_name")
        report(f"  create_collection(consistency_level={lvl!r}) [describe: {got}]", 1,
               searcher(c, f"cl_{lvl}", 1, consistency_level=lvl))

    # 3. output fields
    for of in ([], None):
        report(f"  output_fields={of!r}", 1, searcher(c, "flat", 1, output_fields=of))

    # 4. segments
    build(c, "one_insert", batch=N)
    report("  one 100k insert", 1, searcher(c, "one_insert", 1))
    build(c, "compacted", compact=True)
    report("  batches 20k + compact", 1, searcher(c, "compacted", 1))
    for name in ("flat", "one_insert", "compacted"):
        col = engine_collection(db, name)
        print(f"    {name}: {len(col._segment_cache)} sealed segment(s)")  # noqa: SLF001

    # 5. index types
    build(c, "ivf", "IVF_FLAT", {"nlist": 128})
    for nprobe in (8, 16):
        report(f"  IVF_FLAT nlist 128 nprobe {nprobe}", 1,
               searcher(c, "ivf", 1, search_params={"metric_type": "IP", "params": {"nprobe": nprobe}}))
    build(c, "hnsw", "HNSW", {"M": 16, "efConstruction": 200})
    for ef in (64, 128):
        report(f"  HNSW M 16 ef {ef}", 1,
               searcher(c, "hnsw", 1, search_params={"metric_type": "IP", "params": {"ef": ef}}))
    build(c, "auto", "AUTOINDEX")
    report("  AUTOINDEX", 1, searcher(c, "auto", 1))

    # 6. catalogue size
    for n in (10_000, 30_000):
        build(c, f"n{n}", n=n)
        report(f"  FLAT {n // 1000}k rows", 1, searcher(c, f"n{n}", 1), V[:n])

    # 7. engine in-process (no gRPC / pymilvus) and its profile
    col = engine_collection(db, "flat")
    for nq in (1, 32):
        q = RNG.standard_normal((nq, DIM)).astype(np.float32).tolist()
        report("engine Collection.search in-process (no gRPC)", nq,
               lambda q=q: col.search(q, top_k=K, metric_type="IP", output_fields=["id"]))
    q = RNG.standard_normal((1, DIM)).astype(np.float32).tolist()
    prof = cProfile.Profile()
    prof.runcall(lambda: [col.search(q, top_k=K, metric_type="IP", output_fields=["id"]) for _ in range(20)])
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    print("cProfile, 20 engine searches, 100k FLAT nq 1 (tottime order):")
    print("\n".join(ln for ln in out.getvalue().splitlines() if ln.strip())[-1500:])
    c.close()

    # 8. the detached loopback server t2diff/index.py uses (another process, its own GIL)
    from t2diff.index import ItemIndex
    from t2diff.lite_server import ensure_lite_server, stop_lite_server
    sdb = ROOT / "server.db"
    try:
        uri = ensure_lite_server(sdb)
        s = MilvusClient(uri=uri, grpc_options=dict(ItemIndex.LITE_GRPC_OPTIONS))
        build(s, "flat")
        for nq in (1, 32):
            report("loopback milvus-lite server (ensure_lite_server), FLAT", nq, searcher(s, "flat", nq))
        s.close()
    finally:
        stop_lite_server(sdb)

    print("\n| variant | nq | median ms | p90 ms | numpy ms |\n|---|---|---|---|---|")
    for v, nq, med, p90, base in ROWS:
        print(f"| {v.strip()} | {nq} | {med:.2f} | {p90:.2f} | {base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
