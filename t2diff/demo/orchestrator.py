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
from __future__ import annotations

import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from t2diff.demo.moments import day_split, extract_request_moments, sample_moments
from t2diff.demo.report import build_report, format_report, write_report
from t2diff.demo.settings import DemoSettings
from t2diff.demo.stack import ChildDied, Stack, t2diff_cmd

log = logging.getLogger(__name__)

ARMS = [  # name -> serving source; "control" is the lift baseline
    {"name": "treatment", "source": "t2diff"},  # online-learning T2Diff from the registry, Milvus index
    {"name": "frozen", "source": "t2diff_frozen"},  # the warm-start T2Diff, never updated (isolates online learning)
    {"name": "control", "source": "sasrec"},  # SASRec warm start (a plain sequential two-tower baseline)
    {"name": "popular", "source": "popularity"},  # most watched on the warm days
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


class Demo:
    def __init__(self, s: DemoSettings, out_dir: Path) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar
        self.s, self.out = s, Path(out_dir)
        self.state = self.out / "state"
        self.skipped: list[str] = []
        self.timings: dict[str, float] = {}
        self.t0 = time.time()

    def _phase(self, name: str, t: float) -> None:
        self.timings[name] = round(time.time() - t, 1)
        log.info("phase %s done in %.1f s", name, self.timings[name])

    # --- 1. request moments ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        from t2diff.data import load_kuairand_log

        t = time.time()
        self.log_df = load_kuairand_log().sort_values(["time_ms", "user_id"], kind="stable").reset_index(drop=True)
        self.times = self.log_df["time_ms"].to_numpy(np.int64)
        self.split = day_split(self.log_df, self.s.warm_days, self.s.replay_days)
        allm, self.moment_counts = extract_request_moments(
            self.log_df, self.split, session_gap_ms=int(self.s.session_gap_min * 60_000),
            min_history=self.s.min_history, horizon_ms=int(self.s.horizon_hours * 3_600_000),
            horizon_events=self.s.horizon_events, ev_threshold_ms=self.s.ev_threshold_ms)
        self.moments = sample_moments(allm, self.s.max_requests, self.s.seed)
        log.info("%s; %d request moments (of %d eligible)", self.split.describe(), len(self.moments), len(allm))
        self._phase("prepare", t)

    # --- 2. config -------------------------------------------------------------------------------------------
    def write_config(self) -> Path:
        import json
        import shutil

        from t2diff.demo.direct import popular_items

        if self.state.exists():
            # Every run starts from nothing: a previous run's event log, trainer state or registry would be
            # resumed by the children and mix two runs. (A stale Milvus Lite server of that dir goes first.)
            log.info("removing the previous run's state %s", self.state)
            try:
                from t2diff.index import stop_lite_server

                stop_lite_server(self.state / "milvus" / "items.db")
            except Exception as e:  # noqa: BLE001
                log.debug("no stale milvus server: %s", e)
            shutil.rmtree(self.state)
        self.state.mkdir(parents=True, exist_ok=True)
        # Serving's popularity source: watch counts of the warm days only (it must not know the future).
        past = self.log_df[self.times < self.split.warm_end_ms]
        watched = past[(past["is_click"] == 1) | (past["long_view"] == 1)]["video_id"].value_counts()
        self.popularity_path = self.state / "popularity_warm_days.json"
        self.popularity_path.write_text(json.dumps({str(int(k)): int(v) for k, v in watched.items()}))
        self.popular_items = popular_items(self.log_df, self.split.warm_end_ms)
        self.port = _free_port()
        self.ckpt = {"t2diff": self.state / "ckpt" / "t2diff_warm.pt", "sasrec": self.state / "ckpt" / "sasrec_warm.pt"}
        self.arms_file = self.state / "arms.yaml"
        sources = {
            "t2diff": {"kind": "model", "registry": True, "index": "milvus", "dataset": "kuairand"},
            "t2diff_frozen": {"kind": "model", "registry": False, "checkpoint": str(self.ckpt["t2diff"]),
                              "index": "exact", "dataset": "kuairand"},
            "sasrec": {"kind": "model", "registry": False, "checkpoint": str(self.ckpt["sasrec"]),
                       "index": "exact", "dataset": "kuairand"},
            "popularity": {"kind": "popularity", "dataset": "kuairand", "counts_path": str(self.popularity_path)},
        }
        self.arms = [dict(a, weight=1.0) for a in ARMS if not self.s.arms or a["name"] in self.s.arms]
        self.experiment = {"name": "demo_replay", "salt": f"demo-{self.s.seed}"}
        self.arms_file.write_text(yaml.safe_dump({"experiment": {**self.experiment, "arms": self.arms}}))
        cfg = {
            "stream": {"log_dir": str(self.state / "eventlog")},
            "features": {"repo_dir": str(self.state / "feature_repo"), "dataset": "kuairand"},
            "registry": {"root": str(self.state / "registry")},
            "index": {"uri": str(self.state / "milvus" / "items.db")},
            "online_trainer": {"init_checkpoint": str(self.ckpt["t2diff"]), "work_dir": str(self.state / "online"),
                               "device": "cpu", "threads": 1, "publish_every_s": 20.0, "compare_frozen": False},
            "serving": {
                "host": "127.0.0.1", "port": self.port, "config_path": str(self.state / "config.yaml"),
                "experiment": {**self.experiment, "arms": self.arms}, "arms_file": str(self.arms_file),
                "arms_reload_s": 0.01, "sources": sources, "fallback_source": "popularity",
                "features": {"kind": "feast", "dataset": "kuairand"}, "k_default": self.s.k,
                "k_max": max(self.s.k, 200), "timeout_s": 10.0,
                "feedback_log": str(self.state / "feedback" / "feedback.jsonl"),
            },
        }
        self.cfg_path = self.state / "config.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.cfg = cfg
        return self.cfg_path

    # --- 3. warm start ---------------------------------------------------------------------------------------
    def warm_start(self, stack: Stack) -> None:
        t = time.time()
        for arch, path in self.ckpt.items():
            if path.exists():
                log.info("warm start %s: reusing %s", arch, path)
                continue
            argv = t2diff_cmd("train", "offline", "--dataset", "kuairand", "--arch", arch, "--preset",
                              self.s.offline_preset, "--until-ms", str(self.split.warm_end_ms), "--catalog-all",
                              "--out", str(path), "--device", "cpu", "--threads", "1", "--seed", str(self.s.seed))
            if self.s.offline_epochs:
                argv += ["--max-epochs", str(self.s.offline_epochs)]
            rc = stack.run(f"offline_{arch}", argv, timeout_s=600)
            if rc != 0 or not path.exists():
                self.skipped.append(f"offline warm start of {arch} failed (rc {rc}); see {stack.log_dir}/offline_{arch}.log")
        self._phase("warm_start", t)

    # --- 4. the stack ----------------------------------------------------------------------------------------
    def _event_log(self):
        from streaming.log import open_event_log
        from streaming.settings import StreamSettings

        self.stream_settings = StreamSettings.load(self.cfg_path, key="stream")
        return open_event_log(self.stream_settings)

    def _lag(self, group: str) -> int | None:
        try:
            c = self.event_log.consumer(self.stream_settings.topic, group)
            try:
                return c.lag()
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001
            log.debug("lag of %s: %s", group, e)
            return None

    def _wait_lag(self, group: str, timeout_s: float, what: str) -> bool:
        t0, last = time.time(), None
        while time.time() - t0 < timeout_s:
            self.stack.check()
            lag = self._lag(group)
            if lag == 0:
                return True
            if lag is not None and (last is None or time.time() - last > 5):
                log.info("waiting for %s: lag %s records (%.0f s)", what, lag, time.time() - t0)
                last = time.time()
            time.sleep(0.5)
        return False

    def start_stack(self, stack: Stack) -> None:
        from t2diff.demo.replay import EventProducer, timed_events

        self.stack = stack
        t = time.time()
        self.event_log = self._event_log()
        self.producer = EventProducer(self.event_log, self.stream_settings.topic, self.s.replay_batch)
        cfg = str(self.cfg_path)
        # Feature consumer first: the warm days' events build every user's session features.
        self.features_ok = _module_available("feature_store.consumer")
        if self.features_ok:
            stack.start("features", t2diff_cmd("stream", "features", "--config", cfg))
        else:
            self.skipped.append("feature consumer (feature_store.consumer) not available: no Feast features")
        from streaming.replay import kuairand_frame

        self.events_df = kuairand_frame()  # time-ordered events of the whole slice, the streaming package's mapping
        self.event_times = self.events_df["ts_ms"].to_numpy(np.int64)
        # The warm days only need to build session features: their impressions (half the volume) stay out.
        warm = self.events_df[(self.event_times < self.split.warm_end_ms) & (self.events_df["event_type"] != "impression")]
        n = 0
        for ts, u, ev in tqdm(timed_events(warm), desc="warm-day events -> log", unit="ev", mininterval=2,
                              total=None, file=sys.stderr):
            self.producer.produce(ts, u, ev)
            n += 1
        self.producer.flush()
        log.info("produced %d warm-day events", n)
        if self.features_ok:
            group = self.cfg["features"].get("group", "features")
            if not self._wait_lag(group, self.s.startup_timeout_s, "feature consumer (warm days)"):
                self.skipped.append("feature consumer did not catch up with the warm days in time")
        self._phase("stack_features", t)
        t = time.time()
        # Version 1 = the offline warm start, published the way the trainer publishes (registry, Milvus, LATEST),
        # so the treatment arm serves a model from the first request on.
        if self.ckpt["t2diff"].exists():
            try:
                self._publish_warm_start()
            except Exception as e:  # noqa: BLE001 -- the treatment arm then falls back until the trainer publishes
                log.exception("publishing the warm start failed")
                self.skipped.append(f"publishing the warm start as version 1 failed: {e}")
        # Stream trainer: its group starts after the warm days (the offline warm start already learned them).
        self.trainer_ok = _module_available("trainer.online.cli") and self.ckpt["t2diff"].exists()
        if self.trainer_ok:
            from trainer.online.settings import OnlineTrainerSettings

            group = OnlineTrainerSettings.load(self.cfg_path, key="online_trainer").group
            c = self.event_log.consumer(self.stream_settings.topic, group)
            c.commit(c.end_offsets())
            c.close()
            stack.start("trainer", t2diff_cmd("train", "stream", "--config", cfg))
            self.trainer_group = group
        else:
            self.skipped.append("stream trainer (trainer.online.cli) not available: the treatment arm does not learn online")
        self._phase("stack_trainer", t)
        t = time.time()
        self.client = None
        if _module_available("serving.cli") and not self.s.in_process:
            from t2diff.demo.replay import RecallClient

            client = RecallClient(f"http://127.0.0.1:{self.port}", self.arms, self.experiment, self.arms_file,
                                  timeout_s=self.s.http_timeout_s)
            try:
                stack.start("serve", t2diff_cmd("serve", "--config", cfg), ready=client.healthy,
                            timeout_s=self.s.startup_timeout_s)
                log.info("recall client mode: %s", client.detect_mode())
                self.client = client
            except (ChildDied, TimeoutError) as e:
                stack.stop("serve")
                self.skipped.append(f"serving failed to start ({str(e).splitlines()[0]}); see {stack.log_dir}/serve.log")
        elif not self.s.in_process:
            self.skipped.append("serving (serving.cli) not available")
        if self.client is None:
            self.client = self._direct_client(warm)
        self._phase("stack_serve", t)

    def _direct_client(self, warm: pd.DataFrame):
        """Degraded mode: the same arms answered in process (no HTTP, no serving latency)."""
        from t2diff.demo.direct import DirectRecall

        self.skipped.append("arms answered IN PROCESS (t2diff.demo.direct), not through the HTTP API: "
                            "latency figures are in-process model time, not serving latency")
        client = DirectRecall(self.arms, {"t2diff_frozen": self.ckpt["t2diff"], "sasrec": self.ckpt["sasrec"]},
                              Path(self.cfg["registry"]["root"]) if self.trainer_ok else None,
                              self.popular_items)
        client.observe_frame(warm)
        return client

    def _publish_warm_start(self) -> None:
        from t2diff.data import Catalog
        from t2diff.index import IndexSettings, ItemIndex
        from t2diff.model import load_checkpoint
        from t2diff.registry import ModelRegistry, RegistrySettings
        from trainer.online.publish import Publisher

        model, extra = load_checkpoint(self.ckpt["t2diff"], map_location="cpu")
        cat = Catalog.from_dict(extra["catalog"])
        reg = ModelRegistry(settings=RegistrySettings.load(self.cfg_path, key="registry"))
        if reg.latest() is not None:
            return
        index = ItemIndex(settings=IndexSettings.load(self.cfg_path, key="index"))
        try:
            Publisher(reg, index, background=False).submit(
                model, cat, extra={k: v for k, v in extra.items() if k != "catalog"}, metrics={}, offsets={},
                produce_ts_ms=np.zeros(0, dtype=np.int64), max_event_ts_ms=self.split.warm_end_ms - 1,
                source="offline_warm_start")
        finally:
            index.close()
        log.info("published the warm start as version %s", reg.latest())

    # --- 5. replay -------------------------------------------------------------------------------------------
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
        if not self.s.replay_impressions:  # the issue's stream: clicks, plays / long views, likes, follows
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
            while nxt is not None and nxt[0] < m.ts_ms:  # everything before the moment goes in first
                if observe is not None:
                    observe(nxt[2])
                p = self.producer.produce(*nxt)
                if p is not None:
                    self.monitor.on_flush(p)
                nxt = next(events, None)
            p = self.producer.flush()
            if p is not None:
                self.monitor.on_flush(p)
            if wall_span > 0:  # pace event time against the wall clock so the trainer can publish versions
                due = t_start + wall_span * (m.ts_ms - self.split.warm_end_ms) / span_ms
                if due > time.time():
                    time.sleep(due - time.time())
            if i % 20 == 0:
                self.stack.check()
                bar.set_postfix(events=self.producer.count, versions=len(self.monitor.versions))
            if self.client is not None:
                self._ask(m)
        while nxt is not None:
            p = self.producer.produce(*nxt)
            if p is not None:
                self.monitor.on_flush(p)
            nxt = next(events, None)
        p = self.producer.flush()
        if p is not None:
            self.monitor.on_flush(p)
        bar.close()
        log.info("replay: %d events produced, %d requests asked, %d feedback events", self.producer.count,
                 len(self.answers), self.feedback_events)
        self._phase("replay", t)

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
            self.skipped.append(f"freshness probe '{k}' failed: {why}")
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
            __import__("json").dumps({k: v for k, v in rep.items() if not k.startswith("_")}, indent=2, default=str))
        return rep


def run_demo(s: DemoSettings, out_dir: Path | None = None) -> dict[str, Any]:
    """The whole demo; returns the report (also written under ``out_dir``). Every child is stopped on the way out,
    Ctrl-C included."""
    from t2diff.paths import runs_dir

    out = Path(out_dir or s.out_dir or runs_dir() / "demo")
    demo = Demo(s, out)
    demo.prepare()
    demo.write_config()
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
            _stop_milvus(demo)
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
        from t2diff.index import stop_lite_server

        stop_lite_server(demo.cfg["index"]["uri"])
    except Exception as e:  # noqa: BLE001
        log.debug("milvus lite stop: %s", e)
