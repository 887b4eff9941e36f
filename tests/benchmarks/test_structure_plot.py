"""benchmarks/scripts/structure_plot.py on hand-made results files (no training)."""
import importlib.util
import json
from pathlib import Path

import pytest

from trainer.experiments import STRUCTURE_GRID, structure_label

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scripts" / "structure_plot.py"


def _module():
    spec = importlib.util.spec_from_file_location("structure_plot", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(group, label, seed, val, test):
    return {"spec": {"group": group, "label": label, "seed": seed}, "dataset": "kuairand", "run_id": f"{label}{seed}",
            "test": {"n": 10, "recall@100": test}, "val": {"recall@100": val}, "config": {"select_metric": "recall@100"},
            "best_epoch": 1, "wall_s": 1.0, "history": []}


def _write(d: Path, runs: list[dict]) -> Path:
    d.mkdir()
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    return d


def test_structure_plot_marks_the_validation_choice_and_pools_fresh_seed_pairs(tmp_path, capsys):
    mod = _module()
    search = []
    for arch, settings in STRUCTURE_GRID.items():
        for i, st in enumerate(settings):  # the last setting is best on validation, the first on test
            search += [_run("kuairand_structure_tune", structure_label(arch, st), s, 0.20 + 0.01 * i, 0.30 - 0.01 * i)
                       for s in range(2)]
    bars = mod.search_bars(search)
    assert len(bars) == 18 and [b[0] for b in bars[:6]] == [structure_label("t2diff", st) for st in STRUCTURE_GRID["t2diff"]]
    assert [b[3] for b in bars] == [i == 5 for _ in range(3) for i in range(6)]  # chosen on validation, not test
    assert bars[5][1] == pytest.approx(0.25) and bars[5][2] == pytest.approx(0.0)
    # two confirmation directories: their pairs are pooled, seed by seed within each
    a = _write(tmp_path / "a", [_run("kuairand_tuned", "gru4rec", s, 0, 0.25) for s in range(2)]
               + [_run("kuairand_tuned", "t2diff", s, 0, v) for s, v in enumerate([0.24, 0.26])])
    b = _write(tmp_path / "b", [_run("kuairand_tuned", "gru4rec", s, 0, 0.25) for s in range(2)]
               + [_run("kuairand_tuned", "t2diff", s, 0, v) for s, v in enumerate([0.22, 0.24])]
               + [_run("kuairand_tuned", "t2diff structure-tuned", s, 0, 0.27) for s in range(2)])
    c = mod.confirm_bars([str(a), str(b)])
    # t2diff − gru4rec: (-0.01, +0.01) and (-0.03, -0.01): mean -0.01, SE sqrt(0.0008 / 3) / 2
    assert c["t2diff"][0] == pytest.approx(-0.01) and c["t2diff"][2] == 4
    assert c["t2diff"][1] == pytest.approx((0.0008 / 3) ** 0.5 / 2)
    assert c["t2diff structure-tuned"] == pytest.approx((0.02, 0.0, 2))
    s = _write(tmp_path / "s", search)
    out = tmp_path / "plot.png"
    assert mod.main(["--search", str(s), "--confirm", str(a), str(b), "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert "t2diff − gru4rec: -0.0100 ± 0.0082 (4 pairs)" in capsys.readouterr().out
