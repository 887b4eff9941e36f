import json

import pytest
import torch

from tests.trainer.test_offline import _cyclic, tiny_ml1m  # noqa: F401 (fixture)
from trainer import cli as trainer_cli
from trainer.offline import OfflineConfig, train
from trainer.probe import VARIANTS, probe_next
from trainer.report import plot_probe, probe_md, report
from trainer.protocols import protocol_p

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained():
    """A tiny T2Diff trained on a fully predictable walk (i -> i+1), probed by the harness."""
    seqs, cat = _cyclic(n_users=80)
    split = protocol_p(seqs, seed=0)
    res = train(OfflineConfig(dataset="synthetic", arch="t2diff", max_epochs=3, batch_size=64, lr=0.01, device="cpu",
                              probe_next=True, model={"edim": 8}), split=split, catalog=cat, out=None)
    return res, split


def test_sampled_variant_is_the_harness_test_evaluation(trained):
    res, split = trained
    p = res["probe"]
    assert p["n"] == res["test"]["n"] == len(split.test)
    for k in ("recall@2", "recall@20", "mrr@2", "mrr@20"):  # same weights, same noise draw, same batches
        assert p["sampled"][k] == pytest.approx(res["test"][k], abs=1e-12)
    for v in VARIANTS:
        assert 0.0 <= p[v]["mrr@20"] <= p[v]["recall@20"] <= 1.0
    assert set(p["guess"]) == {f"{m}@{k}{s}" for m in ("recall", "mrr") for k in (2, 20) for s in ("", "_last")}
    assert -1.0 <= p["drift_cos"] <= 1.0 and p["dist_ratio"] > 0


def _model_and_test(n_users=40):
    seqs, cat = _cyclic(n_users=n_users)
    split = protocol_p(seqs, seed=0)
    torch.manual_seed(0)
    from t2diff.model.config import ModelConfig
    from trainer import modelapi

    cfg = ModelConfig(arch="t2diff", num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags,
                      id_dim=4, tag_dim=4, user_dim=16)
    return modelapi.build_model(cfg, torch.from_numpy(cat.tags)), split.test


def test_a_diffusion_that_predicts_no_drift_is_exactly_the_zero_drift_variant(monkeypatch):
    model, test = _model_and_test()
    # replace the reverse process by "x̂ = x_n": the sampled and zero-drift rows must then agree exactly, the
    # generated drift has no direction (cos 0), x̂ is as far from the target as x_n is, and both guesses rank alike
    monkeypatch.setattr(model.diffusion, "sample", lambda x, mask, n=None, gen=None: x[:, -1].clone())
    p = probe_next(model, test, (2, 20), CPU, batch_size=16, seed=3)
    assert p["sampled"] == p["zero_drift"]
    assert p["drift_cos"] == 0.0 and p["dist_ratio"] == pytest.approx(1.0)
    for k in ("recall@2", "recall@20", "mrr@20"):
        assert p["guess"][k] == p["guess"][k + "_last"]


