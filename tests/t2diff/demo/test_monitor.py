"""Freshness monitor logic with fake read paths (no thread, no services): which sample each lag comes from."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from t2diff.demo.monitor import FreshnessMonitor
from t2diff.demo.replay import Produced


class FakeRegistry:
    def __init__(self):
        self.metas = {}

    def versions(self):
        return sorted(self.metas)

    def meta(self, v):
        return self.metas[v]


def test_event_to_feature_waits_for_the_event():
    mon = FreshnessMonitor(None, None, None)
    t0 = time.time() - 2.0
    mon.on_flush(Produced(max_event_ts_ms=1000, user_id=7, wall_s=t0))
    stale = SimpleNamespace(get_user_features=lambda ids: [SimpleNamespace(last_event_ms=999)])
    mon._probe_features(stale)
    assert mon.samples["event_to_feature"] == []  # not visible yet: no sample, probe still pending
    fresh = SimpleNamespace(get_user_features=lambda ids: [SimpleNamespace(last_event_ms=1000)])
    mon._probe_features(fresh)
    (lag,) = mon.samples["event_to_feature"]
    assert 2000 <= lag < 10_000
    mon._probe_features(fresh)  # no probe in flight any more
    assert len(mon.samples["event_to_feature"]) == 1


def test_event_to_model_version_and_index_and_serving():
    reg = FakeRegistry()
    mon = FreshnessMonitor(None, reg, None)
    mon._t_start = 0.0
    now = time.time()
    mon.on_flush(Produced(100, 1, now - 30))
    mon.on_flush(Produced(200, 1, now - 20))
    mon.on_flush(Produced(300, 1, now - 10))
    reg.metas[2] = {"created_at": now - 15, "max_event_ts_ms": 250, "source": "online",
                    "metrics": {"n": 5, "online": {"recall@100": 0.2}, "online_window": {"recall@100": 0.3}}}
    mon._poll_registry(None)
    # the first two flushes are covered by version 2: lags 15 s and 5 s; the third waits
    assert mon.samples["event_to_model_version"] == pytest.approx([15_000, 5_000], abs=1)
    reg.metas[3] = {"created_at": now - 1, "max_event_ts_ms": 400, "source": "online", "metrics": {}}
    mon._poll_registry(None)
    assert mon.samples["event_to_model_version"][-1] == pytest.approx(9_000, abs=1)
    index = SimpleNamespace(live_version=lambda: 3)
    mon._poll_index(index)
    mon._poll_index(index)  # same version seen again: one sample only
    assert len(mon.samples["model_to_index"]) == 1 and 900 <= mon.samples["model_to_index"][0] < 5_000
    mon.on_answer("3")
    mon.on_answer("3")
    mon.on_answer(None)
    assert len(mon.samples["model_to_serving"]) == 1
    assert mon.trainer_prequential() == [{"version": 2, "event_ts_ms": 250, "recall": 0.3,
                                          "metric": "online_window recall@100", "n": 5}]
