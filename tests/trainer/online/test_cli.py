"""CLI wiring: config sections, registry list / rollback (index alias + LATEST together)."""
import numpy as np
import pytest
import torch

from t2diff.index import ItemIndex
from t2diff.model import build_model
from t2diff.registry import ModelRegistry
from trainer.online.cli import _sections, main
from trainer.online.synthetic import synthetic_catalog, tiny_config


def test_config_sections_and_rollback(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
online_trainer: {{batch_size: 7, group: g1}}
registry: {{root: {tmp_path / 'reg'}}}
index: {{uri: {tmp_path / 'items.db'}, shared: false}}
stream: {{log_dir: {tmp_path / 'log'}}}
""")

    class A:
        config = str(cfg)
        device = "cpu"
    s, st, reg_s, idx_s = _sections(A())
    assert s.batch_size == 7 and s.group == "g1" and s.device == "cpu" and not idx_s.shared

    cat = synthetic_catalog(5)
    model = build_model(tiny_config(cat), torch.from_numpy(cat.tags))
    reg = ModelRegistry(settings=reg_s)
    idx = ItemIndex(settings=idx_s)
    for v in (1, 2):
        assert reg.publish(model, set_latest=False) == v
        idx.publish(v, cat.raw_ids, np.eye(5, 8) * v)
        reg.set_latest(v)
    idx.close()
    assert main(["registry", "rollback", "1", "--config", str(cfg)]) == 0
    assert reg.latest() == 1
    idx = ItemIndex(settings=idx_s)
    assert idx.live_version() == 1
    idx.close()
    assert main(["registry", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "*      1" in out and "       2" in out


def test_eval_steps_flag():
    from trainer.online.cli import _eval_steps

    assert _eval_steps("model,10") == [None, 10] and _eval_steps("5") == [5]
    for bad in ("0", "ten", "-3"):
        with pytest.raises(SystemExit, match="--eval-steps"):
            _eval_steps(bad)


def test_throughput_bench_measures_each_scoring_step_count(tmp_path):
    """`bench trainer throughput --eval-steps model,5`: one scored row per step count, one unscored row."""
    md = tmp_path / "t.md"
    rc = main(["bench", "trainer", "throughput", "--device", "cpu", "--threads", "1", "--events", "400", "--items",
               "40", "--users", "15", "--batch-size", "64", "--poll-max", "200", "--both", "--eval-steps", "model,5",
               "--out", str(tmp_path / "out"), "--md", str(md)])
    assert rc == 0
    rows = [line.split("|")[1:-1] for line in md.read_text().splitlines() if line.startswith("| t2diff")]
    # arch | prequential | scoring steps | decode workers | items | events | ...
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("True", "50"), ("True", "5"), ("False", "-")]
    assert all(int(r[5]) == 400 and float(r[8]) > 0 for r in rows)
