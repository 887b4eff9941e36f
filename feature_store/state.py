"""Durable consumer state: per-user session state and the event-log offsets it reflects, in one SQLite file.

Saving both in one transaction is what gives exactly-once *effects* on top of an at-least-once log: after a
crash the consumer restarts from the offsets saved with the state (not from the log's committed offsets,
which may be behind), so every event is applied to the state exactly once; the online-store rows are pure
functions of the state, so re-pushing them is idempotent.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from feature_store.session import UserState

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS users(user_id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS offsets(topic TEXT NOT NULL, grp TEXT NOT NULL, partition INTEGER NOT NULL, "
    "offset INTEGER NOT NULL, PRIMARY KEY(topic, grp, partition)) WITHOUT ROWID",
]


class StateStore:
    def __init__(self, path: str | Path, topic: str, group: str, fsync: str = "normal") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.topic, self.group = topic, group
        self.con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute(f"PRAGMA synchronous={fsync.upper()}")
        for s in _SCHEMA:
            self.con.execute(s)

    def offsets(self) -> dict[int, int]:
        rows = self.con.execute("SELECT partition, offset FROM offsets WHERE topic=? AND grp=?",
                                (self.topic, self.group)).fetchall()
        return dict(rows)

    def load(self, user_ids: list[int]) -> dict[int, UserState]:
        out: dict[int, UserState] = {}
        for i in range(0, len(user_ids), 900):  # SQLite's bound-parameter limit
            chunk = user_ids[i: i + 900]
            q = f"SELECT user_id, state FROM users WHERE user_id IN ({','.join('?' * len(chunk))})"
            for u, s in self.con.execute(q, chunk):
                out[u] = UserState.from_json(s)
        return out

    def save(self, states: dict[int, UserState], offsets: dict[int, int]) -> None:
        """Atomically persist changed user states together with the offsets they reflect."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            self.con.executemany("INSERT OR REPLACE INTO users(user_id, state) VALUES(?, ?)",
                                 [(u, s.to_json()) for u, s in states.items()])
            self.con.executemany("INSERT OR REPLACE INTO offsets(topic, grp, partition, offset) VALUES(?,?,?,?)",
                                 [(self.topic, self.group, p, o) for p, o in offsets.items()])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.con.close()
