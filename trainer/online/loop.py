"""The stream trainer: poll -> decode -> samples -> prequential scoring (``scoring.Ranker``) -> train (+ replay)
-> checkpoint -> commit -> publish.

Exactly-once training across crashes: the checkpoint (``<work_dir>/state.pt``) holds the model, optimizer,
catalogue, user histories, replay buffer (with its RNG), recent idempotency keys, prequential sums, the
score-log length and the consumed offsets (next offset per partition). It is written to a temp file, fsynced
and renamed; only then are the offsets committed to the consumer group. On start, if a checkpoint exists the
consumer is *seeked* to its offsets (not to the group's commit, which may lag it by one crash) and the score
log is cut back to its recorded length -- so an event whose effects were lost is replayed, and an event whose
effects were kept is not read again.
"""
from __future__ import annotations

import copy
import gc
import logging
import os
import signal
import time
from typing import Any

import numpy as np
import torch

from streaming.deadletter import DeadLetterSink
from streaming.events import EventError
from streaming.log import EventLog, open_event_log
from streaming.settings import StreamSettings
from t2diff.data import Catalog
from t2diff.index import IndexSettings, ItemIndex
from t2diff.model import ModelConfig, build_model, load_checkpoint, save_checkpoint
from t2diff.paths import fsync_path
from t2diff.registry import ModelRegistry, RegistrySettings
from trainer.online import telemetry
from trainer.online.decoding import Decoded, DecodePool, decode_fields
from trainer.online.growth import add_cold_items, cold_tag_lookup, grow_seeded
from trainer.online.prequential import Prequential
from trainer.online.publish import Publisher
from trainer.online.scoring import Ranker, host_tensor
from trainer.online.settings import OnlineTrainerSettings
from trainer.online.state import RecentKeys, ReplayBuffer, UserHistories
from trainer.optim import adam, clip_per_parameter

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
FROZEN_FILE = "frozen.pt"
SCORE_LOG = "prequential.jsonl"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def scratch_model(s: OnlineTrainerSettings) -> tuple[torch.nn.Module, Catalog]:
    """Untrained model over the data set's catalogue (KuaiRand: every video with features)."""
    from t2diff.data import load_kuairand, load_dataset

    if s.dataset in ("kuairand", "kuairand-pure"):
        _, catalog = load_kuairand(catalog_scope="all")
    else:
        _, catalog = load_dataset(s.dataset)
    cfg = ModelConfig(arch=s.arch, num_items=catalog.num_items, num_tags=catalog.num_tags,
                      max_tags=catalog.max_tags, **s.model)
    torch.manual_seed(s.seed)
    return build_model(cfg, torch.from_numpy(catalog.tags)), catalog


