"""``t2diff stream replay`` and ``t2diff stream dead-letters`` (the consumer and the benchmark live in
feature_store.cli: ``t2diff stream features``, ``t2diff bench stream``)."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _speed(v: str) -> float | None:
    if v == "max":
        return None
    f = float(v)
    if f <= 0:
        raise argparse.ArgumentTypeError("speed must be > 0 or 'max'")
    return f


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (sections: stream, features)")


def _cmd_replay(args: argparse.Namespace) -> int:
    from streaming.log import open_event_log
    from streaming.replay import dataset_frame, frame_events, replay
    from streaming.settings import StreamSettings

    settings = StreamSettings.load(args.config, key="stream")
    df = dataset_frame(args.dataset, types=args.types)
    if args.skip:
        df = df.iloc[args.skip:]
    log.info("replaying %d %s events to %s (%s), speed %s", len(df), args.dataset, settings.topic,
             settings.backend, "max" if args.speed is None else f"{args.speed:g}x")
    with open_event_log(settings) as event_log:
        st = replay(event_log, frame_events(df), topic=settings.topic, speed=args.speed, rate=args.rate,
                    limit=args.limit)
    print(f"replayed {st.events} events in {st.seconds:.1f}s ({st.rate:.0f} events/s)")
    return 0


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from collections import Counter

    from streaming.deadletter import read_dead_letters
    from streaming.log import open_event_log
    from streaming.settings import StreamSettings

    settings = StreamSettings.load(args.config, key="stream")
    with open_event_log(settings) as event_log:
        dl = read_dead_letters(event_log, settings.dead_letter_topic, group=args.group)
    by = Counter((d["stage"], d["reason"]) for d in dl)
    for (stage, reason), n in sorted(by.items()):
        print(f"{stage}\t{reason}\t{n}")
    for d in dl[-args.show:] if args.show else []:
        print(d)
    return 0


def register(groups) -> None:
    g = groups.group("stream", "event stream: replay, feature consumer, dead letters")
    p = g.add_parser("replay", help="produce a data set as events in event-time order")
    p.add_argument("--dataset", choices=["kuairand", "ml-1m"], default="kuairand")
    p.add_argument("--speed", type=_speed, default=None,
                   help="event-time speed-up factor (1000 = 1000x real time) or 'max' (default)")
    p.add_argument("--rate", type=float, default=None, help="fixed events/s instead of --speed")
    p.add_argument("--limit", type=int, default=None, help="stop after this many events")
    p.add_argument("--skip", type=int, default=0, help="skip the first N events")
    p.add_argument("--types", nargs="+", choices=["impression", "click", "play", "like", "follow"],
                   default=None, help="only these event types")
    add_config_arg(p)
    p.set_defaults(func=_cmd_replay)

    d = g.add_parser("dead-letters", help="summarise the dead-letter topic by stage and reason")
    d.add_argument("--group", default="dlq-cli", help="reader group (its offsets are not committed)")
    d.add_argument("--show", type=int, default=0, help="also print the last N dead letters")
    add_config_arg(d)
    d.set_defaults(func=_cmd_dead_letters)
