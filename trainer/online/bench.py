"""Benchmarks of issue 5 (``t2diff bench trainer ...``); each writes a markdown section with the exact command,
device, wall time and figures measured in that run, beside a baseline measured in the same run.

* ``throughput``: streaming training events/s end to end (local log -> decode -> samples -> prequential
  scoring -> train with replay -> checkpoints), and the model-only rate (pre-built samples) beside it.
* ``index``: upsert of N item vectors into Milvus Lite (insert + flush + index + load + alias switch) and search
  latency per index type against torch brute force.
* ``freshness``: event produce time -> the version containing it is live in Milvus, p50 / p99, with a
  producer writing at a fixed rate while the trainer publishes every ``publish_every_s``.
* ``prequential``: KuaiRand-Pure replay, time split: a model pre-trained on the first days, then the rest of
  the stream scored event by event by the frozen model and by the incremental trainer in the same run.
"""
from __future__ import annotations

import copy
import json
import logging
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2diff.paths import runs_dir

log = logging.getLogger(__name__)


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def _stack(root: Path, partitions: int = 8):
    from streaming.local_log import LocalEventLog
    from streaming.settings import StreamSettings

    st = StreamSettings(log_dir=root / "log", partitions=partitions, known_items="any", known_users="any",
                        fsync="normal")
    return st, LocalEventLog(st.resolved_log_dir(), partitions=partitions, linger_ms=50)


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


