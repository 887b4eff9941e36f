"""`t2diff demo`: the whole loop on one machine, through each component's public entry point.

Phases (each logs its wall time; a component that is missing or fails is listed under "skipped" in the report,
never replaced by made-up figures):
  1. request moments from the KuaiRand-Pure log, day split (warm start | replay), seeded sample;
  2. one config YAML for every process under ``<out>/state``; serving's popularity counts come from the warm
     days only (it must not know the future);
  3. offline warm start (``t2diff train offline``) of T2Diff and of the SASRec control on the warm days;
  4. the stack: feature consumer (``t2diff stream features``), the warm days' events into the event log,
     the stream trainer (``t2diff train stream``, starting after the warm days), Ray Serve (``t2diff serve``);
  5. the replay: events in time order; at each sampled request moment every arm is asked over HTTP *before*
     the moment's own events are produced (test-then-train), the logged engagement of the candidates the user
     really watched is posted to /feedback; freshness is sampled meanwhile;
  6. drain, report (text + JSON + PNGs), stop every child.
"""

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from t2diff.demo.report import build_report, format_report, write_report
from t2diff.demo.settings import DemoSettings
from t2diff.demo.setup import DemoSetup
from t2diff.demo.stack import ChildDied, Stack, t2diff_cmd

log = logging.getLogger(__name__)


