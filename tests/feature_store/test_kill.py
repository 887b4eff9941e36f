"""Exactly-once effects across crashes: SIGKILL a real consumer process mid-stream, restart it, and compare
the online store with the state computed by applying every event exactly once. Plus deterministic crashes
injected at each point between the online-store write and the offset commit."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from feature_store.client import FeatureClient
from feature_store.consumer import FeatureConsumer
from feature_store.repo import apply_repo
from feature_store.session import SessionRules, UserState, apply_event
from feature_store.settings import FeatureSettings
from streaming.deadletter import read_dead_letters
from streaming.events import Event, EventError, decode, encode
from streaming.log import open_event_log
from streaming.settings import StreamSettings
from streaming.vocab import Vocabulary

T0 = 1_650_000_000_000
ENV = {"T2DIFF_STREAM__KNOWN_ITEMS": "any", "T2DIFF_STREAM__KNOWN_USERS": "any"}


def make_stream(n=2000, users=40, seed=0):
    """Events with duplicates, late arrivals and garbage mixed in, as (key, bytes)."""
    rng = random.Random(seed)
    out, sent = [], []
    for i in range(n):
        u = rng.randrange(users)
        r = rng.random()
        if r < 0.03 and sent:
            out.append(rng.choice(sent))  # duplicate delivery
            continue
        if r < 0.05:
            out.append((str(u).encode(), b'{"user_id": ' + str(u).encode()))  # truncated JSON
            continue
        t = T0 + i * 1000 - (rng.randrange(120_000) if r < 0.15 else 0)  # some late events
        e = Event(user_id=u, item_id=rng.randrange(500), event_type=rng.choice(["click", "play", "impression"]),
                  ts_ms=t, idempotency_key=f"e{i}")
        sent.append((str(u).encode(), encode(e)))
        out.append(sent[-1])
    return out


def expected_states(records, rules):
    states = {}
    for _, raw in records:
        try:
            ev = decode(raw)
            apply_event(states.setdefault(ev.user_id, UserState()), ev, rules)
        except EventError:
            pass
    return states


def rules_of(f: FeatureSettings):
    return SessionRules(f.max_items, f.session_gap_ms, f.out_of_order_window_ms, frozenset(f.positive_types))


def check_online(feats, store, states):
    users = sorted(states)
    got = FeatureClient(feats, store=store).get_user_features(users)
    for u, g in zip(users, got):
        s = states[u]
        assert g is not None, f"user {u} missing"
        assert (g.last_items, g.last_ts_ms) == (s.items, s.ts), f"user {u}: items differ"
        assert [g.counts[c] for c in ("n_impressions", "n_clicks", "n_plays", "n_likes", "n_follows")] == \
            s.counts, f"user {u}: counts differ (lost or double-applied events)"
        assert (g.session_start_ms, g.session_events) == (s.session_start_ms, s.session_events)
        assert g.session_items == s.session_items()


def saved_progress(path):
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        (n,) = con.execute("SELECT COALESCE(SUM(offset), 0) FROM offsets").fetchone()
        con.close()
        return n
    except sqlite3.Error:
        return 0


@pytest.mark.integration
def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    env = dict(os.environ)
    stream, feats = StreamSettings(), FeatureSettings(batch_size=20)
    records = make_stream()
    with open_event_log(stream) as log:
        for k, v in records:
            log.produce(stream.topic, k, v)
    cmd = [sys.executable, "-m", "t2diff.cli", "stream", "features", "--no-materialize", "--batch-size", "20"]
    state_path = feats.resolved_state_path()
    kills = 0
    for frac in (0.4,):  # one kill: each process start pays Feast's import (seconds on 2 busy cores)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while saved_progress(state_path) < frac * len(records) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.005)
        time.sleep(random.Random(kills).random() * 0.05)  # land anywhere inside a step
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        assert saved_progress(state_path) < len(records), "consumer finished before it could be killed"
    # Restart (in this process: a second child would pay Feast's import again) on the files the killed
    # process left behind.
    store = apply_repo(feats, materialize_items=False)
    c = FeatureConsumer(stream, feats, store=store)
    c.run(idle_exit_s=1.0)
    c.close()
    check_online(feats, store, expected_states(records, rules_of(feats)))
    with open_event_log(stream) as log:
        dl = read_dead_letters(log, stream.dead_letter_topic)
        c = log.consumer(stream.topic, feats.group)
        assert c.lag() == 0
        c.close()
    # Dead letters are at-least-once: a repeat has the same source, and none is missing.
    n_bad = sum(1 for _, v in records if not v.endswith(b"}"))
    bad_sources = {(d["source"]["partition"], d["source"]["offset"]) for d in dl if d["reason"] == "malformed_json"}
    assert len(bad_sources) == n_bad, "a malformed record was lost"


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["after_push", "after_save"])
def test_injected_crash_between_write_and_commit(where):
    stream, feats = StreamSettings(linger_ms=0), FeatureSettings(batch_size=50)
    store = apply_repo(feats, materialize_items=False)
    records = make_stream(n=300, users=10, seed=1)
    vocab = Vocabulary(None, None)
    with open_event_log(stream) as log:
        for k, v in records:
            log.produce(stream.topic, k, v)
        c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=vocab)
        c.step()
        target = c.state if where == "after_push" else c.consumer
        name = "save" if where == "after_push" else "commit"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(target, name, lambda *a, **k: (_ for _ in ()).throw(Crash()))
            with pytest.raises(Crash):
                c.step()  # the second batch reached the online store; its offsets did not move
        c.close()
        c = FeatureConsumer(stream, feats, event_log=log, store=store, vocab=vocab)
        c.run(idle_exit_s=0.3)
        c.close()
    check_online(feats, store, expected_states(records, rules_of(feats)))
