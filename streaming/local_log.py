"""Embedded, durable event log for one machine: one SQLite file per topic in WAL mode.

Why SQLite rather than hand-written segment files: a flush is one transaction, so a batch is all-or-nothing
(no torn record to detect and truncate after a crash -- SQLite's journal is the CRC'd, length-checked log);
several processes may append at once (the replay producer and serving's /feedback) with SQLite's file lock
serialising them; a group's offset commit is one upsert in the same file; ``seek`` is an index lookup. The
``records`` table is clustered by (partition, offset) so a partition reads sequentially, and triggers refuse
UPDATE and DELETE, so the log is append-only. Measured well above the 5 k events/s target on 2 cores.

Durability: ``fsync="normal"`` (default) survives a killed process; ``"full"`` also survives power loss.
A consumer group here has one active member per (group, partition): run one consumer per group (or give
members disjoint ``partitions``), the way the demo and the feature consumer do.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from streaming.log import Consumer, EventLog, Record, partition_for

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(
  partition INTEGER NOT NULL, offset INTEGER NOT NULL, ts_ms INTEGER NOT NULL, key BLOB, value BLOB NOT NULL,
  PRIMARY KEY(partition, offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets(
  grp TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
  PRIMARY KEY(grp, partition)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
  BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
  BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END;
"""


_LOCK_WAIT_S = 30.0