class Demo(DemoSetup):
    def _monitor(self):
        from t2diff.demo.monitor import FreshnessMonitor
        from t2diff.registry import ModelRegistry

        def features():
            from feature_store.client import FeatureClient
            from feature_store.settings import FeatureSettings

            return FeatureClient(FeatureSettings.load(self.cfg_path, key="features"))

        def index():
            from t2diff.index import IndexSettings, ItemIndex

            return ItemIndex(settings=IndexSettings.load(self.cfg_path, key="index"))

        return FreshnessMonitor(features if self.features_ok else None, ModelRegistry(self.cfg["registry"]["root"]),
                                index if self.trainer_ok else None)

    def replay(self) -> None:
        from t2diff.demo.replay import timed_events

        t = time.time()
        rows = self.events_df[(self.event_times >= self.split.warm_end_ms) & (self.event_times < self.split.replay_end_ms)]
        if not self.s.replay_impressions:  # the stream: clicks, plays / long views, likes, follows
            rows = rows[rows["event_type"] != "impression"]
        events = timed_events(rows)
        nxt = next(events, None)
        span_ms = self.split.replay_end_ms - self.split.warm_end_ms
        wall_span = 60.0 * self.s.replay_minutes
        self.answers: dict[str, dict[str, list[int]]] = {}
        self.latency: dict[str, list[float]] = {}
        self.fallbacks: dict[str, int] = {}
        self.versions_seen: dict[str, set] = {}
        self.feedback_events = 0
        self.monitor = self._monitor()
        self.monitor.start()
        observe = getattr(self.client, "observe", None)  # in-process mode keeps its own histories
        t_start = time.time()
        bar = tqdm(self.moments, desc="replay requests", unit="req", file=sys.stderr, mininterval=2)
        for i, m in enumerate(bar):
            nxt = self._produce_until(events, nxt, m.ts_ms, observe)  # everything before the moment goes in first
            if wall_span > 0:  # pace event time against the wall clock so the trainer can publish versions
                due = t_start + wall_span * (m.ts_ms - self.split.warm_end_ms) / span_ms
                if due > time.time():
                    time.sleep(due - time.time())
            if i % 20 == 0:
                self.stack.check()
                bar.set_postfix(events=self.producer.count, versions=len(self.monitor.versions))
            if self.client is not None:
                self._ask(m)
        self._produce_until(events, nxt, None)  # the rest of the replay window, after the last moment
        bar.close()
        log.info("replay: %d events produced, %d requests asked, %d feedback events", self.producer.count,
                 len(self.answers), self.feedback_events)
        self._phase("replay", t)

    def _produce_until(self, events, nxt, until_ms: int | None, observe=None):  # noqa: ANN001
        """Produce the pending event ``nxt`` and those after it with event time < ``until_ms`` (all when None),
        flush, and return the first event not produced. Each flush is reported to the freshness monitor."""
        while nxt is not None and (until_ms is None or nxt[0] < until_ms):
            if observe is not None:
                observe(nxt[2])
            self._on_flush(self.producer.produce(*nxt))
            nxt = next(events, None)
        self._on_flush(self.producer.flush())
        return nxt

    def _on_flush(self, flushed) -> None:  # noqa: ANN001
        if flushed is not None:
            self.monitor.on_flush(flushed)

    def _ask(self, m) -> None:  # noqa: ANN001
        arms = [a["name"] for a in self.arms] if self.client.mode != "sticky" else [None]
        for arm in arms:
            if self.client.mode == "in_process":
                ans = self.client.recall(m.user_id, self.s.k, arm, now_ms=m.ts_ms)
            else:
                ans = self.client.recall(m.user_id, self.s.k, arm)
            if ans is None:
                continue
            self.answers.setdefault(m.request_id, {})[ans.arm] = ans.items
            self.latency.setdefault(ans.arm, []).append(ans.latency_ms)
            self.fallbacks[ans.arm] = self.fallbacks.get(ans.arm, 0) + int(ans.fallback)
            self.versions_seen.setdefault(ans.arm, set()).add(ans.model_version)
            self.monitor.on_answer(ans.model_version)
            self.feedback_events += self.client.feedback(m, ans)

    # --- 6. drain + report -----------------------------------------------------------------------------------
    def drain(self) -> None:
        t = time.time()
        deadline = self.s.drain_timeout_s
        if self.features_ok and not self._wait_lag(self.cfg["features"].get("group", "features"), deadline,
                                                    "feature consumer (drain)"):
            self.skipped.append(f"feature consumer still lagging after a {deadline:.0f} s drain")
        if self.trainer_ok and not self._wait_trainer(max(5.0, deadline - (time.time() - t))):
            self.skipped.append("the stream trainer had not published a version covering the last replayed event "
                                "by the end of the drain")
        time.sleep(min(2.0, self.monitor.poll_s * 5))  # one more registry / index poll
        self.monitor.stop()
        self._phase("drain", t)

    def _wait_trainer(self, timeout_s: float) -> bool:
        """The trainer has caught up when a published version covers the newest replayed event (its committed
        offsets move only at checkpoints, so consumer lag would under-report it)."""
        # max_event_ts_ms of a version = the newest *positive* (click) it trained on
        ev = self.events_df
        clicks = ev[(self.event_times >= self.split.warm_end_ms) & (self.event_times < self.split.replay_end_ms)
                    & (ev["event_type"] == "click")]
        if clicks.empty:
            return True
        last = int(clicks["ts_ms"].max())
        t0, said = time.time(), 0.0
        while time.time() - t0 < timeout_s:
            self.stack.check()
            covered = max((int(m.get("max_event_ts_ms") or 0) for m in self.monitor.versions.values()), default=0)
            if covered >= last:
                return True
            if time.time() - said > 5:
                log.info("waiting for the stream trainer to publish a version covering the replay (%.0f s)",
                         time.time() - t0)
                said = time.time()
            time.sleep(0.5)
        return False

    def ab_report_of_serving(self) -> None:
        """The serving app's own view (`t2diff ab report` over its feedback log), saved beside our report."""
        fb = Path(self.cfg["serving"]["feedback_log"])
        if self.client is None or self.client.mode == "in_process" or not fb.exists():
            return
        import subprocess

        out = self.out / "serving_ab_report"
        r = subprocess.run(t2diff_cmd("ab", "report", "--config", str(self.cfg_path), "--log", str(fb),
                                      "--out", str(out)), capture_output=True, text=True, timeout=120)
        (self.out / "serving_ab_report.txt").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            self.skipped.append(f"`t2diff ab report` on the feedback log failed (rc {r.returncode})")

    def report(self) -> dict[str, Any]:
        import os
        import platform

        mon = self.monitor
        for k, why in mon.errors.items():
            self.skipped.append(f"freshness probe '{k}': {mon.error_counts.get(k, 1)} failed polls (last: {why})")
        for k, n in mon.censored.items():
            if n:
                self.skipped.append(f"{k}: {n} probes timed out (not in the percentiles)")
        for k, v in mon.samples.items():
            if not v:
                self.skipped.append(f"{k}: no samples in this run")
        if self.client is not None and self.client.mode != "in_process":
            if self.client.mode == "sticky":
                self.skipped.append("serving answers only the sticky arm: arms compared as independent samples")
            if self.client.errors:
                self.skipped.append(f"{self.client.errors} HTTP calls failed")
        meta = {
            "split": self.split.describe(),
            "requests_note": f"{len(self.moments)} sampled of {self.moment_counts['moments']} eligible moments "
                             f"({self.moment_counts}); horizon {self.s.horizon_hours} h / {self.s.horizon_events} items; "
                             f"K={self.s.k}; EV = long_view or play >= {self.s.ev_threshold_ms} ms",
            "wall_s": round(time.time() - self.t0, 1),
            "phases_s": self.timings,
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
            "command": " ".join(sys.argv),
            "client_mode": None if self.client is None else self.client.mode,
            "arm_switch_retries": None if self.client is None else self.client.switch_retries,
            "fallback_answers": self.fallbacks,
            "model_versions_served": {a: sorted((str(v) for v in vs if v is not None), key=lambda x: (len(x), x))
                                      for a, vs in self.versions_seen.items()},
            "registry_versions": len(mon.versions),
            "events_produced": getattr(getattr(self, "producer", None), "count", 0),
            "feedback_events": self.feedback_events,
            "arms": {a["name"]: a["source"] for a in self.arms},
        }
        answered = {a for v in self.answers.values() for a in v}
        control = self.s.control_arm or ("control" if "control" in answered else None)
        rep = build_report(self.moments, self.answers, latency_ms=self.latency, freshness_ms=mon.samples,
                           trainer_prequential=mon.trainer_prequential(), control=control,
                           buckets=self.s.prequential_buckets, meta=meta, skipped=self.skipped)
        paths = write_report(rep, self.out)
        rep["meta"]["files"] = {k: str(v) for k, v in paths.items()}
        (self.out / "report.json").write_text(
            json.dumps({k: v for k, v in rep.items() if not k.startswith("_")}, indent=2, default=str))
        return rep


