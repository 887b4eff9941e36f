"""Kafka implementation of the event log (kafka-python), for real clusters.

* Producer: ``acks=all``, key = user id, so Kafka's default murmur2 partitioner keeps a user on one partition;
  ``flush`` waits for every acknowledgement and raises if any send failed (records are durable on return).
* Consumer: group membership via ``subscribe`` (or static ``assign`` when ``partitions`` is given),
  ``enable_auto_commit=False`` -- offsets are committed only by :meth:`commit`, after the caller's effects
  are durable (at-least-once; downstream writes are idempotent). A ``seek`` on a partition that is not
  assigned yet is kept and applied when the group assigns it, so a consumer can restart from the offsets it
  saved with its own state.

The kafka-python classes are injected (``producer_cls`` / ``consumer_cls``) so the unit tests can fake the
client boundary; the integration tests run the real classes over TCP against librdkafka's mock Kafka cluster
(tests/streaming/mock_cluster.py), since no Kafka broker installs on these machines.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from streaming.log import Consumer, EventLog, Record
from streaming.settings import KafkaSettings, StreamSettings

log = logging.getLogger(__name__)


def client_config(k: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments shared by producer and consumer (security included, None left out)."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": list(k.bootstrap_servers), "client_id": k.client_id,
        "security_protocol": k.security_protocol, "request_timeout_ms": k.request_timeout_ms,
    }
    if k.api_version:
        cfg["api_version"] = tuple(int(x) for x in k.api_version.split("."))
    if k.sasl_mechanism:
        cfg["sasl_mechanism"] = k.sasl_mechanism
    if k.sasl_username is not None:
        cfg["sasl_plain_username"] = k.sasl_username
    if k.sasl_password is not None:
        cfg["sasl_plain_password"] = k.sasl_password.get_secret_value()
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(k, name):
            cfg[name] = getattr(k, name)
    if k.security_protocol.startswith("SASL") and not k.sasl_mechanism:
        raise ValueError(f"security_protocol {k.security_protocol} needs kafka.sasl_mechanism")
    return cfg


class KafkaEventLog(EventLog):
    def __init__(self, settings: StreamSettings, producer_cls: Any = None, consumer_cls: Any = None) -> None:
        if producer_cls is None or consumer_cls is None:
            import kafka

            producer_cls = producer_cls or kafka.KafkaProducer
            consumer_cls = consumer_cls or kafka.KafkaConsumer
        self.settings = settings
        self._consumer_cls = consumer_cls
        self._producer_cls = producer_cls
        self._producer = None
        self._futures: list = []

    @property
    def producer(self):
        if self._producer is None:
            k = self.settings.kafka
            acks = "all" if k.acks == "all" else int(k.acks)
            self._producer = self._producer_cls(**client_config(k), acks=acks, linger_ms=k.linger_ms, retries=5)
        return self._producer

    def produce(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("value must be bytes")
        self._futures.append(self.producer.send(topic, key=key, value=bytes(value), timestamp_ms=timestamp_ms))

    def flush(self) -> None:
        if self._producer is None:
            return
        self._producer.flush()
        futures, self._futures = self._futures, []
        failed = [f for f in futures if f.failed()]
        if failed:
            # Raise so the caller does not commit offsets past records that were never written.
            raise RuntimeError(f"{len(failed)} of {len(futures)} Kafka sends failed: {failed[0].exception!r}")

    def partitions_for(self, topic: str) -> int:
        parts = self.producer.partitions_for(topic)
        if not parts:
            raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
        return len(parts)

    def consumer(self, topic: str, group: str, partitions: list[int] | None = None) -> "KafkaLogConsumer":
        k = self.settings.kafka
        liveness = {name: getattr(k, name) for name in ("session_timeout_ms", "heartbeat_interval_ms")
                    if getattr(k, name) is not None}
        c = self._consumer_cls(**client_config(k), group_id=group, enable_auto_commit=False,
                               auto_offset_reset=k.auto_offset_reset, **liveness)
        return KafkaLogConsumer(c, topic, group, partitions)

    def close(self) -> None:
        if self._producer is not None:
            self.flush()
            self._producer.close()
            self._producer = None


class KafkaLogConsumer(Consumer):
    def __init__(self, client: Any, topic: str, group: str, partitions: list[int] | None) -> None:
        from kafka import TopicPartition
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        self.topic, self.group = topic, group
        self._c = client
        self._tp = lambda p: TopicPartition(topic, p)
        self._pending_seeks: dict[int, int] = {}
        outer = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, assigned):
                for tp in assigned:
                    if tp.partition in outer._pending_seeks:
                        client.seek(tp, outer._pending_seeks.pop(tp.partition))

        if partitions is None:
            # The topic's metadata first: a group leader whose client does not know the topic's partitions yet when
            # it joins assigns nothing, and kafka-python rejoins only at its next metadata refresh (5 min by default)
            # -- seen over the wire against the tests' mock cluster as a consumer that stayed idle.
            if not client.partitions_for_topic(topic):
                raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
            client.subscribe([topic], listener=_Listener())
        else:
            client.assign([self._tp(p) for p in partitions])

    def _assigned(self) -> list[int]:
        return sorted(tp.partition for tp in self._c.assignment() if tp.topic == self.topic)

    def poll(self, max_records: int = 500, timeout_s: float = 0.1) -> list[Record]:
        batches = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Record] = []
        for tp, recs in batches.items():
            for r in recs:
                ts = r.timestamp if r.timestamp is not None and r.timestamp >= 0 else int(time.time() * 1000)
                out.append(Record(r.topic, r.partition, r.offset, r.key, r.value, ts))
        return out

    def commit(self, offsets: dict[int, int] | None = None) -> None:
        from kafka import OffsetAndMetadata

        offsets = self.position() if offsets is None else offsets
        if offsets:
            self._c.commit({self._tp(p): OffsetAndMetadata(int(o), "", -1) for p, o in offsets.items()})

    def committed(self) -> dict[int, int]:
        out = {}
        for p in self._assigned():
            o = self._c.committed(self._tp(p))
            if o is not None:
                out[p] = int(o)
        return out

    def position(self) -> dict[int, int]:
        return {p: int(self._c.position(self._tp(p))) for p in self._assigned()}

    def seek(self, partition: int, offset: int) -> None:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        if partition in self._assigned():
            self._c.seek(self._tp(partition), int(offset))
        else:
            self._pending_seeks[partition] = int(offset)

    def end_offsets(self) -> dict[int, int]:
        parts = self._assigned()
        if not parts:
            return {}
        ends = self._c.end_offsets([self._tp(p) for p in parts])
        return {tp.partition: int(o) for tp, o in ends.items()}

    def close(self) -> None:
        self._c.close(autocommit=False)
