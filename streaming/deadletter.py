"""Dead-letter sink: every event that cannot be applied is kept, with why, on a dead-letter topic of the same
event log (``events.dlq``), and counted in ``t2diff_dead_letters_total{stage, reason}``.

The payload is JSON so a person (or a repair job) can read it: reason, detail, where the record came from, and
the original bytes (as text when they are UTF-8, else base64). Records go through the log's producer, so they
are durable when the consumer flushes before committing its offsets -- nothing is lost between the two.
"""
from __future__ import annotations

import base64
import json
import logging
import time

from streaming.events import REASONS
from streaming.log import EventLog, Record
from streaming.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)


class DeadLetterSink:
    def __init__(self, event_log: EventLog, topic: str = "events.dlq", stage: str = "features") -> None:
        self.log, self.topic, self.stage = event_log, topic, stage
        self.counts: dict[str, int] = {}

    def send(self, value: bytes | None, reason: str, detail: str = "", record: Record | None = None,
             key: bytes | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        value = b"" if value is None else bytes(value)  # a Kafka tombstone has no value
        try:
            payload = {"value": value.decode("utf-8")}
        except UnicodeDecodeError:
            payload = {"value_b64": base64.b64encode(value).decode()}
        doc = {"stage": self.stage, "reason": reason, "detail": detail[:500], "dead_ms": int(time.time() * 1000),
               **payload}
        if record is not None:
            doc["source"] = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                             "timestamp_ms": record.timestamp_ms}
            key = record.key if key is None else key
        self.log.produce(self.topic, key, json.dumps(doc).encode())
        DEAD_LETTERS.labels(stage=self.stage, reason=reason).inc()
        self.counts[reason] = self.counts.get(reason, 0) + 1
        log.debug("dead letter %s: %s", reason, detail)


def read_dead_letters(event_log: EventLog, topic: str = "events.dlq", group: str = "dlq-reader",
                      max_records: int = 100_000) -> list[dict]:
    """Everything on the dead-letter topic from the group's position (for tests, ops and the CLI)."""
    out: list[dict] = []
    c = event_log.consumer(topic, group)
    try:
        while len(out) < max_records:
            recs = c.poll(min(5000, max_records - len(out)), timeout_s=0.05)
            if not recs:
                break
            out.extend(json.loads(r.value) for r in recs)
    finally:
        c.close()
    return out