# --------------------------------------------------------------------------- throughput
def bench_throughput(events: int, items: int, users: int, device: str, batch_size: int, poll_max: int,
                     prequential: bool, arch: str, out: Path, seed: int = 0, decode_workers: int = 0,
                     eval_num_steps: int | None = None) -> dict[str, Any]:
    from t2diff.model import build_model
    from trainer.online.loop import StreamTrainer, pick_device
    from trainer.online.settings import OnlineTrainerSettings
    from trainer.online.synthetic import produce, synthetic_catalog, synthetic_events, tiny_config

    root = out / f"throughput-{time.time_ns()}"
    st, el = _stack(root)
    cat = synthetic_catalog(items, num_tags=70, max_tags=3, seed=seed)
    t0 = time.time()
    n = produce(el, st.topic, synthetic_events(events, users, cat.raw_ids, seed=seed))
    log.info("produced %d events in %.1fs", n, time.time() - t0)
    torch.manual_seed(seed)
    model = build_model(tiny_config(cat, arch=arch, seq_len=50, session_len=10, diffusion_steps=50),
                        torch.from_numpy(cat.tags))
    s = OnlineTrainerSettings(work_dir=root / "work", device=device, cold_tags="none", batch_size=batch_size,
                              poll_max=poll_max, idle_exit_s=1.0, prequential=prequential, score_log=prequential,
                              publish_index=False, publish_every_s=1e9, publish_on_exit=False,
                              checkpoint_every_s=30, checkpoint_every_events=10**9, log_every_s=10,
                              decode_workers=decode_workers, eval_num_steps=eval_num_steps)
    tr = StreamTrainer(s, st, event_log=el, init=(model, cat))
    dev = pick_device(device)
    # warm-up (CUDA context, kernel selection) outside the timed run, on random samples
    L = tr.hist.seq_len
    rng = np.random.default_rng(seed)
    wh = rng.integers(1, items + 1, size=(batch_size, L))
    wts, wt, wtt = np.zeros_like(wh), rng.integers(1, items + 1, size=batch_size), np.zeros(batch_size, np.int64)
    tr.ranker.rank(tr.model, wh, wts, wt, wtt)
    tr.replay.add(wh, wts, wt, wtt)  # a full step's shape (new + replayed rows): what the compiled step is built for
    tr.train(wh, wts, wt, wtt)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tr.replay = type(tr.replay)(tr.replay.capacity, L, seed=seed)  # the timed run starts with an empty buffer
    res = tr.run()
    wall = res["wall_s"] - s.idle_exit_s  # the idle wait at the end is not work
    e2e = res["records"] / wall
    # model-only rate: the same numbers of samples, pre-built, through rank() + train()
    B = min(poll_max, 8192)
    hist = rng.integers(1, items + 1, size=(B, L))
    hts = np.tile(np.arange(L), (B, 1)).astype(np.int64)
    tgt = rng.integers(1, items + 1, size=B)
    tts = np.full(B, L, dtype=np.int64)
    reps = max(3, min(20, events // B))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    for _ in range(reps):
        if prequential:
            tr.ranker.rank(tr.model, hist, hts, tgt, tts)
        tr.train(hist, hts, tgt, tts)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    model_only = reps * B / (time.perf_counter() - t1)
    tr.close()
    el.close()
    return {"events": res["records"], "wall_s": wall, "e2e_events_per_s": e2e, "model_only_samples_per_s": model_only,
            "samples": res["stats"]["samples"], "steps": res["stats"]["steps"], "device": device_name(dev),
            "batch_size": batch_size, "poll_max": poll_max, "prequential": prequential, "items": items,
            "decode_workers": decode_workers, "eval_steps": tr.ranker.num_steps or model.cfg.diffusion_steps,
            "arch": arch, "replay_ratio": s.replay_ratio}


# --------------------------------------------------------------------------- Milvus upsert + search
def bench_index(items: int, dim: int, queries: int, index_types: list[str], out: Path) -> list[dict[str, Any]]:
    from t2diff.index import ItemIndex

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((items, dim)).astype(np.float32)
    ids = np.arange(items, dtype=np.int64) + 10
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    k = 100
    rows = []
    tv, tq = torch.from_numpy(vecs), torch.from_numpy(q)
    ref = torch.topk(tq @ tv.T, k, dim=1).indices.numpy()
    lat = []
    for i in range(queries):  # brute-force reference, one query at a time like a request
        t = time.perf_counter()
        torch.topk(tq[i:i + 1] @ tv.T, k, dim=1)
        lat.append(time.perf_counter() - t)
    rows.append({"index": "torch brute force (reference)", "upsert_s": None, "p50_ms": _pct(np.array(lat), 50) * 1e3,
                 "p99_ms": _pct(np.array(lat), 99) * 1e3, "recall@100": 1.0})
    for it in index_types:
        db = out / f"index-{it}-{int(time.time())}.db"
        idx = ItemIndex(str(db), shared=False, index_type=it)
        t0 = time.perf_counter()
        idx.publish(1, ids, vecs)
        up = time.perf_counter() - t0
        idx.search(q[:1], k)  # warm
        lat, hits = [], 0
        for i in range(queries):
            t = time.perf_counter()
            got = idx.search(q[i:i + 1], k)[0]
            lat.append(time.perf_counter() - t)
            hits += len({r for r, _ in got} & set((ids[ref[i]]).tolist()))
        rows.append({"index": f"Milvus Lite {it} (IP)", "upsert_s": up, "p50_ms": _pct(np.array(lat), 50) * 1e3,
                     "p99_ms": _pct(np.array(lat), 99) * 1e3, "recall@100": hits / (queries * k)})
        log.info("%s: upsert %.2fs, search p50 %.1f ms", it, up, rows[-1]["p50_ms"])
        idx.close()
    return rows


# --------------------------------------------------------------------------- freshness
def bench_freshness(seconds: float, rate: float, publish_every_s: float, items: int, device: str,
                    out: Path) -> dict[str, Any]:
    from streaming.events import Event, encode, key_of
    from t2diff.index import IndexSettings
    from t2diff.model import build_model
    from t2diff.registry import RegistrySettings
    from trainer.online.loop import StreamTrainer
    from trainer.online.settings import OnlineTrainerSettings
    from trainer.online.synthetic import synthetic_catalog, tiny_config

    root = out / f"freshness-{int(time.time())}"
    st, el = _stack(root)
    cat = synthetic_catalog(items, num_tags=70, max_tags=3)
    torch.manual_seed(0)
    model = build_model(tiny_config(cat, seq_len=50, session_len=10, diffusion_steps=50), torch.from_numpy(cat.tags))
    s = OnlineTrainerSettings(work_dir=root / "work", device=device, cold_tags="none", batch_size=256,
                              poll_max=2048, idle_exit_s=3.0, publish_every_s=publish_every_s,
                              checkpoint_every_s=10, log_every_s=10)
    tr = StreamTrainer(s, st, RegistrySettings(root=str(root / "registry")),
                       IndexSettings(uri=str(root / "items.db"), shared=False), event_log=el, init=(model, cat))
    stop = threading.Event()
    produced = [0]

    def producer() -> None:
        rng = np.random.default_rng(1)
        t0 = time.time()
        while not stop.is_set() and time.time() - t0 < seconds:
            due = int((time.time() - t0) * rate)
            while produced[0] < due:
                i = produced[0]
                # few users, so most events have an earlier one and become training samples
                ev = Event(user_id=int(rng.integers(0, 300)), item_id=int(cat.raw_ids[rng.integers(0, items)]),
                           event_type="click", ts_ms=int(time.time() * 1000), idempotency_key=f"f{i}")
                el.produce(st.topic, key_of(ev), encode(ev))
                produced[0] += 1
            time.sleep(0.01)
        el.flush()

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    res = tr.run()
    stop.set()
    th.join()
    fresh = tr.publisher.freshness_all()
    pubs = tr.publisher.history
    tr.close()
    el.close()
    return {"produced": produced[0], "rate": rate, "publish_every_s": publish_every_s, "seconds": seconds,
            "events_measured": int(len(fresh)), "p50_s": _pct(fresh, 50), "p99_s": _pct(fresh, 99),
            "max_s": float(fresh.max()) if len(fresh) else float("nan"), "versions": len(pubs),
            "publish_s_mean": float(np.mean([p["registry_s"] + p["index_s"] for p in pubs])) if pubs else None,
            "items": items, "trainer_events_per_s": res["records_per_s"]}


# --------------------------------------------------------------------------- prequential on KuaiRand
def bench_prequential(pretrain_days: float, epochs: int, device: str, arch: str, out: Path, seed: int = 0,
                      replay_ratio: float = 1.0, lr: float = 3e-3, limit: int | None = None,
                      eval_steps: list[int | None] | None = None) -> dict[str, Any]:
    """Pre-train once, then stream the rest once per scoring step count in ``eval_steps`` (None = the model's
    T), each from a copy of the same pre-trained model, so the step counts compare in one run."""
    from streaming.events import Event, encode, key_of
    from t2diff.data import load_kuairand
    from t2diff.model import ModelConfig, build_model
    from trainer.online.loop import StreamTrainer, pick_device
    from trainer.online.settings import OnlineTrainerSettings

    inter, _ = load_kuairand()
    _, cat = load_kuairand(catalog_scope="all")  # every video with features: later videos are not unknown
    order = np.argsort(inter.ts_ms, kind="stable")
    u, it, ts = inter.user[order], inter.item[order], inter.ts_ms[order]
    cut = ts[0] + int(pretrain_days * 86_400_000)
    head = ts < cut
    dev = pick_device(device)
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags,
                      lambda_kl=10.0)  # official KuaiRand λ
    model = build_model(cfg, torch.from_numpy(cat.tags)).to(dev)

    # pre-train ("offline") on the first days: every position with >= 1 earlier item, `epochs` passes
    from trainer.online.state import UserHistories

    hist = UserHistories(cfg.seq_len)
    idx = cat.indices(it[head])
    H, HT, lens = hist.step(u[head], idx, ts[head])  # (B, L) left-padded, as the stream trainer builds them
    keep = lens >= 1
    H, HT, T, TT = H[keep], HT[keep], idx[keep], ts[head][keep]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)  # official KuaiRand lr; `lr` is the stream's
    t0 = time.time()
    g = np.random.default_rng(seed)
    for ep in range(epochs):
        perm = g.permutation(len(T))
        for s0 in range(0, len(perm), 512):
            b = perm[s0:s0 + 512]
            batch = {k: torch.from_numpy(v[b]).to(dev) for k, v in
                     (("hist", H), ("hist_ts", HT), ("target", T), ("target_ts", TT))}
            loss, _ = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("pre-train epoch %d: loss %.3f (%.0fs)", ep, float(loss), time.time() - t0)
    pretrain_s = time.time() - t0
    model = model.cpu()
    # each stream starts from the same RNG state (training's dropout and sampling draw from it), so the step
    # counts differ only in scoring; the first stream is the run this bench made before it took several
    rng_state = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if dev.type == "cuda" else None)

    tail_idx = np.flatnonzero(~head)
    if limit:
        tail_idx = tail_idx[:limit]
    records = []  # (key, value) of each streamed event, encoded once for every stream
    for j in tail_idx.tolist():
        ev = Event(user_id=int(u[j]), item_id=int(it[j]), event_type="click", ts_ms=int(ts[j]),
                   idempotency_key=f"kr:{u[j]}:{it[j]}:{ts[j]}:{j}")
        records.append((key_of(ev), encode(ev)))
    runs = []
    for n_steps in eval_steps or [None]:
        root = out / f"prequential-{time.time_ns()}"
        st, el = _stack(root)
        for key, value in records:
            el.produce(st.topic, key, value)
        el.flush()
        torch.set_rng_state(rng_state[0])
        if rng_state[1] is not None:
            torch.cuda.set_rng_state_all(rng_state[1])
        s = OnlineTrainerSettings(work_dir=root / "work", device=device, cold_tags="kuairand", batch_size=256,
                                  poll_max=256, idle_exit_s=1.0, compare_frozen=True, eval_ks=[10, 20, 100],
                                  replay_ratio=replay_ratio, lr=lr, publish_index=False, publish_every_s=1e9,
                                  publish_on_exit=False, log_every_s=15, seed=seed, eval_num_steps=n_steps)
        # a copy per stream: the trainer trains the model it is given in place
        tr = StreamTrainer(s, st, event_log=el, init=(copy.deepcopy(model), cat))
        tr.hist.load_state_dict(hist.state_dict())  # users' context from the pre-training days
        # the replay buffer starts with the pre-training samples (the most recent ones fit)
        tr.replay.add(H, HT, T, TT)
        res = tr.run()
        score_log = tr.work / "prequential.jsonl"
        tr.close()
        el.close()
        p = res["prequential"]
        runs.append({"eval_steps": tr.ranker.num_steps or cfg.diffusion_steps, "scored": p["n"], "online": p["online"],
                     "frozen": p["frozen"], "stream_wall_s": res["wall_s"],
                     "cold_items": res["stats"]["cold_items"], "score_log": str(score_log)})
    return {"pretrain_events": int(head.sum()), "pretrain_samples": len(T), "stream_events": len(tail_idx),
            "epochs": epochs, "pretrain_days": pretrain_days, "pretrain_s": pretrain_s, "arch": arch,
            "device": device_name(dev), "replay_ratio": replay_ratio, "lr": lr, "runs": runs}


