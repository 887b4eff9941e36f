import pytest
import torch

from t2diff.model import load_checkpoint, save_checkpoint

from .conftest import N_ITEMS, make_batch, make_model


@pytest.mark.parametrize("arch,kw", [("t2diff", {}), ("mixed_attention", {}), ("diffurec", {}),
                                     ("t2diff", {"tied_input": True}), ("sasrec", {"tied_input": True})])
def test_save_load_gives_identical_user_vectors(tmp_path, arch, kw):
    m = make_model(arch, time_lag=True, posterior="ddpm", schedule="linear", **kw).eval()
    m.add_items(torch.tensor([[1, 0, 0]]))  # grown after build: the file alone must rebuild it
    b = make_batch()
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    ref = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=g())
    p = save_checkpoint(tmp_path / "m.pt", m, catalog={"name": "x"}, step=3)
    m2, extra = load_checkpoint(p)
    assert extra == {"catalog": {"name": "x"}, "step": 3}
    assert m2.cfg.num_items == N_ITEMS + 1 and m2.cfg.posterior == "ddpm" and not m2.training
    torch.testing.assert_close(m2.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=g()), ref,
                               rtol=0, atol=0)
    torch.testing.assert_close(m2.encode_items(), m.encode_items(), rtol=0, atol=0)
    torch.testing.assert_close(m2.item_tags, m.item_tags)


def test_incompatible_checkpoint_gives_a_clear_error(tmp_path):
    m = make_model("t2diff")
    p = save_checkpoint(tmp_path / "m.pt", m)
    blob = torch.load(p, weights_only=False)
    blob["state_dict"]["diffusion.unet.down.0.norm.weight"] = torch.ones(4, 1)  # old (C, 1) layout
    torch.save(blob, p)
    with pytest.raises(ValueError, match="older model version"):
        load_checkpoint(p)


def test_checkpoint_written_before_tied_input_existed_loads_tied(tmp_path):
    """Twelfth-session checkpoints said ``extra.t2diff_tied`` and had no ``tied_input`` key."""
    m = make_model("t2diff", tied_input=True).eval()
    p = save_checkpoint(tmp_path / "m.pt", m)
    blob = torch.load(p, weights_only=False)
    del blob["config"]["tied_input"]
    blob["config"]["extra"] = {"t2diff_tied": True}
    torch.save(blob, p)
    m2, _ = load_checkpoint(p)
    assert m2.cfg.tied_input and m2.cfg.extra == {}
    b = make_batch()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(m2.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=g()),
                               m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=g()), rtol=0, atol=0)
