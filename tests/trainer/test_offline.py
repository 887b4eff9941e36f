import gzip
import json

import numpy as np
import pytest
import torch

from t2diff.data import Catalog
from trainer import cli as trainer_cli
from trainer.modelapi import load_checkpoint
from trainer.offline import OfflineConfig, evaluate, train
from trainer.protocols import protocol_p


def _cyclic(n_users=120, n_items=20, seed=0):
    """Each user walks the catalogue in order (i -> i+1): the next item is fully predictable."""
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(1, n_users + 1):
        n, start = int(rng.integers(8, 70)), int(rng.integers(0, n_items))
        items = (start + np.arange(n)) % n_items + 1
        seqs[u] = (items.astype(np.int64), np.arange(n, dtype=np.int64) * 60_000)
    tags = np.zeros((n_items + 1, 1), dtype=np.int64)
    tags[1:, 0] = np.arange(n_items) % 3 + 1
    return seqs, Catalog("synthetic", np.arange(100, 100 + n_items), tags, num_tags=3)


def test_loop_learns_synthetic_and_checkpoint_round_trip(tmp_path):
    seqs, cat = _cyclic()
    split = protocol_p(seqs, seed=0)
    cfg = OfflineConfig(dataset="synthetic", arch="gru4rec", max_epochs=8, patience=8, batch_size=32, lr=0.01,
                        select_metric="mrr@20", device="cpu", model={"edim": 16})
    out = tmp_path / "m.pt"
    res = train(cfg, split=split, catalog=cat, out=out)
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < losses[0] * 0.7, losses
    assert res["test"]["recall@2"] > 0.5  # chance is 2/20
    # the epoch is selected on validation (recall@20 is trivially 1 with 20 items, hence MRR here)
    assert res["history"][res["best_epoch"]]["val_mrr@20"] == max(h["val_mrr@20"] for h in res["history"])
    model, extra = load_checkpoint(out)
    assert Catalog.from_dict(extra["catalog"]).num_items == 20 and extra["metrics"]["test"] == res["test"]
    again = evaluate(model, split.test, (2, 20), torch.device("cpu"), seed=1)
    assert again["recall@2"] == pytest.approx(res["test"]["recall@2"])


def test_t2diff_arch_runs_one_epoch():
    seqs, cat = _cyclic(n_users=40)
    res = train(OfflineConfig(dataset="synthetic", arch="t2diff", max_epochs=1, batch_size=64, device="cpu"),
                split=protocol_p(seqs, seed=0), catalog=cat)
    assert np.isfinite(res["history"][0]["train_loss"]) and 0 <= res["test"]["recall@20"] <= 1


def test_patience_none_trains_the_full_budget_and_patience_stops_early():
    seqs, cat = _cyclic(n_users=40)
    split = protocol_p(seqs, seed=0)
    # lr 0: the weights never move, so validation never improves after epoch 0
    base = dict(dataset="synthetic", arch="gru4rec", max_epochs=4, batch_size=64, lr=0.0, device="cpu")
    stopped = train(OfflineConfig(**base, patience=1), split=split, catalog=cat)
    full = train(OfflineConfig(**base, patience=None), split=split, catalog=cat)
    assert stopped["epochs_run"] == 2 and full["epochs_run"] == 4
    assert stopped["best_epoch"] == full["best_epoch"] == 0 and full["test"] == stopped["test"]
    with pytest.raises(ValueError, match="patience must be >= 1"):
        OfflineConfig(patience=0).resolved()


@pytest.fixture
def tiny_ml1m(tmp_path, monkeypatch):
    """A fake ML-1M in the shared-data layout (ratings >= 4 file + movies.dat)."""
    root = tmp_path / "data" / "ml-1m"
    root.mkdir(parents=True)
    seqs, _ = _cyclic(n_users=60, n_items=15, seed=1)
    lines = [f"{u}::{int(i)}::5::{978300000 + k}" for u, (items, _) in seqs.items() for k, i in enumerate(items)]
    with gzip.open(root / "ratings_ge4.dat.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    (root / "movies.dat").write_text("".join(f"{i}::Movie {i} (2000)::{'Comedy|Drama' if i % 2 else 'Action'}\n"
                                             for i in range(1, 16)), encoding="latin-1")
    monkeypatch.setenv("T2DIFF_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_cli_train_eval_and_bench_on_tiny_dataset(tiny_ml1m, capsys):
    ck = tiny_ml1m / "ck.pt"
    assert trainer_cli.main(["train", "offline", "--dataset", "ml-1m", "--arch", "gru4rec", "--max-epochs", "2",
                             "--device", "cpu", "--out", str(ck)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert ck.exists() and first["test"]["n"] > 0
    assert trainer_cli.main(["eval", "--checkpoint", str(ck), "--protocol", "P", "--device", "cpu"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["recall@20"] == pytest.approx(first["test"]["recall@20"])  # same split, same weights
    assert trainer_cli.main(["train", "offline", "--dataset", "ml-1m", "--arch", "gru4rec", "--max-epochs", "3",
                             "--patience", "0", "--lr", "0", "--device", "cpu", "--out", str(ck)]) == 0
    capsys.readouterr()
    assert len(load_checkpoint(ck)[1]["metrics"]["history"]) == 3  # 0 = no early stop: the whole budget ran
    assert trainer_cli.main(["eval", "--checkpoint", str(tiny_ml1m / "missing.pt")]) == 2
    assert trainer_cli.main(["train", "offline", "--dataset", "nope", "--device", "cpu"]) == 2
    assert trainer_cli.main(["train", "offline", "--preset", "slow", "--device", "cpu"]) == 2
    assert "error:" in capsys.readouterr().err
    out = tiny_ml1m / "bench"
    assert trainer_cli.main(["bench", "offline", "--suites", "smoke", "--seeds", "0", "1", "--jobs", "1",
                             "--device", "cpu", "--out", str(out)]) == 0
    md = (out / "offline.md").read_text()
    assert "| sasrec | 2 |" in md and "| gru4rec | 2 |" in md and (out / "val_curves.png").stat().st_size > 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    none = tiny_ml1m / "bench_none"  # --only-dataset filters the suite's runs: smoke has no KuaiRand run
    assert trainer_cli.main(["bench", "offline", "--suites", "smoke", "--only-dataset", "kuairand", "--jobs", "1",
                             "--device", "cpu", "--out", str(none), "--no-table1"]) == 0
    assert not (none / "results.jsonl").exists() or not (none / "results.jsonl").read_text().strip()
