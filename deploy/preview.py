"""Draw the generated dashboards' layout as PNGs (no Grafana needed): one box per panel at its gridPos, with its
title, kind and first query, so a reviewer sees what an operator will get.

``python -m deploy.preview [--out DIR]`` (default ``$T2DIFF_RUNS_DIR/dashboard_preview``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

from deploy import dashboards

log = logging.getLogger(__name__)

KIND_COLOUR = {"timeseries": "#dbe9f6", "stat": "#fde9c9", "row": "#e4e4e4"}


def draw(dash: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    fig, ax = plt.subplots(figsize=(16, 0.42 * bottom + 1))
    for p in dash["panels"]:
        g = p["gridPos"]
        ax.add_patch(Rectangle((g["x"], g["y"]), g["w"], g["h"], facecolor=KIND_COLOUR.get(p["type"], "white"),
                               edgecolor="#555555", linewidth=1))
        if p["type"] == "row":
            ax.text(g["x"] + 0.2, g["y"] + 0.5, p["title"], va="center", fontsize=10, weight="bold", parse_math=False)
            continue
        ax.text(g["x"] + 0.2, g["y"] + 0.5, f"{p['title']}  [{p['type']}, {p['fieldConfig']['defaults']['unit']}]",
                va="top", fontsize=8.5, weight="bold", parse_math=False)
        query = "\n".join(textwrap.wrap(p["targets"][0]["expr"], width=int(g["w"] * 5.2)))
        more = f"\n(+{len(p['targets']) - 1} more queries)" if len(p["targets"]) > 1 else ""
        ax.text(g["x"] + 0.2, g["y"] + 1.4, query + more, va="top", fontsize=6.5, family="monospace",
                color="#333333", parse_math=False)
    ax.set_xlim(0, 24)
    ax.set_ylim(bottom, 0)
    ax.set_axis_off()
    ax.set_title(f"{dash['title']}  (uid {dash['uid']}, layout preview)", fontsize=12, parse_math=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from t2diff.paths import runs_dir

    ap = argparse.ArgumentParser(prog="python -m deploy.preview", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or runs_dir() / "dashboard_preview"
    for name, text in dashboards.render_all().items():
        log.info("wrote %s", draw(json.loads(text), out / name.replace(".json", ".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