def plot_prequential(score_log: str | Path, png: str | Path, window: int = 2000, k: int = 20) -> Path:
    """Sliding-window Recall@k along the stream, incremental vs frozen, from the per-event score log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.online.prequential import read_score_log

    rows = read_score_log(score_log)
    fig, ax = plt.subplots(figsize=(8, 4))
    for col, label in (("rank", "incremental trainer"), ("rank_frozen", "frozen pre-trained model")):
        if not rows or col not in rows[0]:
            continue
        hit = np.array([r[col] <= k for r in rows], dtype=np.float64)
        roll = np.convolve(hit, np.ones(window) / window, mode="valid")  # (E - window + 1,)
        ax.plot(np.arange(window, len(hit) + 1), roll, label=f"{label} (overall {hit.mean():.4f})")
    ax.set_xlabel("positives in stream order (each scored before training on it)")
    ax.set_ylabel(f"Recall@{k}, sliding window of {window}")
    ax.set_title("Prequential Recall on the KuaiRand-Pure replay")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def write_section(path: Path, title: str, body: str) -> None:
    """Append one measured section (the lead merges benchmarks/*.md into RESULTS.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"\n## {title}\n\ncommand: `{' '.join(['t2diff'] + sys.argv[1:])}`  \n" \
           f"date: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}  \n"
    with open(path, "a") as f:
        f.write(head + body + "\n")


def to_json(x: Any) -> str:
    return json.dumps(x, indent=1, default=float)


def default_out() -> Path:
    return runs_dir() / "bench_trainer"
