"""Milvus Lite search cost against the number of queries per call (nq), 100k x 8 FLAT / IP, limit 70, beside
numpy exact search over the same vectors (benchmarks/serve.md, fourth session: why a 100k catalogue in Milvus
Lite cannot meet the serving latency goal on 2 cores). ``python benchmarks/scripts/milvus_lite_nq.py [DB]``"""
import sys
import time

import numpy as np
from pymilvus import DataType, MilvusClient


def main() -> int:
    c = MilvusClient(sys.argv[1] if len(sys.argv) > 1 else "/tmp/milvus_lite_nq.db")
    if c.has_collection("p"):
        c.drop_collection("p")
    sch = MilvusClient.create_schema(auto_id=False)
    sch.add_field("id", DataType.INT64, is_primary=True)
    sch.add_field("vec", DataType.FLOAT_VECTOR, dim=8)
    ip = c.prepare_index_params()
    ip.add_index("vec", index_type="FLAT", metric_type="IP")
    c.create_collection("p", schema=sch, index_params=ip)
    rng = np.random.default_rng(0)
    V = rng.standard_normal((100_000, 8)).astype(np.float32)
    for i in range(0, 100_000, 20_000):
        c.insert("p", [{"id": j, "vec": V[j].tolist()} for j in range(i, i + 20_000)])
    c.flush("p")  # a sealed segment: unflushed (growing) search is ~20x slower
    c.load_collection("p")
    for nq in (1, 4, 16, 32):
        ts = []
        for _ in range(12):
            q = rng.standard_normal((nq, 8)).astype(np.float32)
            t = time.perf_counter()
            c.search("p", data=q.tolist(), limit=70, anns_field="vec", output_fields=["id"])
            ts.append(time.perf_counter() - t)
        ms = np.median(np.array(ts[2:])) * 1000  # first two calls warm up
        t = time.perf_counter()
        s = q @ V.T
        np.argpartition(-s, 69, axis=1)[:, :70]
        tn = (time.perf_counter() - t) * 1000
        print(f"nq {nq}: Milvus Lite FLAT p50 {ms:.1f} ms ({ms / nq:.1f} ms/query); numpy exact {tn:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
