"""Small synthetic streams and models for tests and benchmarks (no data files needed).

Users follow drifting interests: user u at step t prefers item ``(u * 7 + t // drift_every) % N`` with
probability ``p_pref``, else a random item; a model that keeps learning can follow the drift, a frozen one
cannot, which makes the prequential comparison meaningful on a toy stream.
"""
from __future__ import annotations

import time
from typing import Iterable

import numpy as np

from streaming.events import Event, encode, key_of
from t2diff.data import Catalog
from t2diff.model import ModelConfig


def synthetic_catalog(n_items: int, num_tags: int = 20, max_tags: int = 2, seed: int = 0,
                      first_id: int = 1000) -> Catalog:
    rng = np.random.default_rng(seed)
    tags = rng.integers(1, num_tags + 1, size=(n_items + 1, max_tags))
    tags[0] = 0
    return Catalog("synthetic", np.arange(first_id, first_id + n_items, dtype=np.int64), tags, num_tags)


def tiny_config(catalog: Catalog, arch: str = "t2diff", **over) -> ModelConfig:
    kw = dict(seq_len=10, session_len=4, diffusion_steps=10)
    kw.update(over)
    return ModelConfig(arch=arch, num_items=catalog.num_items, num_tags=catalog.num_tags,
                       max_tags=catalog.max_tags, **kw)


def synthetic_events(n_events: int, n_users: int, item_ids: np.ndarray, seed: int = 0, now_ms: int | None = None,
                     p_pref: float = 0.8, drift_every: int = 200, extra_ids: Iterable[int] = (),
                     p_extra: float = 0.0, key_prefix: str = "e") -> list[Event]:
    """``n_events`` click events; ``extra_ids`` (e.g. cold items) appear with probability ``p_extra``."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(item_ids)
    extra = np.asarray(list(extra_ids), dtype=np.int64)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = []
    users = rng.integers(0, n_users, size=n_events)
    for t in range(n_events):
        u = int(users[t])
        if len(extra) and rng.random() < p_extra:
            item = int(extra[rng.integers(0, len(extra))])
        elif rng.random() < p_pref:
            item = int(ids[(u * 7 + t // drift_every) % len(ids)])
        else:
            item = int(ids[rng.integers(0, len(ids))])
        out.append(Event(user_id=u, item_id=item, event_type="click", ts_ms=now - n_events + t,
                         idempotency_key=f"{key_prefix}{t}"))
    return out


def produce(event_log, topic: str, events: Iterable[Event]) -> int:  # noqa: ANN001 -- streaming.log.EventLog
    n = 0
    for ev in events:
        event_log.produce(topic, key_of(ev), encode(ev))
        n += 1
    event_log.flush()
    return n
