"""The same consumer and client against Feast's Redis online store, on a real redis-server started here."""
import shutil
import socket
import subprocess
import time

import pytest
import redis

from feature_store.client import FeatureClient
from feature_store.consumer import FeatureConsumer
from feature_store.repo import apply_repo, render_config
from feature_store.settings import FeatureSettings
from streaming.events import Event, encode
from streaming.log import open_event_log
from streaming.settings import StreamSettings
from streaming.vocab import Vocabulary

T0 = 1_650_000_000_000


@pytest.fixture
def redis_port(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not installed (make system-deps installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield port
    proc.terminate()
    proc.wait(10)


def test_render_config_switches_online_store():
    cfg = render_config(FeatureSettings(online_store="redis", redis_connection_string="h:1"))
    assert cfg["online_store"] == {"type": "redis", "connection_string": "h:1", "skip_dedup": True}
    assert render_config(FeatureSettings())["online_store"]["type"] == "sqlite"


@pytest.mark.integration
def test_consumer_writes_redis_online_store(redis_port):
    stream = StreamSettings(linger_ms=0)
    feats = FeatureSettings(online_store="redis", redis_connection_string=f"127.0.0.1:{redis_port}")
    store = apply_repo(feats, materialize_items=False)
    evs = [Event(user_id=5, item_id=i, event_type="click", ts_ms=T0 + i * 1000, idempotency_key=f"k{i}")
           for i in (1, 3, 2)]  # the last one is late: the row must still be updated (skip_dedup)
    with open_event_log(stream) as log:
        for e in evs:
            log.produce(stream.topic, b"5", encode(e))
            log.flush()
            c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=Vocabulary(None, None))
            c.run(idle_exit_s=0.1)
            c.close()
    (u,) = FeatureClient(feats, store=store).get_user_features([5])
    assert u.last_items == [1, 2, 3] and u.counts["n_clicks"] == 3
    assert redis.Redis(port=redis_port).dbsize() >= 1