class StreamTrainer:
    def __init__(self, settings: OnlineTrainerSettings | None = None, stream: StreamSettings | None = None,
                 registry: RegistrySettings | None = None, index: IndexSettings | None = None,
                 event_log: EventLog | None = None, init: tuple[torch.nn.Module, Catalog] | None = None) -> None:
        self.s = s = settings or OnlineTrainerSettings()
        self.stream = stream or StreamSettings()
        self.work = s.resolved_work_dir()
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(s.device)
        if s.threads:
            torch.set_num_threads(s.threads)
        self._own_log = event_log is None
        self.event_log = event_log or open_event_log(self.stream)
        self.consumer = self.event_log.consumer(self.stream.topic, s.group)
        self.dlq = DeadLetterSink(self.event_log, self.stream.dead_letter_topic, stage="trainer")
        self.positive = set(s.positive_types)
        self.tags = cold_tag_lookup(s.cold_tags)
        self.registry = ModelRegistry(settings=registry or RegistrySettings())
        self.index = ItemIndex(settings=index or IndexSettings()) if s.publish_index else None
        self.publisher = Publisher(self.registry, self.index)
        self.decoder = DecodePool(s.decode_workers, self.stream.max_future_ms) if s.decode_workers > 0 else None
        self.preq = Prequential(s.eval_ks, s.window, self.work / SCORE_LOG if s.score_log else None,
                                frozen=s.compare_frozen)
        self.stats: dict[str, Any] = {"records": 0, "samples": 0, "steps": 0, "dead_letters": 0, "cold_items": 0,
                                      "resumes": 0, "max_event_ts_ms": 0, "published": 0}
        self.offsets: dict[int, int] = {}
        self._stop = False
        self._pending_fresh: list[int] = []  # produce ts (ms) of positives not yet in a published version
        self._since_ckpt = self._since_pub = 0
        self._t_ckpt = self._t_pub = time.time()
        if (self.work / STATE_FILE).exists():
            self._resume()
        else:
            self._fresh(init)
        telemetry.CATALOG.set(self.catalog.num_items)

    # ------------------------------------------------------------------ start / resume
    def _setup(self, model: torch.nn.Module, catalog: Catalog) -> None:
        diffusion = getattr(model, "diffusion", None)
        n = self.s.eval_num_steps
        if n is not None and diffusion is not None and n > diffusion.schedule.num_train_timesteps:
            # checked here, not at the first scored poll: a bad value must stop the trainer before it reads a record
            raise ValueError(f"online_trainer.eval_num_steps = {n} exceeds the model's diffusion steps "
                             f"T = {diffusion.schedule.num_train_timesteps}")
        self.model = model.to(self.device).train()
        # On CUDA the eager step is host-bound (~1,000 kernel launches): train through a compiled loss, mode
        # "reduce-overhead" so the compiled step also replays as a CUDA graph (one per batch shape) and the host no
        # longer launches each of its ~200 kernels. _growths counts the recompiles that cold items cause.
        self._growths = 0
        self._loss_fn = torch.compile(self.model._loss, mode="reduce-overhead", dynamic=False) if (
            self.device.type == "cuda" and self.s.compile_train and hasattr(self.model, "_loss")) else None
        self.catalog = catalog
        self.opt = adam(self.model.parameters(), self.s.lr, self.device)
        self._pending_scores: list[tuple[list, Any, Any]] = []  # (meta, ranks getter, frozen ranks getter)
        self.ranker = Ranker(self.device, self.s.seed, self.s.eval_num_steps, self.s.fast_scoring)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # any non-finite loss since the last check
        L = self.model.cfg.seq_len
        self.hist = UserHistories(L)
        self.replay = ReplayBuffer(self.s.replay_capacity, L, seed=self.s.seed)
        self.keys = RecentKeys(self.s.dedup_window)

    def _fresh(self, init: tuple[torch.nn.Module, Catalog] | None) -> None:
        if init is not None:
            model, catalog = init
            src = "given model"
        elif self.s.init_checkpoint:
            model, extra = load_checkpoint(self.s.init_checkpoint, map_location="cpu")
            if "catalog" not in extra:
                raise ValueError(f"{self.s.init_checkpoint} has no extra['catalog']; cannot map raw item ids")
            catalog = Catalog.from_dict(extra["catalog"])
            src = self.s.init_checkpoint
        else:
            model, catalog = scratch_model(self.s)
            src = "scratch"
        self._setup(model, catalog)
        self.frozen = None
        if self.s.compare_frozen:
            save_checkpoint(self.work / FROZEN_FILE, self.model)
            self.frozen = copy.deepcopy(self.model).eval()
        self.preq.truncate(0)
        self.offsets = dict(self.consumer.position())
        log.info("stream trainer: fresh start from %s (%d items, arch %s) on %s, offsets %s", src,
                 catalog.num_items, self.model.cfg.arch, self.device, self.offsets)

    def _resume(self) -> None:
        model, extra = load_checkpoint(self.work / STATE_FILE, map_location="cpu")
        self._setup(model, Catalog.from_dict(extra["catalog"]))
        self.opt.load_state_dict(extra["optimizer"])
        self.hist.load_state_dict(extra["histories"])
        self.replay.load_state_dict(extra["replay"])
        self.keys.load_state_dict(extra["keys"])
        self.preq.load_state_dict(extra["prequential"])
        self.preq.truncate(int(extra["score_log_bytes"]))
        self.stats.update(extra["stats"])
        self.stats["resumes"] += 1
        self.offsets = {int(p): int(o) for p, o in extra["offsets"].items()}
        for p, o in self.offsets.items():
            self.consumer.seek(p, o)
        self.frozen = None
        if self.s.compare_frozen:
            self.frozen, _ = load_checkpoint(self.work / FROZEN_FILE, map_location=self.device)
        log.info("stream trainer: resumed from %s at offsets %s (%d records, %d samples trained so far)",
                 self.work / STATE_FILE, self.offsets, self.stats["records"], self.stats["samples"])

    # ------------------------------------------------------------------ checkpoint / publish
    def checkpoint(self) -> None:
        """Durable state, then commit offsets (never the other way round)."""
        self.check_finite()  # never persist a diverged model
        self.flush_scores()
        t0 = time.perf_counter()
        self.event_log.flush()  # dead letters produced so far are durable before their offsets are committed
        score_bytes = self.preq.sync()
        tmp = self.work / (STATE_FILE + ".next")
        save_checkpoint(tmp, self.model, catalog=self.catalog.to_dict(), optimizer=self.opt.state_dict(),
                        offsets=dict(self.offsets), histories=self.hist.state_dict(),
                        replay=self.replay.state_dict(), keys=self.keys.state_dict(),
                        prequential=self.preq.state_dict(), score_log_bytes=score_bytes, stats=dict(self.stats),
                        settings=self.s.model_dump(mode="json"))
        fsync_path(tmp)
        os.replace(tmp, self.work / STATE_FILE)
        fsync_path(self.work)
        if self.offsets:
            self.consumer.commit(dict(self.offsets))
        self._since_ckpt, self._t_ckpt = 0, time.time()
        telemetry.CHECKPOINT_S.observe(time.perf_counter() - t0)
        telemetry.LAG.set(self.consumer.lag())
        log.debug("checkpoint at offsets %s in %.2fs", self.offsets, time.perf_counter() - t0)

    def publish(self, wait: bool = False) -> bool:
        self.flush_scores()
        ok = self.publisher.submit(
            self.model, self.catalog, extra={"stream_stats": dict(self.stats)}, metrics=self.preq.summary(),
            offsets=self.offsets, produce_ts_ms=np.asarray(self._pending_fresh, dtype=np.int64),
            max_event_ts_ms=self.stats["max_event_ts_ms"], records=self.stats["records"],
            samples=self.stats["samples"], source="online")
        if ok:
            self._pending_fresh = []
            self._since_pub, self._t_pub = 0, time.time()
            self.stats["published"] += 1
        if wait:
            self.publisher.wait()
        return ok

    # ------------------------------------------------------------------ one batch of records
    def process(self, records: list, decoded: Decoded | None = None) -> int:
        """Apply one poll's records; returns the number of new samples trained. ``decoded``: the records'
        values already decoded (``DecodePool``), in order; decoded here when absent."""
        self.flush_scores()
        if decoded is None:
            decoded = decode_fields([r.value for r in records], max_future_ms=self.stream.max_future_ms)
        pos: list[tuple[Any, Any]] = []
        offsets, seen, positive = self.offsets, self.keys.seen, self.positive  # hot loop: locals
        for r, ev in zip(records, decoded):
            offsets[r.partition] = r.offset + 1
            if isinstance(ev, EventError):
                self.dlq.send(r.value, ev.reason, ev.detail, record=r)
                self.stats["dead_letters"] += 1
                continue
            if seen(ev.idempotency_key):
                self.dlq.send(r.value, "duplicate", f"idempotency_key {ev.idempotency_key}", record=r)
                self.stats["dead_letters"] += 1
                continue
            if ev.event_type in positive:
                pos.append((r, ev))
        self.stats["records"] += len(records)
        telemetry.RECORDS.inc(len(records))
        if not pos:
            return 0
        cold = [ev.item_id for _, ev in pos if ev.item_id not in self.catalog]
        if cold:
            n0 = self.catalog.num_items
            new, self.opt = add_cold_items(self.model, self.catalog, self.opt, cold, self.tags, seed=self.s.seed)
            if self.frozen is not None:  # the frozen baseline scores cold items by their side features too
                grow_seeded(self.frozen, self.catalog.tags[new], self.s.seed + n0)
            if self._loss_fn is not None:
                # A grown embedding table fails the compiled graph's shape guards: each growth recompiles (tens of
                # seconds). Past a few, a stream with a steady flow of new items trains eagerly instead.
                self._growths += 1
                if self._growths > 3:
                    log.warning("catalogue grew %d times: training the loss eagerly from now on", self._growths)
                    self._loss_fn = None
            self.stats["cold_items"] += len(new)
            telemetry.COLD_ITEMS.inc(len(new))
            telemetry.CATALOG.set(self.catalog.num_items)

        recs, evs = zip(*pos)
        users = np.fromiter((ev.user_id for ev in evs), dtype=np.int64, count=len(evs))
        ts = np.fromiter((ev.ts_ms for ev in evs), dtype=np.int64, count=len(evs))
        idx = self.catalog.indices([ev.item_id for ev in evs])
        # each event's history before it (earlier events of this poll included) becomes its sample row, kept only if
        # long enough; then the event joins the history (UserHistories.step, vectorised over the poll)
        hist, hts, lens = self.hist.step(users, idx, ts)  # (B, L), (B, L), (B,)
        self._pending_fresh.extend(r.timestamp_ms for r in recs)  # in the next version (as history or as a sample)
        self.stats["max_event_ts_ms"] = max(self.stats["max_event_ts_ms"], int(ts.max()))
        keep = np.flatnonzero(lens >= self.s.min_history)
        b = len(keep)
        if b == 0:
            return 0
        if b < len(lens):
            hist, hts = hist[keep], hts[keep]
        target, tts = idx[keep], ts[keep]
        if self.s.prequential:  # scored before training on them; read back after the next poll (no stall)
            step = self.stats["steps"]
            meta = [{"p": recs[j].partition, "o": recs[j].offset, "u": evs[j].user_id, "i": evs[j].item_id,
                     "ts": evs[j].ts_ms, "step": step} for j in keep.tolist()]
            ranks = self.ranker.rank_async(self.model, hist, hts, target, tts, step)
            fr = None if self.frozen is None else self.ranker.rank_async(self.frozen, hist, hts, target, tts, step)
            self._pending_scores.append((meta, ranks, fr))
        self.train(hist, hts, target, tts)
        self.replay.add(hist, hts, target, tts)
        self.stats["samples"] += b
        telemetry.SAMPLES.inc(b)
        self._since_ckpt += b
        self._since_pub += b
        return b

    def flush_scores(self) -> None:
        """Hand the scores of earlier polls to the prequential accumulator, in order."""
        while self._pending_scores:
            meta, ranks, fr = self._pending_scores.pop(0)
            self.preq.add(meta, ranks(), fr() if fr is not None else None)

    def train(self, hist: np.ndarray, hts: np.ndarray, target: np.ndarray, tts: np.ndarray) -> None:
        """Optimisation steps over new samples (+ replayed ones). No host sync: the GPU runs a step while the
        host decodes the next poll; non-finite losses are flagged on the device and checked by ``check_finite``
        (at every log line and before every checkpoint, so a diverged model is never saved)."""
        bs = self.s.batch_size
        full = bs + int(round(bs * self.s.replay_ratio))  # rows of a full step: the compiled graph's shape
        for s in range(0, len(target), bs):
            parts = [{"hist": hist[s:s + bs], "hist_ts": hts[s:s + bs], "target": target[s:s + bs],
                      "target_ts": tts[s:s + bs]}]
            n_new = len(parts[0]["target"])
            n_rep = int(round(n_new * self.s.replay_ratio))
            if self._loss_fn is not None and n_new < bs and n_rep and len(self.replay):
                n_rep = full - n_new  # top a short step up with replayed samples, so every step has one shape
            rep = self.replay.sample(n_rep)
            if rep is not None:
                parts.append(rep)
            batch = {k: host_tensor(np.concatenate([p[k] for p in parts]), self.device) for k in parts[0]}
            compiled = self._loss_fn is not None and len(batch["target"]) == full
            if compiled:  # other shapes (the first steps, before the replay buffer fills) run eagerly
                torch.compiler.cudagraph_mark_step_begin()  # a new training iteration for the graph trees
            loss, m = self.model(batch, host_metrics=False, **({"loss_fn": self._loss_fn} if compiled else {}))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_per_parameter(self.model, self.s.clip_norm)
            self.opt.step()
            if compiled:
                m = {k: v.clone() for k, v in m.items()}  # graph outputs are overwritten by the next replay
            self._nonfinite |= ~torch.isfinite(m["loss"])
            self.stats["steps"] += 1
            telemetry.STEPS.inc()
            self._last_metrics = m

    def check_finite(self) -> float:
        """Raise if any step since the last check had a non-finite loss; returns the last loss (host sync)."""
        m = getattr(self, "_last_metrics", None)
        if bool(self._nonfinite):
            raise FloatingPointError(f"non-finite loss before step {self.stats['steps']} (last metrics "
                                     f"{ {k: float(v) for k, v in (m or {}).items()} })")
        loss = float(m["loss"]) if m else float("nan")
        telemetry.LOSS.set(loss)
        return loss

    # ------------------------------------------------------------------ main loop
    def stop(self, *_: Any) -> None:
        self._stop = True

    def run(self) -> dict[str, Any]:
        s = self.s
        if s.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(s.metrics_port)
        prev = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)} \
            if _main_thread() else {}
        gc_prev = gc.get_threshold()
        if s.gc_threshold:
            gc.freeze()  # what exists now (model, catalogue, restored state) is never garbage: stop re-walking it
            gc.set_threshold(s.gc_threshold, gc_prev[1], gc_prev[2])
        t_start = t_log = time.time()
        rec_at_log = self.stats["records"]
        rec_start = self.stats["records"]
        last_data = time.time()
        # With decode workers the loop is a two-stage pipeline: poll k+1 is read and its decoding started before
        # poll k is applied, so workers decode while this process trains. Only applied records move the offsets
        # that checkpoints store, so a crash re-reads what was polled ahead and never applied.
        ahead: tuple[list, Any] | None = None  # (records, decoded getter) read ahead, not applied yet

        def apply_ahead() -> None:
            nonlocal ahead
            if ahead:
                self.process(ahead[0], ahead[1]())
            ahead = None

        try:
            while not self._stop:
                inflight = len(ahead[0]) if ahead else 0
                if s.max_events is not None and self.stats["records"] + inflight >= s.max_events:
                    apply_ahead()
                    break
                limit = s.poll_max if s.max_events is None else \
                    min(s.poll_max, s.max_events - self.stats["records"] - inflight)
                recs = self.consumer.poll(limit, 0.0 if ahead else s.poll_timeout_s)
                now = time.time()
                if recs:
                    last_data = now
                    if self.decoder is not None:
                        nxt = (recs, self.decoder.submit([r.value for r in recs]))
                        apply_ahead()
                        ahead = nxt
                    else:
                        self.process(recs)
                elif ahead:
                    apply_ahead()
                elif s.idle_exit_s is not None and now - last_data >= s.idle_exit_s:
                    break
                if self._since_ckpt and (self._since_ckpt >= s.checkpoint_every_events
                                         or now - self._t_ckpt >= s.checkpoint_every_s):
                    self.checkpoint()
                if self._since_pub and ((s.publish_every_events and self._since_pub >= s.publish_every_events)
                                        or now - self._t_pub >= s.publish_every_s):
                    self.publish()
                if now - t_log >= s.log_every_s:
                    rate = (self.stats["records"] - rec_at_log) / (now - t_log)
                    telemetry.THROUGHPUT.set(rate)
                    loss = self.check_finite()
                    self.flush_scores()
                    cum = self.preq.online.cumulative()
                    log.info("%d records (%.0f/s), %d samples, %d steps, loss %.3f, prequential R@20 %.4f "
                             "(window %.4f), catalogue %d", self.stats["records"], rate, self.stats["samples"],
                             self.stats["steps"], loss,
                             cum.get("recall@20", float("nan")),
                             self.preq.online.windowed().get("recall@20", float("nan")), self.catalog.num_items)
                    t_log, rec_at_log = now, self.stats["records"]
            if self._stop:
                ahead = None  # on a stop signal, records read ahead are left for the next run (not in the offsets)
            apply_ahead()
            if self._since_ckpt or self.stats["records"] > rec_start:
                self.checkpoint()
            self.publisher.wait()
            # also when the last publish failed: the events it carried are trained on but not live anywhere
            if s.publish_on_exit and (self._since_pub or self.publisher.last_failed):
                self.publish(wait=True)
        finally:
            for sig, h in prev.items():
                signal.signal(sig, h)
            gc.set_threshold(*gc_prev)
            gc.unfreeze()
        wall = time.time() - t_start
        return {"records": self.stats["records"] - rec_start, "wall_s": wall,
                "records_per_s": (self.stats["records"] - rec_start) / max(wall, 1e-9), "stats": dict(self.stats),
                "prequential": self.preq.summary(), "publishes": list(self.publisher.history),
                "publish_failures": self.publisher.failures}

    def close(self) -> None:
        self.flush_scores()
        if self.decoder is not None:
            self.decoder.close()
        self.publisher.wait()
        self.preq.close()
        self.consumer.close()
        if self.index is not None:
            self.index.close()
        if self._own_log:
            self.event_log.close()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
