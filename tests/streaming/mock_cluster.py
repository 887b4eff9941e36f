"""A Kafka cluster for tests that speaks the real wire protocol: librdkafka's mock cluster.

No Kafka broker installs from the registries these machines reach, but librdkafka (Confluent's C client, bundled
in the ``confluent-kafka`` wheel of the dev extra) carries an in-memory Kafka cluster that its own test suite runs
against: brokers listening on loopback TCP, topics with partitions and leaders, produce/fetch, ListOffsets,
consumer groups (JoinGroup/SyncGroup/Heartbeat/LeaveGroup), OffsetCommit/OffsetFetch. ``KafkaEventLog`` talks to it
through the real kafka-python client over real sockets, so the protocol path that the faked client boundary
(fake_kafka.py) skips is exercised. It also injects faults: a broker can be taken down, and a request can be made to
fail with a given Kafka error code.

It is not Apache Kafka: no disk, no replication protocol, and it implements only the protocol versions librdkafka
needs. kafka-python's version probe (ApiVersions v4) is answered with UNSUPPORTED_VERSION in a form kafka-python
3.0.12 cannot decode, so clients pin ``api_version`` (``stream.kafka.api_version``; "2.1" = the protocol set of
Kafka 2.1, which Kafka 4.x still serves).

The library is driven through ctypes (librdkafka's public ``rdkafka_mock.h`` API); nothing here is confluent-kafka's
Python client.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
from pathlib import Path

# Kafka protocol error codes used by the tests (org.apache.kafka.common.protocol.Errors)
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
TOPIC_AUTHORIZATION_FAILED = 29
API_PRODUCE = 0  # ApiKey of ProduceRequest

# kafka-python settings for talking to this cluster (``stream.kafka.*``). api_version: the probe above. Liveness: the
# mock's coordinator waits (session timeout - 1 s) for a rebalance to settle; Kafka's own floor is 6 s
# (group.min.session.timeout.ms), the mock has none, so the tests' groups settle in about two seconds; a JoinGroup
# the mock leaves unanswered is retried after the 5 s request timeout, not kafka-python's 30 s.
CLIENT = {"api_version": "2.1", "linger_ms": 0, "session_timeout_ms": 3_000, "heartbeat_interval_ms": 300,
          "request_timeout_ms": 5_000}


def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("confluent_kafka")
    found = []
    if spec is not None and spec.origin:
        libs = Path(spec.origin).parent.parent / "confluent_kafka.libs"
        found = sorted(glob.glob(str(libs / "librdkafka*.so*")))
    path = found[0] if found else ctypes.util.find_library("rdkafka")
    if not path:
        raise RuntimeError("librdkafka not found: install the dev extra (confluent-kafka bundles it) or librdkafka1")
    lib = ctypes.CDLL(path)
    c_void, c_int, c_char = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    sigs = {
        "rd_kafka_version_str": ([], c_char),
        "rd_kafka_conf_new": ([], c_void),
        "rd_kafka_conf_set": ([c_void, c_char, c_char, c_char, ctypes.c_size_t], c_int),
        "rd_kafka_new": ([c_int, c_void, c_char, ctypes.c_size_t], c_void),
        "rd_kafka_destroy": ([c_void], None),
        "rd_kafka_mock_cluster_new": ([c_void, c_int], c_void),
        "rd_kafka_mock_cluster_destroy": ([c_void], None),
        "rd_kafka_mock_cluster_bootstraps": ([c_void], c_char),
        "rd_kafka_mock_topic_create": ([c_void, c_char, c_int, c_int], c_int),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": ([c_void, c_int], None),
        "rd_kafka_mock_broker_set_down": ([c_void, c_int], c_int),
        "rd_kafka_mock_broker_set_up": ([c_void, c_int], c_int),
        "rd_kafka_mock_push_request_errors_array": ([c_void, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(c_int)],
                                                    None),
        "rd_kafka_mock_clear_request_errors": ([c_void, ctypes.c_int16], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


class MockKafkaCluster:
    """cluster = MockKafkaCluster(brokers=1); cluster.create_topic("events", 4); cluster.bootstrap -> "127.0.0.1:port";
    cluster.kafka_settings() -> the ``stream.kafka`` settings to reach it."""

    def __init__(self, brokers: int = 1) -> None:
        self._lib = lib = _library()
        self.version = lib.rd_kafka_version_str().decode()
        conf = lib.rd_kafka_conf_new()
        err = ctypes.create_string_buffer(512)
        if lib.rd_kafka_conf_set(conf, b"log_level", b"3", err, len(err)) != 0:  # the owner handle's own chatter
            raise RuntimeError(err.value.decode())
        # The cluster needs an owning client handle (it runs on that handle's threads); this one never connects.
        self._rk = lib.rd_kafka_new(0, conf, err, len(err))  # 0 = RD_KAFKA_PRODUCER; takes ownership of conf
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new failed: {err.value.decode()}")
        self._mc = lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mc:
            lib.rd_kafka_destroy(self._rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mc, 0)  # a group forms at once (default 3 s)
        self.bootstrap: str = lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.bootstrap.split(",")

    def kafka_settings(self, **overrides: object):
        """``stream.kafka`` settings for this cluster (:data:`CLIENT`, then ``overrides``)."""
        from streaming.settings import KafkaSettings

        return KafkaSettings(bootstrap_servers=self.bootstrap_servers, **{**CLIENT, **overrides})

    def create_topic(self, name: str, partitions: int, replication: int = 1) -> None:
        rc = self._lib.rd_kafka_mock_topic_create(self._mc, name.encode(), partitions, replication)
        if rc != 0:
            raise RuntimeError(f"creating topic {name!r} failed (rd_kafka_resp_err_t {rc})")

    def broker_down(self, broker_id: int = 1) -> None:
        """Closes the broker's connections and refuses new ones (until ``broker_up``)."""
        self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id)

    def broker_up(self, broker_id: int = 1) -> None:
        self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id)

    def fail_requests(self, api_key: int, errors: list[int]) -> None:
        """The next ``len(errors)`` requests of ``api_key`` (any broker) are answered with these error codes."""
        arr = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(self._mc, api_key, len(errors), arr)

    def clear_failures(self, api_key: int) -> None:
        self._lib.rd_kafka_mock_clear_request_errors(self._mc, api_key)

    def close(self) -> None:
        if self._mc:
            self._lib.rd_kafka_mock_cluster_destroy(self._mc)
            self._lib.rd_kafka_destroy(self._rk)
            self._mc = self._rk = None

    def __enter__(self) -> "MockKafkaCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
