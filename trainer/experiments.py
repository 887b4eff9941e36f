"""Experiment grid: archs x seeds x datasets x protocols, reported like the paper's Tables 2-4.

Each run is one :func:`trainer.offline.train` call in its own process (``--jobs`` in parallel; on a GPU box many
small runs share the card). Every finished run appends one JSON line to ``results.jsonl`` (resumable: runs
already there are skipped), then :func:`trainer.report.report` writes ``offline.md`` (mean ± std over seeds, beside the
baselines measured in the same invocation) and ``val_curves.png``.
"""
from __future__ import annotations

import copy
import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
TUNED = {"ml-1m-users1-2999": {"t2diff": (0.01, 0.0), "sasrec": (0.01, 0.0), "gru4rec": (0.01, 0.0)},
         "ml-1m": {"t2diff": (0.005, 0.0), "sasrec": (0.01, 0.0), "gru4rec": (0.05, 0.0)},
         # kuairand_tune's choice on seeds 0-9 (eleventh session); kuairand_tuned re-runs it on fresh seeds
         "kuairand": {"t2diff": (0.001, 0.0), "sasrec": (0.01, 0.2), "gru4rec": (0.001, 0.2)}}
TUNE_ARCHS = ["t2diff", "sasrec", "gru4rec"]  # the ML-1M tuning suites: T2Diff and the two baselines it must beat
# tuned suite prefix -> its tables as (group, data set); "<prefix>_full" and "<prefix>_<variant>[_full]" add to them
TUNED_SUITES = {"ml1m_tuned": (("users1-2999_tuned", "ml-1m-users1-2999"), ("table2_tuned", "ml-1m")),
                "kuairand_tuned": (("kuairand_tuned", "kuairand"),)}
TOKEN_LABEL = "mixed_attention + x_n token"  # *_token suites: T2Diff's extra session token, no diffusion
# *_token_kinds suites: what else that token could be (ModelConfig.extra["next_token"]): x_n plus unit-scale noise (an
# untrained official U-Net's x̂), or one learned vector for every user (a constant "sink" token)
TOKEN_KINDS = [("mixed_attention + x_n+noise token", "noise"), ("mixed_attention + learned token", "learned")]
# <tuned prefix>_<variant>[_full]: rows beside the tuned ones at T2Diff's chosen setting, as (label, arch, extra);
# kuairand_<variant> (but ablation, which the kuairand suite has): the same rows at the official recipe
TUNED_VARIANTS = {"ablation": [("t2diff_no_dp", "t2diff_no_dp", None), ("mixed_attention", "mixed_attention", None)],
                  "token": [(TOKEN_LABEL, "mixed_attention", {"next_token": "last"})],
                  "token_kinds": [(label, "mixed_attention", {"next_token": k}) for label, k in TOKEN_KINDS]}
# kuairand_structure_tune: the search kuairand_tune began (lr x dropout) carried into each arch's own structure, at its
# TUNED (lr, dropout): six settings per arch (an equal budget), including the default structure. λ is not searched:
# the U-Net is the only module L_KL reaches (stop-gradient into the embeddings; x̂ enters the tower detached), so λ
# only scales the U-Net's gradients, which Adam normalises away.
STRUCTURE_GRID = {"t2diff": [{"session_len": k, "num_blocks": b} for k in (5, 10, 20) for b in (1, 2)],
                  "sasrec": [{"num_blocks": b, "num_heads": h} for b in (1, 2, 3) for h in (1, 2)],
                  "gru4rec": [{"num_blocks": b, "extra": {"gru_hidden": h}} for b in (1, 2) for h in (8, 16, 32)]}
# the setting kuairand_structure_tune chose on mean validation R@100 over seeds 0-9 (nineteenth session), for the
# archs where it is not the default: SASRec and GRU4Rec kept theirs, so their kuairand_tuned rows already are their
# choice. kuairand_structure_tuned re-runs it on fresh seeds, as rows "<arch> structure-tuned" beside kuairand_tuned's
STRUCTURE_TUNED: dict[str, dict[str, Any]] = {"t2diff": {"session_len": 10, "num_blocks": 2}}
STRUCTURE_SUFFIX = " structure-tuned"  # its row labels; the report pairs each with the arch's default-structure row


def structure_label(arch: str, model: dict[str, Any]) -> str:
    """{"num_blocks": 2, "extra": {"gru_hidden": 16}} -> "gru4rec | num_blocks=2 gru_hidden=16"."""
    flat = {**{k: v for k, v in model.items() if k != "extra"}, **model.get("extra", {})}
    return f"{arch} | " + " ".join(f"{k}={v}" for k, v in flat.items())


