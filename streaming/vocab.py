"""Which user and item ids exist, for the "unknown_user" / "unknown_item" checks.

Sources (``stream.known_items`` / ``stream.known_users``): ``kuairand`` (KuaiRand-Pure video and user feature
files: 7,583 videos, 27,285 users), ``ml-1m`` (movies.dat, users.dat), ``any`` (every id >= 0 is known).
"""
from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from t2diff.paths import data_dir


@functools.lru_cache(maxsize=8)
def known_ids(source: str, kind: str, root: str | None = None) -> frozenset[int] | None:
    """The id set, or None for ``any``. ``kind`` is ``item`` or ``user``."""
    if kind not in ("item", "user"):
        raise ValueError(f"kind must be item or user, not {kind!r}")
    if source == "any":
        return None
    base = Path(root) if root else data_dir()
    if source == "kuairand":
        f, col = (("video_features_basic_pure.csv.gz", "video_id") if kind == "item"
                  else ("user_features_pure.csv.gz", "user_id"))
        ids = pd.read_csv(base / "kuairand" / f, usecols=[col])[col]
    elif source == "ml-1m":
        f = "movies.dat" if kind == "item" else "users.dat"
        ids = pd.read_csv(base / "ml-1m" / f, sep="::", engine="python", header=None, usecols=[0],
                          encoding="latin-1")[0]
    else:
        raise ValueError(f"unknown id source {source!r}; expected kuairand, ml-1m or any")
    return frozenset(int(x) for x in ids)


class Vocabulary:
    """Membership checks against the configured sources (None = accept every id)."""

    def __init__(self, items: frozenset[int] | None, users: frozenset[int] | None) -> None:
        self.items, self.users = items, users

    @classmethod
    def from_sources(cls, items: str, users: str) -> "Vocabulary":
        return cls(known_ids(items, "item"), known_ids(users, "user"))

    def known_item(self, item_id: int) -> bool:
        return self.items is None or item_id in self.items

    def known_user(self, user_id: int) -> bool:
        return self.users is None or user_id in self.users
