"""``t2diff stream features`` (the feature consumer), ``t2diff stream user-features`` (read back) and
``t2diff bench stream`` (throughput and produce -> readable latency)."""
from __future__ import annotations

import argparse
import logging
import signal
import threading

log = logging.getLogger(__name__)


def load_settings(args: argparse.Namespace):
    from feature_store.settings import FeatureSettings
    from streaming.settings import StreamSettings

    ds = getattr(args, "dataset", None)
    stream = StreamSettings.load(args.config, key="stream", known_items=ds, known_users=ds)
    feats = FeatureSettings.load(args.config, key="features", dataset=ds,
                                 online_store=getattr(args, "online_store", None),
                                 redis_connection_string=getattr(args, "redis", None),
                                 batch_size=getattr(args, "batch_size", None))
    return stream, feats


def _cmd_features(args: argparse.Namespace) -> int:
    from feature_store.consumer import FeatureConsumer
    from feature_store.repo import apply_repo

    stream, feats = load_settings(args)
    store = apply_repo(feats, materialize_items=not args.no_materialize)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
        log.info("prometheus metrics on :%d/metrics", args.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = FeatureConsumer(stream, feats, store=store)
    log.info("feature consumer running: topic %s, group %s, %s online store", stream.topic, feats.group,
             feats.online_store)
    try:
        stats = consumer.run(stop=stop, max_records=args.max_records, idle_exit_s=args.idle_exit)
    finally:
        consumer.close()
    print(f"consumed {stats.records}, applied {stats.applied}, dead letters {stats.dead}")
    return 0


def _cmd_user_features(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from feature_store.client import FeatureClient

    _, feats = load_settings(args)
    for u, f in zip(args.users, FeatureClient(feats).get_user_features(args.users)):
        print(u, None if f is None else asdict(f))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from feature_store.bench import run_bench

    run_bench(events=args.events, rate=args.rate, seconds=args.seconds, baseline_events=args.baseline_events,
              md_path=args.md, plot_path=args.plot)
    return 0


def register(groups) -> None:
    from streaming.cli import add_config_arg

    g = groups.group("stream", "event stream: replay, feature consumer, dead letters")
    p = g.add_parser("features", help="consume events into Feast session features (runs until stopped)")
    p.add_argument("--dataset", choices=["kuairand", "ml-1m"], default=None,
                   help="item features and known ids (default: config, else kuairand)")
    p.add_argument("--online-store", choices=["sqlite", "redis"], default=None)
    p.add_argument("--redis", default=None, help="redis connection string host:port")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=None, help="serve prometheus /metrics on this port")
    p.add_argument("--no-materialize", action="store_true", help="skip item feature materialisation")
    add_config_arg(p)
    p.set_defaults(func=_cmd_features)

    u = g.add_parser("user-features", help="print users' session features read through Feast")
    u.add_argument("users", nargs="+", type=int)
    add_config_arg(u)
    u.set_defaults(func=_cmd_user_features)

    b = groups.group("bench").add_parser("stream", help="embedded log -> SQLite Feast: throughput and latency")
    b.add_argument("--events", type=int, default=100_000, help="events for the throughput run")
    b.add_argument("--rate", type=float, default=2000.0, help="produce rate of the latency run (events/s)")
    b.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    b.add_argument("--baseline-events", type=int, default=1000, help="events for the unbatched baseline")
    b.add_argument("--md", default=None, help="also write the results as markdown to this file")
    b.add_argument("--plot", default=None, help="latency plot PNG (default: runs dir)")
    b.set_defaults(func=_cmd_bench)