PROBE_GROUPS = (("kuairand_probe", "kuairand"), ("users1-2999_probe", "ml-1m-users1-2999"),  # probe_official,
                ("table2_probe", "ml-1m"))  # zero_out


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


def _structure_spec(group: str, label: str, arch: str, structure: dict[str, Any], seed: int) -> RunSpec:
    """One KuaiRand run of ``arch`` at its TUNED (lr, dropout) with ``structure`` (ModelConfig fields, "extra")."""
    lr, d = TUNED["kuairand"][arch]
    return RunSpec(group, label, "kuairand", arch, seed=seed, model={"dropout": d, **copy.deepcopy(structure)},
                   train={"lr": lr})


def _tune_specs(group: str, dataset: str, archs: list[str], lrs: tuple[float, ...], seed: int,
                dropouts: tuple[float, ...] = TUNE_DROPOUTS) -> list[RunSpec]:
    """Every arch over the same lr x dropout grid; labels "arch | setting" for select_on_validation."""
    return [RunSpec(group, f"{a} | lr={lr:g} dropout={d:g}", dataset, a, seed=seed, model={"dropout": d},
                    train={"lr": lr}) for a in archs for lr in lrs for d in dropouts]


def _tuned_suite(suite: str) -> tuple[str, str | None, bool] | None:
    """"kuairand_tuned_token_full" -> ("kuairand_tuned", "token", True); None if not a tuned suite."""
    for prefix in TUNED_SUITES:
        rest = suite.removeprefix(prefix)
        if rest == suite:
            continue
        full = rest.endswith("_full")
        variant = rest.removesuffix("_full").removeprefix("_") or None
        if rest.removesuffix("_full") in ("", *(f"_{v}" for v in TUNED_VARIANTS)):
            return prefix, variant, full
    return None


