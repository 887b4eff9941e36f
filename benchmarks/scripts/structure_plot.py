"""Plot of the KuaiRand structure search and its fresh-seed check (benchmarks/offline.md, nineteenth session).

Left: each arch's six structures from ``kuairand_structure_tune`` (mean validation R@100 over the search seeds,
± standard error); the one ``select_on_validation`` chose is hatched. Right: on the fresh seeds of one or more
``kuairand_tuned`` + ``kuairand_structure_tuned`` results directories, each row − GRU4Rec on test R@100, paired by
seed (mean ± standard error; the directories' pairs pooled)::

    python benchmarks/scripts/structure_plot.py --search /tmp/s19/st --confirm /tmp/s19/sc /tmp/s18/kt /tmp/s19/sx \\
        --rows sasrec t2diff "t2diff structure-tuned" "mixed_attention + learned token" \\
        --out benchmarks/offline_kuairand_structure.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trainer.experiments import STRUCTURE_GRID, load_results, results_path, structure_label
from trainer.report import paired_diff, select_on_validation, standard_error, summarize

COLOURS = {"t2diff": "tab:red", "sasrec": "tab:green", "gru4rec": "tab:blue"}
SHORT = {"session_len": "k", "num_blocks": "blocks", "num_heads": "heads", "gru_hidden": "hidden"}


def _tick(label: str) -> str:
    """"gru4rec | num_blocks=2 gru_hidden=16" -> "blocks=2 hidden=16" (the arch is the bar's colour)."""
    setting = label.split(" | ", 1)[1]
    for k, v in SHORT.items():
        setting = setting.replace(k + "=", v + "=")
    return setting



def search_bars(results: list[dict], group: str = "kuairand_structure_tune") -> list[tuple[str, float, float, bool]]:
    """(label, mean validation score, its standard error, chosen) per setting, archs in STRUCTURE_GRID order."""
    rows = summarize([r for r in results if r["spec"]["group"] == group])
    chosen = {o["label"] for o in select_on_validation(results, group)}
    out = []
    for arch, settings in STRUCTURE_GRID.items():  # in the grid's own order
        for label in (structure_label(arch, st) for st in settings):
            if (group, label) in rows:
                v = np.asarray(rows[(group, label)]["val_select"])
                out.append((label, float(v.mean()), standard_error(v), label in chosen))
    return out


def confirm_bars(dirs: list[str], base: str = "gru4rec", group: str = "kuairand_tuned",
                 metric: str = "recall@100") -> dict[str, tuple[float, float, int]]:
    """row -> (mean, standard error, pairs) of row − ``base``, paired by seed, pooled over the directories."""
    diffs: dict[str, list[float]] = {}
    for d in dirs:
        res = load_results(results_path(d), finished_only=True)
        for label in sorted({r["spec"]["label"] for r in res if r["spec"]["group"] == group} - {base}):
            diffs.setdefault(label, []).extend(paired_diff(res, group, label, base, metric))
    return {k: (float(np.mean(v)), standard_error(np.asarray(v)), len(v)) for k, v in diffs.items() if len(v) >= 2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", required=True, help="results directory of kuairand_structure_tune")
    ap.add_argument("--confirm", nargs="+", required=True, help="results directories with kuairand_tuned rows")
    ap.add_argument("--rows", nargs="+", default=["sasrec", "t2diff", "t2diff structure-tuned"],
                    help="rows of the right panel (each paired with gru4rec)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = search_bars(load_results(results_path(a.search), finished_only=True))
    confirm = confirm_bars(a.confirm)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1.3]})
    for i, (label, mean, se, chosen) in enumerate(search):
        ax1.bar(i, mean, yerr=se, capsize=3, color=COLOURS[label.split(" | ")[0]], hatch="//" if chosen else None,
                edgecolor="k" if chosen else None)
    means = [m for _, m, _, _ in search]
    ax1.set_ylim(min(means) - 0.01, max(means) + 0.01)
    ax1.set_xticks(range(len(search)))
    ax1.set_xticklabels([_tick(lab) for lab, *_ in search], fontsize=7.5, rotation=60, ha="right")
    ax1.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()], labels=list(COLOURS),
               loc="upper right", fontsize=8)
    ax1.set_ylabel("validation recall@100 (mean ± SE over seeds)")
    ax1.set_title("structure search at each arch's tuned lr x dropout (hatched: chosen)")
    names = [n for n in a.rows if n in confirm]
    ax2.bar(range(len(names)), [confirm[n][0] for n in names], yerr=[confirm[n][1] for n in names], capsize=4,
            color=[COLOURS.get(n.split(" ")[0], "grey") for n in names])
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels([f"{n.replace(' + ', chr(10) + '+ ').replace(' structure', chr(10) + 'structure')}\n"
                         f"({confirm[n][2]} seeds)" for n in names], fontsize=7)
    ax2.set_ylabel("test recall@100, row − GRU4Rec (paired, ± SE)")
    ax2.set_title("fresh seeds")
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    for n in names:
        print(f"{n} − gru4rec: {confirm[n][0]:+.4f} ± {confirm[n][1]:.4f} ({confirm[n][2]} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
