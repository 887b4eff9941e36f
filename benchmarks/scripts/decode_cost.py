"""Per-event cost of decoding the stream trainer's events, by path (one process, best of 5 over one poll's worth).

``python benchmarks/scripts/decode_cost.py [--events 16384]``. Used in benchmarks/trainer.md (twenty-fourth
session) to rule out decoding a poll in one pydantic call: validation into the model is the cost, not the calls.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    import pydantic_core
    from pydantic import TypeAdapter

    from streaming.events import Event, decode_batch, encode
    from trainer.online.decoding import decode_fields
    from trainer.online.synthetic import synthetic_catalog, synthetic_events

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=16384)
    a = ap.parse_args(argv)
    cat = synthetic_catalog(7583, num_tags=70, max_tags=3, seed=0)
    vals = [encode(e) for e in synthetic_events(a.events, 20000, cat.raw_ids, seed=0)]
    now = int(time.time() * 1000)
    many = TypeAdapter(list[Event])

    def best(fn, reps: int = 5) -> float:
        fn()  # warm
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    dicts = [json.loads(v) for v in vals]
    paths = {
        "decode_fields (the trainer's path)": lambda: decode_fields(vals, now),
        "decode_batch": lambda: decode_batch(vals, now),
        "Event.model_validate_json per value": lambda: [Event.model_validate_json(v) for v in vals],
        "list[Event].validate_json, values joined": lambda: many.validate_json(b"[" + b",".join(vals) + b"]"),
        "list[Event].validate_python, pre-parsed": lambda: many.validate_python(dicts),
        "pydantic_core.from_json per value": lambda: [pydantic_core.from_json(v) for v in vals],
    }
    print(f"| path | µs per event ({len(vals)} events, best of 5) |\n|---|---|")
    for name, fn in paths.items():
        print(f"| {name} | {best(fn) / len(vals) * 1e6:.2f} |")
    blob = pickle.dumps(decode_fields(vals[:2048], now), protocol=pickle.HIGHEST_PROTOCOL)
    print(f"\nunpickling one worker's 2,048 results: {best(lambda: pickle.loads(blob), 20) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