def _connect(path: Path, fsync: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; timeout: wait for another writer's lock.
    con = sqlite3.connect(path, timeout=_LOCK_WAIT_S, isolation_level=None, check_same_thread=False)
    # Switching a file to WAL needs an exclusive lock for which SQLite does not call the busy handler: two
    # processes opening a new topic at once could get "database is locked" at once. Wait as for any other lock.
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
    con.execute(f"PRAGMA synchronous={fsync.upper()}")
    return con


class _Topic:
    """One topic's database file; creates it with a fixed partition count on first use."""

    def __init__(self, root: Path, name: str, partitions: int, fsync: str) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad topic name {name!r}")
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{name}.sqlite"
        self.con = _connect(self.path, fsync)
        self.con.execute("BEGIN IMMEDIATE")
        try:
            for stmt in filter(str.strip, _SCHEMA.split(";\n")):
                self.con.execute(stmt)
            row = self.con.execute("SELECT v FROM meta WHERE k='partitions'").fetchone()
            if row is None:
                self.con.execute("INSERT INTO meta VALUES('partitions', ?)", (str(partitions),))
                self.partitions = partitions
            else:
                self.partitions = int(row[0])
                if self.partitions != partitions:
                    log.warning("topic %s exists with %d partitions (settings say %d); keeping %d",
                                name, self.partitions, partitions, self.partitions)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def end_offsets(self, con: sqlite3.Connection, partitions: list[int]) -> dict[int, int]:
        out = {}
        for p in partitions:
            (m,) = con.execute("SELECT MAX(offset) FROM records WHERE partition=?", (p,)).fetchone()
            out[p] = 0 if m is None else m + 1
        return out


class LocalEventLog(EventLog):
    def __init__(self, root: str | Path, partitions: int = 8, fsync: str = "normal", linger_ms: int = 5,
                 max_batch: int = 10_000) -> None:
        self.root = Path(root)
        self.default_partitions = partitions
        self.fsync = fsync
        self.linger_s = linger_ms / 1000.0
        self.max_batch = max_batch
        self._topics: dict[str, _Topic] = {}
        self._buf: dict[str, list[tuple[int, bytes | None, bytes, int]]] = {}
        self._buf_since: float | None = None  # monotonic time of the oldest buffered record
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = False
        self._flusher: threading.Thread | None = None

    # -- producer ---------------------------------------------------------------------------------------
    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = _Topic(self.root, name, self.default_partitions, self.fsync)
        return t

    def partitions_for(self, topic: str) -> int:
        with self._lock:
            return self._topic(topic).partitions

    def produce(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None) -> None:
        if self._closed:
            raise RuntimeError("event log is closed")
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("value must be bytes")
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        with self._lock:
            t = self._topic(topic)
            self._buf.setdefault(topic, []).append((partition_for(key, t.partitions), key, bytes(value), ts))
            if self._buf_since is None:
                self._buf_since = time.monotonic()
                self._wake.set()
            n = sum(len(b) for b in self._buf.values())
            if n >= self.max_batch or self.linger_s == 0:
                self._flush_locked()
            elif self._flusher is None:
                # A background flusher bounds the delay of a producer that stops producing (e.g. /feedback).
                self._flusher = threading.Thread(target=self._flush_loop, name="local-log-flusher", daemon=True)
                self._flusher.start()

    def _flush_loop(self) -> None:
        # Sleeps until something is buffered (no busy wake-ups while idle), then flushes after the linger.
        while not self._closed:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(self.linger_s)
            failed = False
            with self._lock:
                self._wake.clear()
                if self._closed or self._buf_since is None:
                    continue
                try:
                    self._flush_locked()
                except Exception:  # keep the buffer and retry; the caller's flush() raises the error too
                    log.exception("background flush failed; retrying in 1 s")
                    failed = True
                    self._wake.set()
            if failed:
                time.sleep(1.0)

    def _flush_locked(self) -> None:
        for topic, rows in list(self._buf.items()):
            if not rows:
                continue
            t = self._topic(topic)
            con = t.con
            con.execute("BEGIN IMMEDIATE")  # takes the write lock, so MAX(offset) below cannot race
            try:
                by_part: dict[int, list[tuple[int, bytes | None, bytes, int]]] = {}
                for r in rows:
                    by_part.setdefault(r[0], []).append(r)
                nxt = t.end_offsets(con, list(by_part))
                params = []
                for p, prs in by_part.items():
                    o = nxt[p]
                    for _, k, v, ts in prs:
                        params.append((p, o, ts, k, v))
                        o += 1
                con.executemany("INSERT INTO records(partition, offset, ts_ms, key, value) VALUES(?,?,?,?,?)", params)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._buf[topic] = []
        self._buf_since = None

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def consumer(self, topic: str, group: str, partitions: list[int] | None = None) -> "LocalConsumer":
        with self._lock:
            t = self._topic(topic)
        return LocalConsumer(t, topic, group, self.fsync, partitions)

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._flush_locked()
            self._closed = True
            self._wake.set()  # let the flusher thread exit
            for t in self._topics.values():
                t.con.close()
            self._topics.clear()


class LocalConsumer(Consumer):
    def __init__(self, t: _Topic, topic: str, group: str, fsync: str, partitions: list[int] | None) -> None:
        self.topic, self.group = topic, group
        self._t = t
        self._con = _connect(t.path, fsync)
        self.partitions = sorted(partitions) if partitions is not None else list(range(t.partitions))
        bad = [p for p in self.partitions if not 0 <= p < t.partitions]
        if bad:
            raise ValueError(f"partitions {bad} out of range for topic {topic} ({t.partitions} partitions)")
        done = self.committed()
        self._pos = {p: done.get(p, 0) for p in self.partitions}
        self._rr = 0  # round-robin start so a busy partition cannot starve the others

    def poll(self, max_records: int = 500, timeout_s: float = 0.1) -> list[Record]:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            out: list[Record] = []
            n = len(self.partitions)
            for i in range(n):
                if len(out) >= max_records:
                    break
                p = self.partitions[(self._rr + i) % n]
                rows = self._con.execute(
                    "SELECT offset, ts_ms, key, value FROM records WHERE partition=? AND offset>=? "
                    "ORDER BY offset LIMIT ?", (p, self._pos[p], max_records - len(out))).fetchall()
                topic = self.topic
                out.extend([Record(topic, p, off, k, v, ts) for off, ts, k, v in rows])
                if rows:
                    self._pos[p] = rows[-1][0] + 1
            self._rr = (self._rr + 1) % max(1, n)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))

    def commit(self, offsets: dict[int, int] | None = None) -> None:
        offsets = dict(self._pos) if offsets is None else offsets
        now = int(time.time() * 1000)
        self._con.execute("BEGIN IMMEDIATE")
        try:
            self._con.executemany(
                "INSERT INTO group_offsets(grp, partition, offset, updated_ms) VALUES(?,?,?,?) "
                "ON CONFLICT(grp, partition) DO UPDATE SET offset=excluded.offset, updated_ms=excluded.updated_ms",
                [(self.group, int(p), int(o), now) for p, o in offsets.items()])
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    def committed(self) -> dict[int, int]:
        rows = self._con.execute("SELECT partition, offset FROM group_offsets WHERE grp=?", (self.group,)).fetchall()
        return {p: o for p, o in rows if p in self.partitions}

    def position(self) -> dict[int, int]:
        return dict(self._pos)

    def seek(self, partition: int, offset: int) -> None:
        if partition not in self._pos:
            raise ValueError(f"partition {partition} is not assigned to this consumer")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        self._pos[partition] = int(offset)

    def end_offsets(self) -> dict[int, int]:
        return self._t.end_offsets(self._con, self.partitions)

    def close(self) -> None:
        self._con.close()