def grid(suites: list[str], seeds: list[int], large_edim: int = 64, l_epochs: int = 20,
         l_per_user: int | None = 30) -> list[RunSpec]:
    """The runs behind each table. Suite names: table2, table2_large, table3, table4, kuairand, kuairand_edim
    (every arch at edim 16 and ``large_edim``), kuairand_tune (every arch over the same lr x dropout grid),
    kuairand_structure_tune (T2Diff, SASRec, GRU4Rec over six settings each of their own structure, at their tuned
    lr x dropout), kuairand_structure_tuned (the structure it chose, fresh seeds, into kuairand_tuned's table),
    users1-2999_tune and table2_tune (T2Diff, SASRec, GRU4Rec over one lr x dropout grid on ML-1M), ml1m_tune_edge
    (those grids extended to higher lrs, into the same groups), ml1m_tuned (each arch at the setting those grids
    chose, for fresh seeds), ml1m_tuned_ablation (T2Diff without drift preparation and mixed attention only at
    T2Diff's chosen setting, beside ml1m_tuned), ml1m_tuned_full / ml1m_tuned_ablation_full (the same with no early
    stop), ml1m_tuned_token / ml1m_tuned_token_full (mixed attention with x_n as T2Diff's extra session token,
    no diffusion, at T2Diff's setting: the token's worth without the generated drift), kuairand_tuned[_ablation,
    _token, _token_kinds][_full] (the same on KuaiRand at kuairand_tune's choice; _token_kinds: the extra token as
    x_n + noise or as one learned vector), kuairand_token / kuairand_token_kinds (those tokens at the official recipe,
    beside the kuairand suite's rows), ml1m_tuned_probe (T2Diff
    and T2Diff without DP at that setting, x̂_{n+1} probed: trainer.probe),
    probe_official (T2Diff at the official recipe, probed, on KuaiRand and both ML-1M sets), zero_out (T2Diff with
    the U-Net's output started at 0, beside probe_official's rows; GRU4Rec and SASRec on KuaiRand), diffurec
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
            elif suite == "kuairand_structure_tune":  # each arch's own structure at its tuned (lr, dropout)
                out += [_structure_spec(suite, structure_label(a, st), a, st, s)
                        for a, settings in STRUCTURE_GRID.items() for st in settings]
            elif suite == "kuairand_structure_tuned":  # the structure chosen above, beside kuairand_tuned's rows
                if not STRUCTURE_TUNED:
                    raise ValueError("kuairand_structure_tuned needs STRUCTURE_TUNED (run kuairand_structure_tune)")
                out += [_structure_spec("kuairand_tuned", a + STRUCTURE_SUFFIX, a, st, s)
                        for a, st in STRUCTURE_TUNED.items()]
            elif suite == "users1-2999_tune":  # the same search on ML-1M (file order / chronological), for the
                out += _tune_specs(suite, "ml-1m-users1-2999", TUNE_ARCHS, TUNE_LRS_ML1M, s)  # archs behind the
            elif suite == "table2_tune":  # "beats SASRec by >= 25 %" target, official budget
                out += _tune_specs(suite, "ml-1m", TUNE_ARCHS, TUNE_LRS_ML1M, s)
            elif suite == "ml1m_tune_edge":  # both ML-1M grids one step further up in lr (their groups)
                for group, ds in (("users1-2999_tune", "ml-1m-users1-2999"), ("table2_tune", "ml-1m")):
                    out += _tune_specs(group, ds, TUNE_ARCHS, TUNE_LRS_ML1M_EDGE, s, dropouts=(0.0,))
            elif (tuned := _tuned_suite(suite)) is not None:  # ml1m_tuned*, kuairand_tuned*
                prefix, variant, full = tuned
                for group, ds in TUNED_SUITES[prefix]:
                    group += "_full" if full else ""  # _full: no early stop (the official epochs, best validation kept)
                    train = {"patience": None} if full else {}
                    if variant is None:  # each arch at its chosen setting (TUNED), labels = arch names
                        out += [RunSpec(group, a, ds, a, seed=s, model={"dropout": d}, train={"lr": lr, **train})
                                for a, (lr, d) in TUNED[ds].items()]
                        continue
                    # T2Diff's Table 2 ablations, or mixed attention with an extra session token in place of T2Diff's
                    # x̂_{n+1} (no diffusion), at T2Diff's chosen setting (an ablation keeps the full model's recipe)
                    lr, d = TUNED[ds]["t2diff"]
                    out += [RunSpec(group, label, ds, arch, seed=s,
                                    model={"dropout": d, **({"extra": dict(extra)} if extra else {})},
                                    train={"lr": lr, **train}) for label, arch, extra in TUNED_VARIANTS[variant]]
            elif suite.removeprefix("kuairand_") in TUNED_VARIANTS.keys() - {"ablation"}:  # the extra-token rows at
                out += [RunSpec("kuairand", label, "kuairand", arch, seed=s, model={"extra": dict(extra)})  # the official
                        for label, arch, extra in TUNED_VARIANTS[suite.removeprefix("kuairand_")]]  # recipe, kuairand's table
            elif suite == "ml1m_tuned_probe":  # the two diffusion archs at T2Diff's chosen setting, probed on the
                for group, ds in TUNED_SUITES["ml1m_tuned"]:  # test set: what their x̂_{n+1} is worth (trainer.probe)
                    lr, d = TUNED[ds]["t2diff"]
                    out += [RunSpec(group + "_probe", a, ds, a, seed=s, model={"dropout": d},
                                    train={"lr": lr, "probe_next": True}) for a in ("t2diff", "t2diff_no_dp")]
            elif suite == "probe_official":  # T2Diff at the official recipe, x̂_{n+1} probed, on the three data sets
                out += [RunSpec(group, "t2diff", ds, "t2diff", seed=s, train={"probe_next": True})
                        for group, ds in PROBE_GROUPS]
            elif suite == "zero_out":  # T2Diff with the U-Net's last layer started at 0 (ModelConfig.unet_zero_out),
                # probed, into probe_official's groups (paired by seed with its T2Diff rows); KuaiRand's baselines
                for group, ds in PROBE_GROUPS:
                    out.append(RunSpec(group, "t2diff zero-out", ds, "t2diff", seed=s, model={"unet_zero_out": True},
                                       train={"probe_next": True}))
                    if ds == "kuairand":
                        out += [RunSpec(group, a, ds, a, seed=s) for a in ("gru4rec", "sasrec")]
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
    res_path = results_path(out_dir)
    done = {r["run_id"] for r in load_results(res_path)}
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


def results_path(out_dir: str | Path) -> Path:
    """The results file of a ``bench offline --out`` directory: one JSON line per finished or failed run."""
    return Path(out_dir) / "results.jsonl"


def load_results(path: str | Path, finished_only: bool = False) -> list[dict[str, Any]]:
    """The runs in a results.jsonl; ``finished_only`` drops failed runs (those recorded with an "error")."""
    if not Path(path).exists():
        return []
    runs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in runs if "error" not in r] if finished_only else runs


def default_jobs(device: str) -> int:
    if device == "cpu" or (device == "auto" and not _cuda()):
        return 1
    return max(1, (os.cpu_count() or 2) - 2)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
