"""``t2diff train stream``, ``t2diff registry list|rollback``, ``t2diff index serve|stop`` and
``t2diff bench trainer {throughput,index,freshness,prequential}``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

BENCH_MD = Path("benchmarks/trainer.md")


def _sections(args: argparse.Namespace):
    from streaming.settings import StreamSettings
    from t2diff.index import IndexSettings
    from t2diff.registry import RegistrySettings
    from trainer.online.settings import OnlineTrainerSettings

    over = {k: getattr(args, k, None) for k in ("init_checkpoint", "device", "max_events", "idle_exit_s",
                                                 "metrics_port", "work_dir", "group", "dataset", "arch")}
    if getattr(args, "compare_frozen", False):
        over["compare_frozen"] = True
    return (OnlineTrainerSettings.load(args.config, key="online_trainer", **over),
            StreamSettings.load(args.config, key="stream"), RegistrySettings.load(args.config, key="registry"),
            IndexSettings.load(args.config, key="index"))


def _cmd_train_stream(args: argparse.Namespace) -> int:
    from trainer.online.loop import StreamTrainer

    s, st, reg, idx = _sections(args)
    if args.no_index:
        s = s.model_copy(update={"publish_index": False})
    tr = StreamTrainer(s, st, reg, idx)
    try:
        res = tr.run()
    finally:
        tr.close()
    log.info("done: %d records in %.1fs (%.0f/s); prequential %s", res["records"], res["wall_s"],
             res["records_per_s"], {k: round(v, 4) for k, v in res["prequential"].get("online", {}).items()})
    return 0


def _cmd_registry(args: argparse.Namespace) -> int:
    from t2diff.index import IndexSettings, ItemIndex
    from t2diff.registry import ModelRegistry, RegistrySettings

    reg = ModelRegistry(settings=RegistrySettings.load(args.config, key="registry"))
    if args.registry_cmd == "list":
        cur = reg.latest()
        for v in reg.versions():
            m = reg.meta(v)
            r20 = (m.get("metrics", {}).get("online") or {}).get("recall@20")
            print(f"{'*' if v == cur else ' '} {v:6d}  created {m['created_at']:.0f}  records {m.get('records')}  "
                  f"max_event_ts_ms {m.get('max_event_ts_ms')}  prequential R@20 {r20}")
        return 0
    # rollback: index alias first (what serving follows), then LATEST
    if not args.registry_only:
        idx = ItemIndex(settings=IndexSettings.load(args.config, key="index"))
        idx.set_live(args.version)
        idx.close()
    reg.set_latest(args.version)
    print(f"live version: {args.version}")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from t2diff.index import IndexSettings
    from t2diff.lite_server import ensure_lite_server, stop_lite_server

    s = IndexSettings.load(args.config, key="index")
    if args.index_cmd == "serve":
        print(ensure_lite_server(s.resolved_uri(), s.server_start_timeout_s))
    else:
        print("stopped" if stop_lite_server(s.resolved_uri()) else "no server was running")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from trainer.online import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else bench.default_out()
    md = Path(args.md)
    what = args.what
    steps = _eval_steps(args.eval_steps)
    if what == "throughput":
        rows = []
        for pq in ([True, False] if args.both else [not args.no_prequential]):
            # the step count only matters when scoring; without it one row per worker count
            for n_steps in (steps if pq else [None]):
                for workers in [int(w) for w in str(args.decode_workers).split(",")]:
                    r = bench.bench_throughput(args.events, args.items, args.users, args.device, args.batch_size,
                                               args.poll_max, pq, args.arch, out, decode_workers=workers,
                                               eval_num_steps=n_steps)
                    rows.append(r)
                    print(bench.to_json(r))
        body = (f"device: {rows[0]['device']}  \n\n| arch | prequential | scoring steps | decode workers | items | "
                "events | batch | wall s | end-to-end events/s | model-only samples/s |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            body += (f"| {r['arch']} | {r['prequential']} | {r['eval_steps'] if r['prequential'] else '-'} | "
                     f"{r['decode_workers']} | {r['items']} | {r['events']} | {r['batch_size']} | {r['wall_s']:.1f} | "
                     f"{r['e2e_events_per_s']:.0f} | {r['model_only_samples_per_s']:.0f} |\n")
        bench.write_section(md, f"Streaming training throughput ({rows[0]['device']})", body)
    elif what == "index":
        rows = bench.bench_index(args.items, args.dim, args.queries, args.index_types, out)
        body = (f"{args.items} vectors x {args.dim} dims, {args.queries} single-vector queries, k=100, CPU\n\n"
                "| index | upsert s (insert+flush+index+load+alias) | search p50 ms | p99 ms | recall@100 vs exact |\n"
                "|---|---|---|---|---|\n")
        for r in rows:
            up = f"{r['upsert_s']:.2f}" if r["upsert_s"] is not None else "-"
            body += f"| {r['index']} | {up} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['recall@100']:.3f} |\n"
        print(body)
        bench.write_section(md, "Milvus Lite upsert and search", body)
    elif what == "freshness":
        r = bench.bench_freshness(args.seconds, args.rate, args.publish_every_s, args.items, args.device, out)
        print(bench.to_json(r))
        body = (f"producer {r['rate']:.0f} events/s for {r['seconds']:.0f}s ({r['produced']} events), publish every "
                f"{r['publish_every_s']}s, {r['items']} items (registry + Milvus Lite FLAT), {r['versions']} versions\n\n"
                f"| events measured | p50 s | p99 s | max s | mean publish s |\n|---|---|---|---|---|\n"
                f"| {r['events_measured']} | {r['p50_s']:.1f} | {r['p99_s']:.1f} | {r['max_s']:.1f} | "
                f"{(r['publish_s_mean'] or float('nan')):.2f} |\n")
        bench.write_section(md, "Event time -> searchable in Milvus", body)
    else:
        r = bench.bench_prequential(args.pretrain_days, args.epochs, args.device, args.arch, out,
                                    replay_ratio=args.replay_ratio, limit=args.limit, lr=args.lr, eval_steps=steps)
        print(bench.to_json(r))
        first = r["runs"][0]
        walls = ", ".join(f"{x['stream_wall_s']:.0f}s" for x in r["runs"])
        body = (f"KuaiRand-Pure (tab 1 clicks, users >= 5): pre-trained {r['epochs']} epochs on the first "
                f"{r['pretrain_days']} days ({r['pretrain_samples']} samples, {r['pretrain_s']:.0f}s), then "
                f"{r['stream_events']} later events streamed; {first['scored']} positives scored before training; "
                f"arch {r['arch']}, {r['device']}, replay ratio {r['replay_ratio']}, lr {r['lr']}, "
                f"{first['cold_items']} cold items, stream wall {walls}\n\n"
                "| model | scoring steps | Recall@10 | Recall@20 | Recall@100 | MRR@20 |\n|---|---|---|---|---|---|\n")
        for x in r["runs"]:
            for name in ("frozen", "online"):
                m = x[name]
                label = "frozen pre-trained model" if name == "frozen" else "incremental trainer"
                body += (f"| {label} | {x['eval_steps']} | {m['recall@10']:.4f} | {m['recall@20']:.4f} | "
                         f"{m['recall@100']:.4f} | {m['mrr@20']:.4f} |\n")
        png = bench.plot_prequential(first["score_log"], md.with_name("trainer_prequential.png"))
        body += f"\n![prequential]({png.name}) (scoring steps {first['eval_steps']})\n"
        bench.write_section(md, "Prequential Recall on the KuaiRand-Pure replay", body)
    return 0


def _eval_steps(text: str) -> list[int | None]:
    """``--eval-steps 50,10`` -> [50, 10]; "model" (or empty) is the model's own T."""
    out: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip()
        if part in ("", "model"):
            out.append(None)
        elif part.isdigit() and int(part) >= 1:
            out.append(int(part))
        else:
            raise SystemExit(f"--eval-steps: {part!r} is not a positive step count or 'model'")
    return out


