"""Experiment grid: archs x seeds x datasets x protocols, reported like the paper's Tables 2-4.

Each run is one :func:`trainer.offline.train` call in its own process (``--jobs`` in parallel; on a GPU box many
small runs share the card). Every finished run appends one JSON line to ``results.jsonl`` (resumable: runs
already there are skipped), then :func:`report` writes ``offline.md`` (mean ± std over seeds, beside the
baselines measured in the same invocation) and ``val_curves.png``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

log = logging.getLogger(__name__)

TABLE2_ARCHS = ["t2diff", "t2diff_no_dp", "mixed_attention", "sasrec", "gru4rec"]  # slowest first
# suite -> (row label, ModelConfig.extra) of the variant of the official in-house SASRec (t2diff/model/baselines.py):
# its order-free part alone, or the whole design as written
SASREC_DESIGNS = {"sasrec_order": ("sasrec order-free", {"sasrec_order": False}),
                  "sasrec_paper": ("sasrec as in the official code", {"sasrec_design": "paper"})}


TUNE_LRS = (0.001, 0.003, 0.01)  # kuairand_tune: official KuaiRand lr 0.003 in the middle
TUNE_LRS_ML1M = (0.001, 0.002, 0.005, 0.01)  # ML-1M tuning suites: official ML-1M lr 0.002 included
TUNE_DROPOUTS = (0.0, 0.2)
# ml1m_tune_edge: the ML-1M grid carried past its top lr (0.01 was chosen for every arch on the file-order set),
# dropout 0 only (0.2 lost for every arch on both ML-1M sets); same groups as the grid, so selection spans both
TUNE_LRS_ML1M_EDGE = (0.02, 0.05)
# (lr, dropout) per data set and arch as chosen on mean validation recall@20 by users1-2999_tune / table2_tune +
# ml1m_tune_edge over seeds 0-2 (thirteenth session, benchmarks/offline.md); ml1m_tuned re-runs them on seeds
# the selection never saw, so its test figures carry no selection bias
TUNED_ML1M = {"ml-1m-users1-2999": {"t2diff": (0.01, 0.0), "sasrec": (0.01, 0.0), "gru4rec": (0.01, 0.0)},
              "ml-1m": {"t2diff": (0.005, 0.0), "sasrec": (0.01, 0.0), "gru4rec": (0.05, 0.0)}}
TUNE_ARCHS = ["t2diff", "sasrec", "gru4rec"]  # the ML-1M tuning suites: T2Diff and the two baselines it must beat
TUNED_GROUPS = (("users1-2999_tuned", "ml-1m-users1-2999"), ("table2_tuned", "ml-1m"))  # ml1m_tuned* tables


@dataclass
class RunSpec:
    group: str  # table the run belongs to (table2, table2_e64, table3, table4, kuairand, protocol_l, users1-2999)
    label: str  # row label inside the table
    dataset: str
    arch: str
    protocol: str = "P"
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # OfflineConfig overrides

    @property
    def run_id(self) -> str:
        return f"{self.group}|{self.label}|{self.dataset}|{self.protocol}|s{self.seed}"


def _tune_specs(group: str, dataset: str, archs: list[str], lrs: tuple[float, ...], seed: int,
                dropouts: tuple[float, ...] = TUNE_DROPOUTS) -> list[RunSpec]:
    """Every arch over the same lr x dropout grid; labels "arch | setting" for select_on_validation."""
    return [RunSpec(group, f"{a} | lr={lr:g} dropout={d:g}", dataset, a, seed=seed, model={"dropout": d},
                    train={"lr": lr}) for a in archs for lr in lrs for d in dropouts]


def grid(suites: list[str], seeds: list[int], large_edim: int = 64, l_epochs: int = 20,
         l_per_user: int | None = 30) -> list[RunSpec]:
    """The runs behind each table. Suite names: table2, table2_large, table3, table4, kuairand, kuairand_edim
    (every arch at edim 16 and ``large_edim``), kuairand_tune (every arch over the same lr x dropout grid),
    users1-2999_tune and table2_tune (T2Diff, SASRec, GRU4Rec over one lr x dropout grid on ML-1M), ml1m_tune_edge
    (those grids extended to higher lrs, into the same groups), ml1m_tuned (each arch at the setting those grids
    chose, for fresh seeds), ml1m_tuned_ablation (T2Diff without drift preparation and mixed attention only at
    T2Diff's chosen setting, beside ml1m_tuned), ml1m_tuned_full / ml1m_tuned_ablation_full (the same with no early
    stop), ml1m_tuned_probe (T2Diff and T2Diff without DP at that setting, x̂_{n+1} probed: trainer.probe),
    probe_official (T2Diff at the official recipe, probed, on KuaiRand and both ML-1M sets), diffurec
    (the DiffuRec-style baseline beside T2Diff, SASRec and GRU4Rec on the three data sets),
    protocol_l, users1-2999, users1-2999_large, eq22 (the paper's user FFN vs the code's concat), train_next (x̂ at training: official vs from noise), sasrec_order
    (the official in-house SASRec's order-free design), sasrec_paper (that baseline as written), smoke (tiny)."""
    out: list[RunSpec] = []
    for suite in suites:  # suites in the order given (priority), seeds inside: a deadline cuts the tail
        for s in seeds:
            if suite == "table2":
                out += [RunSpec("table2", a, "ml-1m", a, seed=s) for a in TABLE2_ARCHS]
            elif suite == "table2_large":
                out += [RunSpec(f"table2_e{large_edim}", a, "ml-1m", a, seed=s, model={"edim": large_edim})
                        for a in ("t2diff", "sasrec", "gru4rec", "mixed_attention")]
            elif suite == "table3":
                out += [RunSpec("table3", f"beta {sch}", "ml-1m", "t2diff", seed=s, model={"schedule": sch})
                        for sch in ("linear", "log")]
            elif suite == "table4":
                out += [RunSpec("table4", f"T={t}", "ml-1m", "t2diff", seed=s, model={"diffusion_steps": t})
                        for t in (10, 200)]
            elif suite == "kuairand":
                out += [RunSpec("kuairand", a, "kuairand", a, seed=s) for a in TABLE2_ARCHS]
            elif suite == "kuairand_edim":  # every arch with larger item vectors (official edim 4): does a size
                for e in sorted({16, large_edim}):  # that lets the towers fit more change who wins on R@100?
                    out += [RunSpec(f"kuairand_e{e}", a, "kuairand", a, seed=s, model={"edim": e}) for a in TABLE2_ARCHS]
            elif suite == "kuairand_tune":  # the same small search for every arch (lr x dropout), the setting
                # chosen per arch on validation by select_on_validation; labels are "arch | setting"
                out += _tune_specs("kuairand_tune", "kuairand", TABLE2_ARCHS, TUNE_LRS, s)
            elif suite == "users1-2999_tune":  # the same search on ML-1M (file order / chronological), for the
                out += _tune_specs(suite, "ml-1m-users1-2999", TUNE_ARCHS, TUNE_LRS_ML1M, s)  # archs behind the
            elif suite == "table2_tune":  # "beats SASRec by >= 25 %" target, official budget
                out += _tune_specs(suite, "ml-1m", TUNE_ARCHS, TUNE_LRS_ML1M, s)
            elif suite == "ml1m_tune_edge":  # both ML-1M grids one step further up in lr (their groups)
                for group, ds in (("users1-2999_tune", "ml-1m-users1-2999"), ("table2_tune", "ml-1m")):
                    out += _tune_specs(group, ds, TUNE_ARCHS, TUNE_LRS_ML1M_EDGE, s, dropouts=(0.0,))
            elif suite in ("ml1m_tuned", "ml1m_tuned_full"):  # each arch at its chosen setting (TUNED_ML1M),
                # labels = arch names; _full: no early stop (the official 100 epochs, best validation epoch kept)
                full = {"patience": None} if suite == "ml1m_tuned_full" else {}
                for group, ds in TUNED_GROUPS:
                    out += [RunSpec(group + suite.removeprefix("ml1m_tuned"), a, ds, a, seed=s, model={"dropout": d},
                                    train={"lr": lr, **full}) for a, (lr, d) in TUNED_ML1M[ds].items()]
            elif suite in ("ml1m_tuned_ablation", "ml1m_tuned_ablation_full"):  # T2Diff's Table 2 ablations at
                # T2Diff's chosen setting (an ablation keeps the full model's recipe), into ml1m_tuned's tables
                full = {"patience": None} if suite.endswith("_full") else {}
                for group, ds in TUNED_GROUPS:
                    lr, d = TUNED_ML1M[ds]["t2diff"]
                    out += [RunSpec(group + suite.removeprefix("ml1m_tuned_ablation"), a, ds, a, seed=s,
                                    model={"dropout": d}, train={"lr": lr, **full})
                            for a in ("t2diff_no_dp", "mixed_attention")]
            elif suite == "ml1m_tuned_probe":  # the two diffusion archs at T2Diff's chosen setting, probed on the
                for group, ds in TUNED_GROUPS:  # test set: what their x̂_{n+1} is worth (trainer.probe)
                    lr, d = TUNED_ML1M[ds]["t2diff"]
                    out += [RunSpec(group + "_probe", a, ds, a, seed=s, model={"dropout": d},
                                    train={"lr": lr, "probe_next": True}) for a in ("t2diff", "t2diff_no_dp")]
            elif suite == "probe_official":  # T2Diff at the official recipe, x̂_{n+1} probed, on the three data sets
                out += [RunSpec(group, "t2diff", ds, "t2diff", seed=s, train={"probe_next": True}) for group, ds in
                        (("kuairand_probe", "kuairand"), ("users1-2999_probe", "ml-1m-users1-2999"),
                         ("table2_probe", "ml-1m"))]
            elif suite == "users1-2999":
                out += [RunSpec("users1-2999", a, "ml-1m-users1-2999", a, seed=s) for a in TABLE2_ARCHS]
            elif suite == "users1-2999_large":  # the file-order set with larger item vectors (official edim 4)
                out += [RunSpec(f"users1-2999_e{large_edim}", a, "ml-1m-users1-2999", a, seed=s,
                                model={"edim": large_edim}) for a in ("t2diff", "sasrec", "gru4rec", "mixed_attention")]
            elif suite == "protocol_l":
                out += [RunSpec("protocol_l", a, "ml-1m", a, "L", seed=s,
                                train={"max_epochs": l_epochs, "patience": 4, "l_train_per_user": l_per_user})
                        for a in ("t2diff", "sasrec", "gru4rec")]
            elif suite == "train_next":  # where the tower's x̂_{n+1} comes from at training (ModelConfig.train_next)
                for group, ds, model in (("train_next", "ml-1m", {}),
                                         (f"train_next_e{large_edim}", "ml-1m", {"edim": large_edim}),
                                         ("train_next_u", "ml-1m-users1-2999", {})):
                    out += [RunSpec(group, f"t2diff next={mode}", ds, "t2diff", seed=s, model={**model, "train_next": mode})
                            for mode in ("sample", "prior")]
                    out += [RunSpec(group, a, ds, a, seed=s, model=dict(model))
                            for a in ("t2diff", "mixed_attention", "sasrec")]
            elif suite in SASREC_DESIGNS:  # the official in-house SASRec's design beside ours and T2Diff
                label, extra = SASREC_DESIGNS[suite]
                for group, ds in ((suite, "ml-1m"), (f"{suite}_u", "ml-1m-users1-2999")):
                    out += [RunSpec(group, "t2diff", ds, "t2diff", seed=s),
                            RunSpec(group, "sasrec", ds, "sasrec", seed=s),
                            RunSpec(group, label, ds, "sasrec", seed=s, model={"extra": dict(extra)})]
            elif suite == "eq22":  # the paper's Eq. 22 (e_u = FFN(concat(h_l, h_s))) against the official plain concat
                for group, ds in (("eq22", "ml-1m"), ("eq22_u", "ml-1m-users1-2999"), ("eq22_k", "kuairand")):
                    out += [RunSpec(group, "t2diff", ds, "t2diff", seed=s),
                            RunSpec(group, "t2diff + FFN (Eq. 22)", ds, "t2diff", seed=s, model={"user_ffn": True})]
            elif suite == "diffurec":  # the other diffusion recommender (baselines.DiffuRec) beside T2Diff and the
                for group, ds in (("diffurec", "ml-1m"), ("diffurec_u", "ml-1m-users1-2999"),  # sequential baselines
                                  ("diffurec_k", "kuairand")):
                    out += [RunSpec(group, a, ds, a, seed=s) for a in ("t2diff", "diffurec", "sasrec", "gru4rec")]
                    # what DiffuRec's result is made of: its denoiser without the diffusion input (λ = 0: x_t never
                    # enters), and SASRec / GRU4Rec / T2Diff fed the candidate-side vectors as DiffuRec is (tied_input)
                    out += [RunSpec(group, "diffurec λ=0 (no diffusion)", ds, "diffurec", seed=s,
                                    model={"extra": {"diffurec_lambda": 0.0}}),
                            RunSpec(group, "sasrec tied", ds, "sasrec", seed=s, model={"tied_input": True}),
                            RunSpec(group, "gru4rec tied", ds, "gru4rec", seed=s, model={"tied_input": True}),
                            RunSpec(group, "t2diff tied", ds, "t2diff", seed=s, model={"tied_input": True})]
            elif suite == "smoke":
                out += [RunSpec("smoke", a, "ml-1m", a, seed=s, train={"max_epochs": 2, "patience": 1})
                        for a in ("sasrec", "gru4rec")]
            else:
                raise ValueError(f"unknown suite {suite!r}")
    return out


def _run_one(spec: dict[str, Any], device: str, threads: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Worker entry (separate process): configure logging, train, return a compact result."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s pid%(process)d %(message)s")
    log.info("start %s/%s %s %s seed %d", spec["group"], spec["label"], spec["dataset"], spec["protocol"], spec["seed"])
    from trainer.offline import OfflineConfig, train

    overrides = dict(overrides)
    cap = overrides.pop("epoch_cap", None)
    cfg = OfflineConfig(dataset=spec["dataset"], arch=spec["arch"], protocol=spec["protocol"], seed=spec["seed"],
                        device=device, threads=threads, model=dict(spec["model"]), **{**spec["train"], **overrides})
    if cap is not None:  # cap (not replace) each data set's own epoch budget
        cfg.max_epochs = min(cfg.resolved().max_epochs, cap)
    res = train(cfg)
    res["spec"] = spec
    return res


def run_grid(specs: list[RunSpec], out_dir: str | Path, jobs: int = 1, device: str = "auto", threads: int = 1,
             overrides: dict[str, Any] | None = None, deadline_s: float | None = None) -> list[dict[str, Any]]:
    """Run the specs not yet in results.jsonl. ``deadline_s``: stop starting runs and kill unfinished ones after
    this many seconds, so a time-limited box still returns every finished run (parallel mode only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res_path = out_dir / "results.jsonl"
    done = {json.loads(line)["run_id"] for line in res_path.read_text().splitlines()} if res_path.exists() else set()
    todo = [s for s in specs if s.run_id not in done]
    log.info("%d runs (%d already in %s), %d parallel jobs on %s", len(specs), len(specs) - len(todo), res_path, jobs, device)
    t0 = time.time()

    def record(n: int, s: RunSpec, get) -> None:
        try:
            r = get()
        except Exception as e:  # one failed run must not lose the others
            log.error("run %s failed: %r", s.run_id, e)
            r = {"spec": asdict(s), "error": repr(e)}
        r["run_id"] = s.run_id
        with res_path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        el = time.time() - t0
        log.info("[%d/%d] %s done (%.0fs elapsed, ~%.0fs left)", n, len(todo), s.run_id, el, el / n * (len(todo) - n))

    if jobs <= 1:  # in-process: no interpreter start-up per run (CPU, tests)
        for n, s in enumerate(todo, 1):
            record(n, s, lambda s=s: _run_one(asdict(s), device, threads, overrides or {}))
        return load_results(res_path)
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    futs = {pool.submit(_run_one, asdict(s), device, threads, overrides or {}): s for s in todo}
    try:
        left = None if deadline_s is None else max(1.0, deadline_s - (time.time() - t0))
        for n, fut in enumerate(as_completed(futs, timeout=left), 1):
            record(n, futs[fut], fut.result)
    except FuturesTimeout:
        unfinished = [s.run_id for f, s in futs.items() if not f.done()]
        log.warning("deadline of %.0fs reached: %d runs not finished (%s ...)", deadline_s, len(unfinished),
                    ", ".join(unfinished[:3]))
        for proc in list(getattr(pool, "_processes", {}).values()):  # workers of this pool only
            proc.terminate()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return load_results(res_path)


def load_results(path: str | Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    a = np.asarray(vals, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


PAPER = {  # Table 2-4 figures (ML-1M, paper protocol with best-epoch-on-test), for reference beside ours
    ("table2", "t2diff"): {"recall@2": 0.07738, "recall@20": 0.27727, "mrr@2": 0.06076, "mrr@20": 0.08730},
    ("table2", "sasrec"): {"recall@20": 0.15564},
    ("table2", "mixed_attention"): {"recall@20": 0.26017},
    ("table2", "t2diff_no_dp"): {"recall@20": 0.25198},
    ("table3", "beta linear"): {"recall@20": 0.27519}, ("table3", "beta log"): {"recall@20": 0.25151},
    ("table4", "T=10"): {"recall@20": 0.2724}, ("table4", "T=200"): {"recall@20": 0.2715},
}


def summarize(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, label) -> metric -> list over seeds, plus epochs and wall time."""
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if "error" in r:
            rows[(r["spec"]["group"], r["spec"]["label"])]["errors"].append(r["error"])
            continue
        key = (r["spec"]["group"], r["spec"]["label"])
        for k, v in r["test"].items():
            if k != "n":
                rows[key][k].append(v)
        rows[key]["val_select"].append(r["val"].get(r["config"]["select_metric"], float("nan")))
        rows[key]["best_epoch"].append(r["best_epoch"])
        rows[key]["wall_s"].append(r["wall_s"])
        rows[key]["test_n"].append(r["test"]["n"])
        rows[key]["infer_ms"].append(r.get("test_infer_ms_per_user", float("nan")))
        rows[key]["dataset"] = r["dataset"]
    return rows


def paired_diff(results: list[dict[str, Any]], group: str, a: str, b: str, metric: str) -> list[float]:
    """Per-seed differences a - b on ``metric`` in ``group`` over the seeds both finished. Both rows of one seed
    share its split, so the paired spread is what decides "a >= b", not the two rows' own spreads."""
    by: dict[str, dict[int, float]] = defaultdict(dict)
    for r in results:
        sp = r["spec"]
        if "error" not in r and sp["group"] == group and sp["label"] in (a, b):
            by[sp["label"]][sp["seed"]] = r["test"][metric]
    return [by[a][s] - by[b][s] for s in sorted(set(by[a]) & set(by[b]))]


def select_on_validation(results: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    """For a group labelled "arch | setting": per arch, the setting with the best mean validation score over
    seeds (one choice per arch, not per seed, so the test rows stay an honest estimate of that choice), with its
    test metrics per seed. Sorted best test score first."""
    rows = summarize([r for r in results if r["spec"]["group"] == group])
    best: dict[str, tuple[float, str]] = {}
    for (_, label), r in rows.items():
        if " | " not in label or not r.get("val_select"):
            continue
        arch = label.split(" | ")[0]
        v = float(np.mean(r["val_select"]))
        if arch not in best or v > best[arch][0]:
            best[arch] = (v, label)
    out = [{"arch": a, "label": lab, "val": v, "n_settings": sum(1 for (_, l) in rows if l.startswith(a + " | ")),
            "test": {k: rows[(group, lab)][k] for k in rows[(group, lab)] if "@" in k}}
           for a, (v, lab) in best.items()]
    return sorted(out, key=lambda o: -np.mean(o["test"].get(_main_recall(o["test"]), [0.0])))


def _metric_order(k: str) -> tuple[int, int]:
    return ["recall", "mrr", "ndcg"].index(k.split("@")[0]), int(k.split("@")[1])


def _main_recall(metrics: Iterable[str]) -> str | None:
    """The table's main cut-off: recall at the largest K (R@20 ML-1M, R@100 KuaiRand); None without recall."""
    recalls = sorted((k for k in metrics if k.startswith("recall@")), key=_metric_order)
    return recalls[-1] if recalls else None


def _selected_md(results: list[dict[str, Any]], group: str) -> list[str]:
    sel = select_on_validation(results, group)
    if not sel:
        return []
    main = _main_recall(sel[0]["test"])
    metrics = sorted(sel[0]["test"], key=_metric_order)
    md = [f"\n#### {group}: each arch at the setting chosen on validation (mean validation score over seeds)\n",
          "| model | chosen setting | settings tried | val | " + " | ".join(metrics) + " |",
          "|---" * (len(metrics) + 4) + "|"]
    for o in sel:
        md.append(f"| {o['arch']} | {o['label'].split(' | ', 1)[1]} | {o['n_settings']} | {o['val']:.4f} | "
                  + " | ".join(_fmt(o["test"][m]) for m in metrics) + " |")
    t2 = next((o for o in sel if o["arch"] == "t2diff"), None)
    others = [o for o in sel if o["arch"] != "t2diff"]
    # one paired line per other arch, the strongest first (SASRec's line is the one the ">= 25 %" target reads)
    for i, b in enumerate(sorted(others, key=lambda o: -np.mean(o["test"][main])) if t2 and main else []):
        pct = 100 * _rel(t2["test"][main], b["test"][main])
        md += _paired_line(results, group, t2["label"], b["label"], main,
                           f"Chosen T2Diff − chosen {b['arch']} ({'best other; ' if i == 0 else ''}"
                           f"{pct:+.1f} % on the mean)")
    return md


def _rel(a: list[float], b: list[float]) -> float:
    """Relative difference of the means, mean(a) / mean(b) - 1 (b's mean floored so an empty score cannot divide)."""
    return float(np.mean(a) / max(np.mean(b), 1e-9) - 1)


def _paired_line(results: list[dict[str, Any]], group: str, a: str, b: str, metric: str, what: str) -> list[str]:
    d = np.asarray(paired_diff(results, group, a, b, metric))
    if len(d) < 2:
        return []
    return [f"\n{what} on {metric}, paired by seed: {d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} "
            f"(standard error; T2Diff higher in {int((d > 0).sum())} of {len(d)} seeds)"]


def report(results: list[dict[str, Any]], out_dir: str | Path, header: str = "") -> str:
    """Markdown tables like the paper's (one per group) + the validation-curve plot; returns the markdown."""
    rows = summarize(results)
    groups: dict[str, list[str]] = defaultdict(list)
    for g, label in rows:
        groups[g].append(label)
    md = [header] if header else []
    for g, labels in groups.items():
        metrics = sorted({k for lab in labels for k in rows[(g, lab)] if "@" in k}, key=_metric_order)
        md += [f"\n### {g} ({rows[(g, labels[0])].get('dataset', '?')}, test split, mean ± std over seeds)\n",
               "| model | seeds | " + " | ".join(metrics) + " | best epoch | infer ms/user | wall s |",
               "|---" * (len(metrics) + 5) + "|"]
        base = rows.get((g, "sasrec"), {}).get(metrics[0] if metrics else "", [])
        for lab in labels:
            r = rows[(g, lab)]
            if r.get("errors") and not r.get(metrics[0] if metrics else "x"):
                md.append(f"| {lab} | 0 | FAILED: {r['errors'][0][:80]} |")
                continue
            cells = [_fmt(r.get(m, [])) for m in metrics]
            md.append(f"| {lab} | {len(r['wall_s'])} | " + " | ".join(cells) +
                      f" | {np.mean(r['best_epoch']):.1f} | {np.nanmean(r['infer_ms']):.3f} | {np.mean(r['wall_s']):.0f} |")
            paper = PAPER.get((g, lab))
            if paper:
                md.append(f"| ↳ paper | - | " + " | ".join(f"{paper[m]:.4f}" if m in paper else "" for m in metrics)
                          + " | | | |")
        # relative gain of the best T2Diff-family row over SASRec on the main cut-off
        main = _main_recall(metrics)
        if base and main and (g, "t2diff") in rows and rows[(g, "t2diff")].get(main):
            t = _rel(rows[(g, "t2diff")][main], rows[(g, "sasrec")][main])
            md.append(f"\nT2Diff vs SASRec on {main} (same invocation): {t * 100:+.1f} %")
        if main and rows.get((g, "t2diff"), {}).get(main):  # against the strongest other row, paired by seed
            others = [lab for lab in labels if lab != "t2diff" and rows[(g, lab)].get(main)]
            if others:
                best = max(others, key=lambda lab: np.mean(rows[(g, lab)][main]))
                md += _paired_line(results, g, "t2diff", best, main, f"T2Diff − {best} (best other row)")
                # the target's baseline, the other diffusion model and the no-diffusion ablation (what the
                for also in ("sasrec", "diffurec", "mixed_attention", "t2diff_no_dp"):  # diffusion module and DP add)
                    if best != also and also in others:
                        md += _paired_line(results, g, "t2diff", also, main, f"T2Diff − {also}")
        # each T2Diff variant row ("t2diff tied", "t2diff next=prior", ...) against the strongest non-T2Diff row
        outside = [lab for lab in labels if not lab.startswith("t2diff") and rows[(g, lab)].get(main)]
        if main and outside:
            b = max(outside, key=lambda lab: np.mean(rows[(g, lab)][main]))
            for v in (lab for lab in labels if lab.startswith("t2diff ") and rows[(g, lab)].get(main)):
                rel = _rel(rows[(g, v)][main], rows[(g, b)][main])
                md += _paired_line(results, g, v, b, main, f"{v} − {b} (best non-T2Diff row; {rel * 100:+.1f} % on the mean)")
        md += _selected_md(results, g)
    from trainer.probe import plot_probe, probe_md  # torch-free report otherwise

    md += probe_md(results)
    text = "\n".join(md) + "\n"
    Path(out_dir, "offline.md").write_text(text)
    plot_curves(results, Path(out_dir, "val_curves.png"))
    plot_probe(results, Path(out_dir, "probe.png"))
    return text


def plot_curves(results: list[dict[str, Any]], path: str | Path) -> None:
    """Validation selection metric per epoch, mean over seeds, one panel per group (in an "arch | setting"
    group, each arch's setting chosen on validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    metric_of: dict[str, str] = {}
    for r in results:
        if "error" in r:
            continue
        m = r["config"]["select_metric"]
        metric_of[r["spec"]["group"]] = m
        curves[r["spec"]["group"]][r["spec"]["label"]].append([h[f"val_{m}"] for h in r["history"]])
    if not curves:
        return
    n = len(curves)
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(5 * cols, 3.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (g, by_label) in zip(axes.flat, curves.items()):
        chosen = {o["label"] for o in select_on_validation(results, g)}  # tuning groups: the chosen setting only
        for lab, runs in by_label.items():
            if chosen and lab not in chosen:
                continue
            L = max(len(c) for c in runs)
            arr = np.full((len(runs), L), np.nan)
            for i, c in enumerate(runs):
                arr[i, :len(c)] = c
            ax.plot(np.arange(L), np.nanmean(arr, 0), label=lab)
        ax.set_title(g)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val {metric_of[g]}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table1(datasets: list[str]) -> str:
    """Data set statistics like the paper's Table 1."""
    from t2diff.data import dataset_stats, load_dataset

    lines = ["| dataset | users | items | interactions | avg seq len | density |", "|---|---|---|---|---|---|"]
    for d in datasets:
        s = dataset_stats(*load_dataset(d))
        lines.append(f"| {s['dataset']} | {s['users']:,} | {s['items']:,} | {s['interactions']:,} | "
                     f"{s['avg_seq_len']:.1f} | {s['density']:.4f} |")
    return "\n".join(lines)


def default_jobs(device: str) -> int:
    if device == "cpu" or (device == "auto" and not _cuda()):
        return 1
    return max(1, (os.cpu_count() or 2) - 2)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
