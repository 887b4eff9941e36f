"""Kill -9 the trainer process mid-stream, restart it: every positive is scored and trained exactly once -- on the
embedded log, and on Kafka (kafka-python over TCP against librdkafka's mock cluster,
tests/streaming/mock_cluster.py)."""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from streaming.kafka_log import KafkaEventLog
from streaming.local_log import LocalEventLog
from streaming.settings import StreamSettings
from t2diff.model import load_checkpoint
from trainer.online.loop import SCORE_LOG, STATE_FILE
from trainer.online.prequential import read_score_log, recompute
from trainer.online.synthetic import produce, synthetic_catalog, synthetic_events

CHILD = r"""
import sys, time, torch
from pathlib import Path
from streaming.kafka_log import KafkaEventLog
from streaming.local_log import LocalEventLog
from streaming.settings import KafkaSettings, StreamSettings
from t2diff.model import build_model
from trainer.online.loop import StreamTrainer
from trainer.online.settings import OnlineTrainerSettings
from trainer.online.synthetic import synthetic_catalog, tiny_config

root, slow, workers, kafka = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
if kafka:  # a group rebalance (the killed member's session running out) takes seconds: no early idle exit
    st = StreamSettings(backend="kafka", kafka=KafkaSettings(bootstrap_servers=kafka.split(","), **KAFKA),
                        known_items="any", known_users="any")
    el, idle = KafkaEventLog(st), 8.0
else:
    st = StreamSettings(log_dir=root / "log", partitions=4, known_items="any", known_users="any")
    el, idle = LocalEventLog(st.resolved_log_dir(), partitions=4), 0.5
cat = synthetic_catalog(40, num_tags=6)
torch.manual_seed(0)
model = build_model(tiny_config(cat), torch.from_numpy(cat.tags))
s = OnlineTrainerSettings(work_dir=root / "work", cold_tags="none", batch_size=32, poll_max=40, idle_exit_s=idle,
                          poll_timeout_s=0.05, checkpoint_every_events=120, checkpoint_every_s=1e9,
                          publish_index=False, publish_every_s=1e9, publish_on_exit=False, threads=1,
                          decode_workers=workers)


class Slow(StreamTrainer):
    def process(self, records, decoded=None):
        time.sleep(slow)  # widen the window in which the parent kills us
        return super().process(records, decoded)


tr = Slow(s, st, event_log=el, init=(model, cat))
print("WORKERS", *(tr.decoder._ex._processes if tr.decoder else []), flush=True)
tr.run()
tr.close()
el.close()
print("DONE")
"""


def _spawn(root: Path, slow: float, workers: int, kafka: str = "") -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(slow), str(workers), kafka], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


_spec = importlib.util.spec_from_file_location("mock_cluster",
                                               Path(__file__).parents[2] / "streaming" / "mock_cluster.py")
mock_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mock_cluster)
CHILD = f"KAFKA = {mock_cluster.CLIENT!r}\n" + CHILD  # the child's client settings: those of the tests' mock cluster


@pytest.fixture(params=["local", pytest.param("kafka-wire", marks=pytest.mark.integration)])
def event_log(request, tmp_path):
    """(event log for the test, bootstrap servers for the child: "" = the local log under tmp_path/log)."""
    if request.param == "local":
        el = LocalEventLog(tmp_path / "log", partitions=4)
        yield el, ""
        el.close()
        return
    with mock_cluster.MockKafkaCluster(brokers=1) as cluster:
        for topic in ("events", "events.dlq"):
            cluster.create_topic(topic, 4)
        el = KafkaEventLog(StreamSettings(backend="kafka", kafka=cluster.kafka_settings()))
        yield el, cluster.bootstrap
        el.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["decode-in-process", "decode-workers"])
def test_sigkill_and_restart_loses_nothing_and_trains_nothing_twice(tmp_path, workers, event_log):
    el, kafka = event_log
    cat = synthetic_catalog(40, num_tags=6)
    evs = synthetic_events(1200, 30, cat.raw_ids, seed=3, extra_ids=[7001, 7002, 7003], p_extra=0.01)
    produce(el, "events", evs)
    seen: set[int] = set()
    expected = 0  # positives with >= 1 earlier positive of the same user (min_history=1)
    for ev in evs:
        expected += ev.user_id in seen
        seen.add(ev.user_id)

    state, score_log = tmp_path / "work" / STATE_FILE, tmp_path / "work" / SCORE_LOG
    p = _spawn(tmp_path, slow=0.05, workers=workers, kafka=kafka)
    line = p.stdout.readline()
    while line and not line.startswith("WORKERS"):
        line = p.stdout.readline()
    pool = [int(x) for x in line.split()[1:]]
    assert len(pool) == workers, line
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.4)  # somewhere after the first checkpoint, before the end
    assert p.poll() is None, p.stdout.read()[-3000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    # its decode workers notice the trainer is gone and exit (nothing left behind by a kill -9)
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pool) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pool if Path(f"/proc/{pid}").exists()], "decode workers outlived the killed trainer"
    _, extra = load_checkpoint(state)
    at_kill = extra["stats"]["records"]
    assert 0 < at_kill < len(evs), "the kill must land mid-stream"
    assert score_log.stat().st_size >= extra["score_log_bytes"]

    p2 = _spawn(tmp_path, slow=0.0, workers=workers, kafka=kafka)
    out, _ = p2.communicate(timeout=300)
    assert p2.returncode == 0 and "DONE" in out, out[-3000:]

    model, extra = load_checkpoint(state)
    stats = extra["stats"]
    assert stats["resumes"] == 1
    assert stats["records"] == len(evs)
    assert stats["samples"] == expected  # nothing lost, nothing trained twice
    rows = read_score_log(score_log)
    keys = [(r["p"], r["o"]) for r in rows]
    assert len(keys) == len(set(keys)) == expected
    assert stats["cold_items"] == 3 and model.encode_items().shape[0] == 44
    # offsets committed to the group == the checkpoint's == end of the log
    c = el.consumer("events", "trainer-online", partitions=[0, 1, 2, 3])  # assigned: no group join needed
    assert c.committed() == {int(k): v for k, v in extra["offsets"].items()} == c.end_offsets()
    c.close()
    # the running prequential figure restored from the checkpoint matches the (truncated + resumed) log
    again = recompute(score_log, [20])
    n, sums = extra["prequential"]["online"]["n"], extra["prequential"]["online"]["sums"]
    assert n == expected and abs(sums["recall@20"] / n - again["recall@20"]) < 1e-12
    assert torch.isfinite(model.encode_items()).all()
