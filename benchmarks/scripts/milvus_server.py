"""A real Milvus server on loopback for benchmarks: Milvus standalone 2.3.5 (C++ engine, embedded etcd, local
storage) as PyPI's ``milvus`` package ships it (a 57 MB wheel with the server binary; it starts in ~7 s here).

It needs its own virtual environment (the package pins nothing the project uses, but keeps the server apart):
    python3 -m venv /tmp/milvus-venv && /tmp/milvus-venv/bin/pip install milvus==2.3.5
    /tmp/milvus-venv/bin/python benchmarks/scripts/milvus_server.py --dir /tmp/milvus-data --port 19531 &
then point the project at it: ``index.uri: http://127.0.0.1:19531`` in the config, or
``t2diff bench serve --index milvus --index-uri http://127.0.0.1:19531``. The project's pymilvus 3.0.2 client
publishes, aliases and searches against it unchanged (benchmarks/serve.md, run 25). Stops on SIGTERM / Ctrl-C.
"""
import argparse
import signal
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/milvus-data", help="data directory (a fresh one: no old collections)")
    ap.add_argument("--port", type=int, default=19531)
    a = ap.parse_args()
    from milvus import default_server

    default_server.set_base_dir(a.dir)
    default_server.listen_port = a.port
    t = time.perf_counter()
    default_server.start()
    print(f"Milvus listening on 127.0.0.1:{a.port} after {time.perf_counter() - t:.1f} s", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    default_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