def test_a_diffusion_that_predicts_the_target_scores_like_the_oracle(monkeypatch):
    model, test = _model_and_test()
    table = model.input_vectors(torch.arange(model.items.num_items + 1), table=True).detach()
    targets = iter(test.target.split(16))  # the probe walks the samples in batches of 16, in order
    monkeypatch.setattr(model.diffusion, "sample", lambda x, mask, n=None, gen=None: table[next(targets)])
    p = probe_next(model, test, (2, 20), CPU, batch_size=16, seed=3)
    assert p["sampled"] == p["oracle"]
    assert p["drift_cos"] == pytest.approx(1.0) and p["dist_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert p["guess"]["recall@2"] == 1.0  # x̂ is the target's own vector: the nearest item (distinct vectors)
    assert p["guess"]["recall@2_last"] < 1.0


def test_probe_is_refused_for_archs_without_diffusion(tiny_ml1m, capsys):  # noqa: F811
    with pytest.raises(ValueError, match="probe_next needs a diffusion arch"):
        OfflineConfig(arch="sasrec", probe_next=True).resolved()
    model, test = _model_and_test()
    model.diffusion = None
    with pytest.raises(ValueError, match="needs a diffusion arch"):
        probe_next(model, test, (20,), CPU)
    ck = tiny_ml1m / "g.pt"
    assert trainer_cli.main(["train", "offline", "--dataset", "ml-1m", "--arch", "gru4rec", "--max-epochs", "1",
                             "--device", "cpu", "--out", str(ck)]) == 0
    capsys.readouterr()
    assert trainer_cli.main(["eval", "--checkpoint", str(ck), "--probe-next", "--device", "cpu"]) == 2
    assert "needs a diffusion arch checkpoint" in capsys.readouterr().err


def test_cli_train_and_eval_report_the_probe(tiny_ml1m, capsys):  # noqa: F811
    ck = tiny_ml1m / "t.pt"
    assert trainer_cli.main(["train", "offline", "--dataset", "ml-1m", "--arch", "t2diff", "--max-epochs", "1",
                             "--device", "cpu", "--probe-next", "--out", str(ck)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["probe"]["sampled"]["recall@20"] == pytest.approx(first["test"]["recall@20"])
    assert trainer_cli.main(["eval", "--checkpoint", str(ck), "--probe-next", "--device", "cpu"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["probe"]["sampled"] == pytest.approx(first["probe"]["sampled"])  # same split, weights and noise
    assert ev["probe"]["oracle"] == pytest.approx(first["probe"]["oracle"])


def _run(group, label, seed, r20):  # a bench result line as run_grid writes it (the fields report reads)
    return {"spec": {"group": group, "label": label, "seed": seed}, "dataset": "ml-1m",
            "test": {"n": 100, "recall@20": r20}, "val": {"recall@20": r20}, "config": {"select_metric": "recall@20"},
            "best_epoch": 3, "wall_s": 1.0, "test_infer_ms_per_user": 0.1, "history": [{"val_recall@20": r20}]}


def _probed(seed, sampled, zero, shuffled, oracle):
    def m(r):
        return {"recall@20": r, "mrr@20": r / 4, "recall@2": r / 5, "mrr@2": r / 10}
    return {**_run("g_probe", "t2diff", seed, sampled),
            "probe": {"sampled": m(sampled), "zero_drift": m(zero), "shuffled": m(shuffled), "oracle": m(oracle),
                      "guess": {"recall@20": 0.1, "recall@20_last": 0.2, "mrr@20": 0.0, "mrr@20_last": 0.0},
                      "drift_cos": 0.05 * seed, "dist_ratio": 1.1, "n": 100}}


def test_probe_report_pairs_the_variants_by_seed(tmp_path):
    results = [_probed(0, 0.30, 0.28, 0.20, 0.90), _probed(1, 0.20, 0.21, 0.15, 0.80),
               _probed(2, 0.25, 0.20, 0.10, 0.85), _run("g", "sasrec", 0, 0.3)]
    md = "\n".join(probe_md(results))
    assert "#### g_probe / t2diff" in md and "(3 seeds" in md and "sasrec" not in md
    assert "| oracle | 0.8500 ± 0.0500 |" in md
    # sampled − zero_drift: (+0.02, −0.01, +0.05): mean +0.02, SE 0.03 / sqrt(3) = 0.0173, higher in 2 of 3
    assert "sampled − zero_drift on recall@20, paired by seed: +0.0200 ± 0.0173 (standard error; sampled higher " \
           "in 2 of 3 seeds)" in md
    assert "sampled − oracle on recall@20, paired by seed: -0.6000 ± 0.0000" in md
    # drift_cos 0, 0.05, 0.10: mean 0.05, std 0.05
    assert "cos(generated drift, true drift) 0.0500 ± 0.0500" in md
    report(results, tmp_path)  # the bench report carries the probe section and its bar chart
    assert "#### g_probe / t2diff" in (tmp_path / "offline.md").read_text()
    assert (tmp_path / "probe.png").stat().st_size > 0
    assert not plot_probe(results[-1:], tmp_path / "none.png") and not (tmp_path / "none.png").exists()
