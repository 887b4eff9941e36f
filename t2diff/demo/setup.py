"""Setting the demo up: request moments, the one config file, the offline warm start, and the stack of children
(feature consumer, stream trainer, Ray Serve) started through their public commands. The replay, drain and
report phases are in ``orchestrator.py``."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from t2diff.demo.moments import day_split, extract_request_moments, sample_moments
from t2diff.demo.settings import DemoSettings
from t2diff.demo.stack import ChildDied, Stack, t2diff_cmd
from t2diff.net import free_port

log = logging.getLogger(__name__)

ARMS = [  # name -> serving source; "control" is the lift baseline
    {"name": "treatment", "source": "t2diff"},  # online-learning T2Diff from the registry, Milvus index
    {"name": "frozen", "source": "t2diff_frozen"},  # the warm-start T2Diff, never updated (isolates online learning)
    {"name": "control", "source": "sasrec"},  # SASRec warm start (a plain sequential two-tower baseline)
    {"name": "popular", "source": "popularity"},  # most watched on the warm days
]


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False

class DemoSetup:
    def __init__(self, s: DemoSettings, out_dir: Path) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar
        self.s, self.out = s, Path(out_dir)
        self.state = self.out / "state"
        self.skipped: list[str] = []
        self.client = None  # RecallClient (HTTP) or DirectRecall (in process)
        self.features_ok = self.trainer_ok = False
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
                from t2diff.lite_server import stop_lite_server

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
        self.port = free_port()
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
                # one effective-view definition for our report and serving's own `ab report` of the same run
                "evr_threshold_s": self.s.ev_threshold_ms / 1000.0,
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
                              self.s.offline_preset, "--protocol", self.s.offline_protocol,
                              "--until-ms", str(self.split.warm_end_ms), "--catalog-all",
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

    def _end_offsets(self) -> dict[int, int]:
        """Flush, then the log's end offsets per partition (= where a group committed there starts reading)."""
        self.producer.flush()
        c = self.event_log.consumer(self.stream_settings.topic, "demo-offsets-probe")
        try:
            return dict(c.end_offsets())
        finally:
            c.close()

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
        # The trainer's group will start `trainer_warm_hours` before the replay: it rebuilds recent user
        # histories (and fine-tunes on them) while Ray Serve starts, instead of meeting the replay with none.
        cut = self.split.warm_end_ms - int(self.s.trainer_warm_hours * 3_600_000)
        n = 0
        self.trainer_start_offsets: dict[int, int] | None = None
        for ts, u, ev in tqdm(timed_events(warm), desc="warm-day events -> log", unit="ev", mininterval=2,
                              total=None, file=sys.stderr):
            if self.trainer_start_offsets is None and ts >= cut:
                self.trainer_start_offsets = self._end_offsets()
            self.producer.produce(ts, u, ev)
            n += 1
        self.producer.flush()
        if self.trainer_start_offsets is None:
            self.trainer_start_offsets = self._end_offsets()
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
        # Stream trainer: its group starts `trainer_warm_hours` before the replay (see above).
        self.trainer_ok = _module_available("trainer.online.cli") and self.ckpt["t2diff"].exists()
        if self.trainer_ok:
            from trainer.online.settings import OnlineTrainerSettings

            group = OnlineTrainerSettings.load(self.cfg_path, key="online_trainer").group
            c = self.event_log.consumer(self.stream_settings.topic, group)
            c.commit(self.trainer_start_offsets)
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