def run_demo(s: DemoSettings, out_dir: Path | None = None) -> dict[str, Any]:
    """The whole demo; returns the report (also written under ``out_dir``). Every child is stopped on the way out,
    Ctrl-C included."""
    from t2diff.paths import runs_dir

    out = Path(out_dir or s.out_dir or runs_dir() / "demo")
    demo = Demo(s, out)
    demo.prepare()
    demo.write_config()
    try:
        with Stack(demo.state / "logs", env={"T2DIFF_RUNS_DIR": str(demo.state)}) as stack:
            demo.warm_start(stack)
            try:
                demo.start_stack(stack)
                demo.replay()
                demo.drain()
            except ChildDied as e:
                # Report what was measured up to the failure rather than nothing; the reason leads the skipped list.
                log.error("a component died: %s", e)
                demo.skipped.insert(0, f"a component died mid-run: {str(e).splitlines()[0]}")
                if getattr(demo, "monitor", None) is not None:
                    demo.monitor.stop()
                if not hasattr(demo, "answers"):
                    demo.answers, demo.latency, demo.fallbacks, demo.versions_seen, demo.feedback_events = {}, {}, {}, {}, 0
                    demo.monitor = demo._monitor()
            finally:
                if getattr(demo, "client", None) is not None:
                    demo.client.close()
                if getattr(demo, "event_log", None) is not None:
                    demo.event_log.close()
    finally:
        _stop_milvus(demo)  # after every child has stopped (the trainer publishes a last version on exit)
    try:
        demo.ab_report_of_serving()
    except Exception as e:  # noqa: BLE001 -- an extra view; the demo's own report does not depend on it
        demo.skipped.append(f"`t2diff ab report` failed: {e}")
    rep = demo.report()
    print(format_report(rep))
    print(f"report: {out / 'report.txt'}  json: {out / 'report.json'}  plots: {out}/*.png")
    return rep


def _stop_milvus(demo: Demo) -> None:
    """The loopback Milvus Lite server is started detached by t2diff.index; stop it with the same module."""
    try:
        from t2diff.lite_server import stop_lite_server

        stop_lite_server(demo.cfg["index"]["uri"])
    except Exception as e:  # noqa: BLE001
        log.debug("milvus lite stop: %s", e)

