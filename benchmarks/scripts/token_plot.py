"""Bar plot: what each extra session token adds to mixed attention only, paired by seed, per table.

Reads ``results.jsonl`` files written by ``t2diff bench offline`` and, for every group that has a
``mixed_attention`` row, draws (row − mixed_attention) on the group's main recall (mean ± standard error over the
seeds both rows finished) for T2Diff and every ``mixed_attention + ...`` row. Used for benchmarks/offline.md's
eighteenth-session section:

    python benchmarks/scripts/token_plot.py --out benchmarks/offline_token_kinds.png \\
        "KuaiRand, official, CPU=/tmp/s18/ko" "KuaiRand, tuned, CPU=/tmp/s18/kt" "ML-1M chronological, H100=/tmp/s18/gc" \\
        "ML-1M chronological, CPU=/tmp/s18/cc" "ML-1M file order, CPU=/tmp/s18/cf"
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from trainer.experiments import TOKEN_KINDS, TOKEN_LABEL, load_results, results_path
from trainer.report import _main_recall, paired_diff, standard_error

# bar order: T2Diff, then the tokens as the suites define them (x_n, then TOKEN_KINDS), then any other variant row
ORDER = ["t2diff", TOKEN_LABEL, *(label for label, _ in TOKEN_KINDS)]



def bars(results: list[dict]) -> dict[str, tuple[str, dict[str, tuple[float, float, int]]]]:
    """group -> (metric, {row: (mean, standard error, seeds)}) of row − mixed_attention, paired by seed."""
    out = {}
    for g in sorted({r["spec"]["group"] for r in results}):
        rows = [r for r in results if r["spec"]["group"] == g]
        labels = sorted({r["spec"]["label"] for r in rows})
        metric = _main_recall(rows[0]["test"])
        if "mixed_attention" not in labels or metric is None:
            continue
        cols = {}
        shown = [x for x in labels if x == "t2diff" or x.startswith("mixed_attention ")]
        for lab in sorted(shown, key=lambda x: (ORDER.index(x) if x in ORDER else len(ORDER), x)):
            d = np.asarray(paired_diff(rows, g, lab, "mixed_attention", metric))
            if len(d) >= 2:
                cols[lab] = (float(d.mean()), standard_error(d), len(d))
        out[g] = (metric, cols)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panels", nargs="+", help="TITLE=RESULTS_DIR (one panel per title; dirs may repeat)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for p in a.panels:
        title, _, path = p.rpartition("=")
        for g, (metric, cols) in bars(load_results(results_path(path), finished_only=True)).items():
            panels.append((f"{title}\n({g})", metric, cols))
    if not panels:
        print("no group with a mixed_attention row", file=sys.stderr)
        return 1
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, metric, cols) in zip(axes.flat, panels):
        names = list(cols)
        means = [cols[n][0] for n in names]
        ses = [cols[n][1] for n in names]
        ax.bar(range(len(names)), means, yerr=ses, capsize=4,
               color=["tab:red" if n == "t2diff" else "tab:blue" for n in names])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("mixed_attention + ", "+ ") for n in names], rotation=30, ha="right", fontsize=8)
        seeds = sorted({cols[n][2] for n in names})
        ax.set_title(f"{title}, {'/'.join(map(str, seeds))} seeds", fontsize=9)
        ax.set_ylabel(f"{metric} − mixed attention only (paired)")
        for n, (m, se, _) in cols.items():
            print(f"{title.replace(chr(10), ' ')}: {n} − mixed_attention on {metric}: {m:+.4f} ± {se:.4f}")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
