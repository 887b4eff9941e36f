"""``t2diff serve``, ``t2diff ab report``, ``t2diff bench serve``. Heavy imports stay inside handlers."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.app import load_settings, start

    if args.rollback is not None:
        return _rollback(args)
    import ray

    # Ray Serve's request-path optimisations (benchmarks/serve.md runs 5-6); read when Ray starts, so set before
    # ray.init; an explicit RAY_SERVE_THROUGHPUT_OPTIMIZED=0 in the environment wins.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # Ray before anything that may start the loopback Milvus server (see serving/bench.py).
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    config = args.config
    world = None
    if args.world:
        from serving.world import build_world

        world = build_world(Path(args.world), num_items=args.items, dataset=args.dataset,
                            model_path=Path(args.model) if args.model else None)
        config = world.config_path
    settings = load_settings(config, host=args.host, port=args.port)
    start(settings)
    print(f"T2Diff recall on http://{settings.host}:{settings.port}  (POST /recall, POST /feedback, GET /healthz, "
          f"GET /metrics, /docs); Ctrl-C stops", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        if world is not None:
            world.stop_index()
    return 0


def _rollback(args: argparse.Namespace) -> int:
    """Point the registry's LATEST (and the index alias) at an older version; encoders follow it within
    their poll interval, without a restart."""
    from t2diff.index import IndexSettings, ItemIndex
    from t2diff.registry import ModelRegistry, RegistrySettings

    reg = ModelRegistry(settings=RegistrySettings.load(args.config, key="registry"))
    before = reg.latest()
    reg.set_latest(args.rollback)
    idx = ItemIndex(settings=IndexSettings.load(args.config, key="index"))
    try:
        idx.set_live(args.rollback)
    finally:
        idx.close()
    print(f"registry LATEST {before} -> {args.rollback}; index alias -> version {args.rollback}")
    return 0


def _cmd_ab_report(args: argparse.Namespace) -> int:
    from serving import ab_report
    from serving.app import load_settings

    path = Path(args.log) if args.log else load_settings(args.config).feedback_path()
    df = ab_report.load(path)
    rep = ab_report.report(df, args.control)
    print(ab_report.format_table(rep))
    dl = ab_report.daily_lift(df, rep["control"], args.metric)
    out = Path(args.out) if args.out else path.parent
    if not dl.empty:
        png = ab_report.plot_daily(dl, out / f"ab_daily_lift_{args.metric}.png",
                                   {"evr": "EVR", "play_s": "play time", "follow_rate": "follow rate"}[args.metric])
        print(f"daily lift plot: {png}")
    if args.json:
        (out / "ab_report.json").write_text(json.dumps(rep, indent=1))
    return 0


def _cmd_bench_serve(args: argparse.Namespace) -> int:
    from serving import bench
    from serving.bench_report import markdown, plot
    from t2diff.paths import runs_dir

    root = Path(args.root) if args.root else runs_dir() / f"bench-serve-{time.strftime('%Y%m%d-%H%M%S')}"
    dataset = None if args.dataset == "synthetic" else args.dataset
    res = bench.run_bench(dataset, args.items, [float(r) for r in args.rates.split(",")], args.duration,
                          args.baseline_duration, args.swap_rate, args.swap_duration, args.steps, root,
                          model_path=Path(args.model) if args.model else None,
                          baseline_path=Path(args.baseline) if args.baseline else None, k=args.k,
                          index=args.index, topology=args.topology, compile_encoder=args.compile,
                          wait_ms=args.wait_ms, haproxy=args.haproxy, in_thread=not args.inline,
                          loadgen_gc=args.loadgen_gc, index_uri=args.index_uri, cputrace=not args.no_cputrace,
                          switch_interval_ms=args.switch_interval_ms, max_batch_size=args.max_batch_size,
                          threads=args.threads, gc_threshold=args.gc_threshold)
    cmd = "t2diff " + " ".join(sys.argv[1:]) if sys.argv and "bench" in sys.argv else "t2diff bench serve"
    md = markdown(res, cmd)
    print(md)
    (root / "result.json").write_text(json.dumps(res, indent=1))
    png = plot(res, root / "latency.png")
    print(f"results: {root / 'result.json'}; plot: {png}")
    if args.md:
        with open(args.md, "a") as f:
            f.write("\n" + md + f"\nPlot: `{png}`\n")
    ok = res["swap"]["errors"] == 0 and all(p["errors"] == 0 for p in res["phases"])
    return 0 if ok else 1


def register(groups) -> None:
    sv = groups.root.add_parser("serve", help="start the Ray Serve recall service locally")
    sv.add_argument("--config", default=None, help="config YAML (serving, features, registry, index sections)")
    sv.add_argument("--world", default=None, help="build a self-contained serving world in this dir and serve it")
    sv.add_argument("--dataset", default=None, help="with --world: ml-1m (real catalogue + histories)")
    sv.add_argument("--items", type=int, default=1000, help="with --world and no dataset: synthetic items")
    sv.add_argument("--model", default=None, help="with --world: a trained checkpoint to serve")
    sv.add_argument("--host", default=None)
    sv.add_argument("--port", type=int, default=None)
    sv.add_argument("--num-cpus", type=int, default=2)
    sv.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sv.add_argument("--rollback", type=int, default=None, metavar="VERSION",
                    help="point registry LATEST and the index alias at VERSION and exit")
    sv.set_defaults(func=_cmd_serve)

    ab = groups.group("ab", "A/B experiment tools").add_parser("report", help="per-arm engagement + lift")
    ab.add_argument("--log", default=None, help="feedback JSONL (default: the config's feedback_log)")
    ab.add_argument("--config", default=None)
    ab.add_argument("--control", default=None, help="control arm (default: 'control' or the first arm)")
    ab.add_argument("--metric", default="evr", choices=["evr", "play_s", "follow_rate"], help="for the daily plot")
    ab.add_argument("--out", default=None, help="dir for the PNG / JSON (default: next to the log)")
    ab.add_argument("--json", action="store_true")
    ab.set_defaults(func=_cmd_ab_report)

    b = groups.group("bench").add_parser("serve", help="load-test the recall service on loopback")
    b.add_argument("--dataset", default="ml-1m", help="ml-1m | synthetic")
    b.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size")
    b.add_argument("--rates", default="50,100,200")
    b.add_argument("--duration", type=float, default=60.0, help="seconds per treatment rate")
    b.add_argument("--baseline-duration", type=float, default=20.0, help="seconds per baseline rate")
    b.add_argument("--swap-rate", type=float, default=100.0)
    b.add_argument("--swap-duration", type=float, default=60.0,
                   help="seconds of load around the publish (long enough for a compiled version to go live)")
    b.add_argument("--steps", type=int, default=None, help="reverse diffusion steps (default: the model's T)")
    b.add_argument("--model", default=None, help="trained checkpoint (ml-1m) for the treatment arm")
    b.add_argument("--baseline", default=None, help="trained checkpoint for the control arm")
    b.add_argument("--k", type=int, default=20)
    b.add_argument("--index-uri", default=None,
                   help="a Milvus server (http://host:port) instead of the embedded Milvus Lite file")
    b.add_argument("--index", default="milvus", choices=["milvus", "exact"],
                   help="treatment's retriever: Milvus Lite, or exact search over the same version's vectors")
    b.add_argument("--topology", default="split", choices=["split", "fused", "local"],
                   help="split: Ingress -> UserEncoder + Retriever; fused: Ingress -> Recaller (one hop); "
                        "local: the Recaller inside the ingress replica (no hop)")
    b.add_argument("--compile", action="store_true", help="AOT-compile the whole user tower, run without the GIL (encoder_compile)")
    b.add_argument("--wait-ms", type=float, default=2.0, help="@serve.batch window of the encoder / recaller")
    b.add_argument("--max-batch-size", type=int, default=32,
                   help="encoder / recaller batch size (serving.batch.max_batch_size; 1 = no batch queue)")
    b.add_argument("--threads", type=int, default=0,
                   help="worker threads for the encoder / recaller batches (serving.batch.threads; 0 = asyncio's default)")
    b.add_argument("--gc-threshold", type=int, default=None,
                   help="young-generation GC threshold in the replicas (serving.gc_threshold; default 50000)")
    b.add_argument("--switch-interval-ms", type=float, default=None,
                   help="GIL switch interval in the replicas (serving.switch_interval_ms; default Python's 5 ms)")
    b.add_argument("--inline", action="store_true",
                   help="run the Recaller's batches on the event loop instead of a worker thread (batch.in_thread)")
    b.add_argument("--loadgen-gc", action="store_true",
                   help="keep the load generator's garbage collector on during phases (its pauses count as latency)")
    b.add_argument("--no-cputrace", action="store_true",
                   help="skip the per-second CPU trace of every process (serving/cputrace.py)")
    b.add_argument("--haproxy", action="store_true",
                   help="Ray Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1) instead of the Python proxy")
    b.add_argument("--root", default=None)
    b.add_argument("--md", default=None, help="append the markdown result to this file")
    b.set_defaults(func=_cmd_bench_serve)