def register(groups) -> None:  # noqa: ANN001 -- t2diff.cli.CommandGroups
    p = groups.group("train").add_parser("stream", help="incremental trainer on the event log (publishes versions)")
    p.add_argument("--config", help="YAML config (sections: online_trainer, stream, registry, index)")
    p.add_argument("--init-checkpoint", dest="init_checkpoint", help="warm start from `t2diff train offline` output")
    p.add_argument("--dataset", help="catalogue for a scratch start (kuairand | ml-1m)")
    p.add_argument("--arch")
    p.add_argument("--device")
    p.add_argument("--group", help="consumer group")
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--max-events", dest="max_events", type=int)
    p.add_argument("--idle-exit-s", dest="idle_exit_s", type=float, help="stop after this long without records")
    p.add_argument("--metrics-port", dest="metrics_port", type=int)
    p.add_argument("--compare-frozen", action="store_true", help="also score with the frozen start model")
    p.add_argument("--no-index", action="store_true", help="publish to the registry only")
    p.set_defaults(func=_cmd_train_stream)

    r = groups.group("registry", "model registry")
    ls = r.add_parser("list", help="published versions (* = LATEST)")
    ls.add_argument("--config")
    ls.set_defaults(func=_cmd_registry)
    rb = r.add_parser("rollback", help="make an older (or newer) version live: index alias + LATEST")
    rb.add_argument("version", type=int)
    rb.add_argument("--config")
    rb.add_argument("--registry-only", action="store_true", help="move LATEST only")
    rb.set_defaults(func=_cmd_registry)

    ix = groups.group("index", "Milvus item index")
    for name, h in (("serve", "start the shared loopback Milvus Lite server for index.uri (prints its URI)"),
                    ("stop", "stop that server")):
        q = ix.add_parser(name, help=h)
        q.add_argument("--config")
        q.set_defaults(func=_cmd_index)

    b = groups.group("bench").add_parser("trainer", help="issue-5 benchmarks (appends to benchmarks/trainer.md)")
    b.add_argument("what", choices=["throughput", "index", "freshness", "prequential"])
    b.add_argument("--device", default="auto")
    b.add_argument("--arch", default="t2diff")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--out", default=None, help="scratch dir (default $T2DIFF_RUNS_DIR/bench_trainer)")
    b.add_argument("--md", default=str(BENCH_MD))
    b.add_argument("--events", type=int, default=50_000)
    b.add_argument("--items", type=int, default=7_583)
    b.add_argument("--users", type=int, default=20_000)
    b.add_argument("--batch-size", dest="batch_size", type=int, default=1024)
    b.add_argument("--poll-max", dest="poll_max", type=int, default=8192)
    b.add_argument("--no-prequential", action="store_true")
    b.add_argument("--eval-steps", dest="eval_steps", default="model",
                   help="throughput, prequential: comma-separated reverse steps when scoring, e.g. model,10 "
                        "(model = the model's own T)")
    b.add_argument("--both", action="store_true", help="throughput with and without prequential scoring")
    b.add_argument("--decode-workers", dest="decode_workers", default="0",
                   help="throughput: comma-separated decode worker counts to measure, e.g. 0,8 (0 = in process)")
    b.add_argument("--dim", type=int, default=8)
    b.add_argument("--queries", type=int, default=200)
    b.add_argument("--index-types", dest="index_types", nargs="+", default=["FLAT", "IVF_FLAT"],
                   help="index types to measure (Milvus Lite 2.5 has FLAT and IVF_FLAT; a server also HNSW)")
    b.add_argument("--seconds", type=float, default=60)
    b.add_argument("--rate", type=float, default=200)
    b.add_argument("--publish-every-s", dest="publish_every_s", type=float, default=15)
    b.add_argument("--pretrain-days", dest="pretrain_days", type=float, default=7)
    b.add_argument("--epochs", type=int, default=3)
    b.add_argument("--replay-ratio", dest="replay_ratio", type=float, default=1.0)
    b.add_argument("--lr", type=float, default=3e-3, help="prequential: the stream trainer's learning rate (pre-training uses 3e-3)")
    b.add_argument("--limit", type=int, default=None, help="stream at most this many events")
    b.set_defaults(func=_cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.online.cli ...``: only this module's commands (a GPU box without ray/feast)."""
    from t2diff.cli import standalone_main

    return standalone_main(register, "t2diff", argv)


if __name__ == "__main__":
    raise SystemExit(main())
