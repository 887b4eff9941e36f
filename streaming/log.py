"""Event-log interface shared by the embedded local log and Kafka.

Semantics follow Kafka so code written against the local log runs unchanged on a cluster:

* a topic has N partitions; a record's partition is chosen from its key (the user id), so one user's events
  are totally ordered;
* offsets are per partition, increasing; a committed offset is the *next* offset the group will read;
* ``produce`` may buffer; records are durable once ``flush`` returns;
* delivery is at-least-once: a consumer commits after the effects of what it read are durable, and whatever
  was read but not committed is read again after a restart (downstream writes must be idempotent).
"""
from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from typing import NamedTuple

from streaming.settings import StreamSettings


class Record(NamedTuple):
    """One consumed record. A NamedTuple, not a frozen dataclass: consumers build one per record (tens of
    thousands a second in the stream trainer) and a frozen dataclass's __init__ costs several times more."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int  # produce (create) time, wall clock ms


def partition_for(key: bytes | None, partitions: int) -> int:
    """Stable across processes and machines (Python's hash() is salted per process)."""
    return zlib.crc32(key or b"") % partitions


class Consumer(ABC):
    """One member of a consumer group reading one topic."""

    topic: str
    group: str

    @abstractmethod
    def poll(self, max_records: int = 500, timeout_s: float = 0.1) -> list[Record]:
        """Up to ``max_records`` records after the current position, in offset order per partition; waits up to
        ``timeout_s`` when none is available. Advances the position, not the committed offsets."""

    @abstractmethod
    def commit(self, offsets: dict[int, int] | None = None) -> None:
        """Durably record ``partition -> next offset to read`` for the group (default: the current position)."""

    @abstractmethod
    def committed(self) -> dict[int, int]:
        """The group's committed offsets for the assigned partitions (partitions never committed are absent)."""

    @abstractmethod
    def position(self) -> dict[int, int]:
        """Next offset this consumer will read, per assigned partition."""

    @abstractmethod
    def seek(self, partition: int, offset: int) -> None:
        """Move the read position of one partition (replay or skip); committed offsets are unchanged."""

    @abstractmethod
    def end_offsets(self) -> dict[int, int]:
        """Offset the next produced record will get, per assigned partition (for lag)."""

    def lag(self) -> int:
        """Records produced but not yet committed by this group, summed over assigned partitions."""
        ends, done = self.end_offsets(), self.committed()
        return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventLog(ABC):
    @abstractmethod
    def produce(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None) -> None:
        """Append one record (possibly buffered; see :meth:`flush`)."""

    @abstractmethod
    def flush(self) -> None:
        """Block until every record produced so far is durable."""

    @abstractmethod
    def consumer(self, topic: str, group: str) -> Consumer:
        """A consumer of ``topic`` in ``group`` starting at the group's committed offsets (earliest if none)."""

    @abstractmethod
    def partitions_for(self, topic: str) -> int: ...

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources."""

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_event_log(settings: StreamSettings | None = None) -> EventLog:
    """The configured implementation: the embedded local log by default, Kafka with ``backend: kafka``."""
    settings = settings or StreamSettings()
    if settings.backend == "kafka":
        from streaming.kafka_log import KafkaEventLog

        return KafkaEventLog(settings)
    from streaming.local_log import LocalEventLog

    return LocalEventLog(settings.resolved_log_dir(), partitions=settings.partitions, fsync=settings.fsync,
                         linger_ms=settings.linger_ms)
