"""An in-memory stand-in for kafka-python's KafkaProducer / KafkaConsumer at the client boundary, using the
real kafka-python structs (TopicPartition, ConsumerRecord, OffsetAndMetadata) and partitioner, so the Kafka
event log's encode/decode/commit logic runs unchanged. One group member per group (assignment = all)."""
from __future__ import annotations

import time

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata


class FakeBroker:
    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.topics: dict[str, list[list[tuple]]] = {}
        self.group_offsets: dict[tuple[str, TopicPartition], int] = {}
        self.fail_sends = False
        self.configs: list[dict] = []

    def topic(self, name: str) -> list[list[tuple]]:
        return self.topics.setdefault(name, [[] for _ in range(self.partitions)])


class _Future:
    def __init__(self, exc: Exception | None = None) -> None:
        self.exception = exc

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    def __init__(self, broker: FakeBroker, **config) -> None:
        broker.configs.append({"role": "producer", **config})
        self.b = broker

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        if self.b.fail_sends:
            return _Future(RuntimeError("broker unavailable"))
        parts = self.b.topic(topic)
        p = (murmur2(key) & 0x7FFFFFFF) % len(parts)  # the Java client's / kafka-python's default partitioner
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        parts[p].append((key, value, ts))
        return _Future()

    def flush(self, timeout=None):
        pass

    def partitions_for(self, topic):
        return set(range(len(self.b.topic(topic))))

    def close(self, timeout=None):
        pass


class FakeConsumer:
    def __init__(self, broker: FakeBroker, group_id=None, enable_auto_commit=True, **config) -> None:
        assert enable_auto_commit is False, "the event log must commit manually"
        broker.configs.append({"role": "consumer", "group_id": group_id, **config})
        self.b, self.group = broker, group_id
        self._assigned: set[TopicPartition] = set()
        self._pos: dict[TopicPartition, int] = {}
        self._sub: list[str] | None = None
        self._listener = None

    def partitions_for_topic(self, topic):
        return set(range(len(self.b.topic(topic))))  # topics exist on first use here

    def subscribe(self, topics=(), pattern=None, listener=None):
        self._sub, self._listener = list(topics), listener

    def assign(self, partitions):
        self._assigned = set(partitions)
        for tp in partitions:
            self._pos[tp] = self.b.group_offsets.get((self.group, tp), 0)

    def assignment(self):
        return set(self._assigned)

    def _rebalance(self):
        if self._sub is not None and not self._assigned:  # the first poll joins the group
            tps = {TopicPartition(t, p) for t in self._sub for p in range(len(self.b.topic(t)))}
            self.assign(tps)
            if self._listener is not None:
                self._listener.on_partitions_assigned(tps)

    def poll(self, timeout_ms=0, max_records=None, update_offsets=True):
        self._rebalance()
        out = {}
        left = max_records or 500
        for tp in sorted(self._assigned):
            log = self.b.topic(tp.topic)[tp.partition]
            start = self._pos[tp]
            recs = []
            for off in range(start, min(len(log), start + left)):
                k, v, ts = log[off]
                recs.append(ConsumerRecord(tp.topic, tp.partition, -1, off, ts, 0, k, v, [], None,
                                           len(k or b""), len(v), -1))
            if recs:
                out[tp] = recs
                self._pos[tp] = recs[-1].offset + 1
                left -= len(recs)
            if left <= 0:
                break
        return out

    def commit(self, offsets=None, timeout_ms=None):
        for tp, om in offsets.items():
            assert isinstance(om, OffsetAndMetadata)
            self.b.group_offsets[(self.group, tp)] = om.offset

    def committed(self, partition, metadata=False, timeout_ms=None):
        return self.b.group_offsets.get((self.group, partition))

    def position(self, partition, timeout_ms=None):
        return self._pos[partition]

    def seek(self, partition, offset):
        assert partition in self._assigned
        self._pos[partition] = offset

    def end_offsets(self, partitions, timeout_ms=None):
        return {tp: len(self.b.topic(tp.topic)[tp.partition]) for tp in partitions}

    def close(self, autocommit=True, timeout_ms=None):
        pass
