import pytest
import torch

from t2diff.model import build_model
from t2diff.model.baselines import build_baseline
from t2diff.model.config import ModelConfig

TAGS = torch.tensor([[0, 0], [1, 2], [2, 0], [3, 0], [1, 0], [0, 0], [2, 3]])  # 6 items, row 0 = padding


@pytest.mark.parametrize("arch,tied", [("sasrec", False), ("gru4rec", False), ("sasrec", True), ("gru4rec", True)])
def test_interface_shapes_padding_and_growth(arch, tied):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, num_items=6, num_tags=3, max_tags=2, seq_len=8, session_len=2, tied_input=tied)
    m = build_baseline(cfg, TAGS)
    # tied: the history enters as the item tower's output, so the tower's input is user_dim wide
    width = m.blocks[0].qkv.in_features if arch == "sasrec" else m.gru.input_size
    assert width == (cfg.user_dim if tied else cfg.edim) and cfg.user_dim != cfg.edim
    hist = torch.tensor([[0, 0, 0, 0, 0, 1, 2, 3], [4, 5, 6, 1, 2, 3, 4, 5]])
    batch = {"hist": hist, "hist_ts": torch.zeros_like(hist), "target": torch.tensor([4, 6]),
             "target_ts": torch.zeros(2, dtype=torch.long)}
    loss, metrics = m(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and metrics["loss"] == pytest.approx(float(loss.detach()))
    loss.backward()
    assert m.encode_items().shape == (7, cfg.user_dim)
    assert torch.all(m.encode_items()[0] == 0)
    e_u = m.encode_users(hist)
    assert e_u.shape == (2, cfg.user_dim) and torch.isfinite(e_u).all()
    # left padding must not change the user vector: a shorter window of the same recent items
    assert torch.allclose(m.encode_users(hist[:1]), m.encode_users(hist[:1, -5:]), atol=1e-6)
    # the most recent item matters
    other = hist.clone()
    other[0, -1] = 6
    assert not torch.allclose(m.encode_users(hist[:1]), m.encode_users(other[:1]))
    new = m.add_items(torch.tensor([[3, 1], [0, 0]]))
    assert new.tolist() == [7, 8] and m.encode_items().shape == (9, cfg.user_dim)
    assert m.encode_users(torch.tensor([[0, 7, 8]])).shape == (1, cfg.user_dim)


def test_wrong_tag_rows_rejected():
    cfg = ModelConfig(arch="sasrec", num_items=5, num_tags=3, max_tags=2)
    with pytest.raises(ValueError):
        build_baseline(cfg, TAGS)
    with pytest.raises(ValueError):
        build_baseline(ModelConfig(arch="t2diff", num_items=6, num_tags=3, max_tags=2), TAGS)


def test_order_free_sasrec_ignores_order_and_padding_but_not_content():
    """extra sasrec_order=False (the official in-house baseline's design): a bag of items."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="sasrec", num_items=6, num_tags=3, max_tags=2, seq_len=8, session_len=2,
                      extra={"sasrec_order": False})
    m = build_baseline(cfg, TAGS).eval()
    hist = torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5]])
    e = m.encode_users(hist)
    assert torch.allclose(e, m.encode_users(torch.tensor([[0, 0, 0, 5, 3, 1, 4, 2]])), atol=1e-6)  # order
    assert torch.allclose(e, m.encode_users(hist[:, -5:]), atol=1e-6)  # padding
    assert not torch.allclose(e, m.encode_users(torch.tensor([[0, 0, 0, 1, 2, 3, 4, 6]])))  # content
    assert torch.isfinite(m.encode_users(torch.tensor([[0, 0, 0, 0, 0, 0, 0, 4]]))).all()  # one item: no NaN
    # the default SASRec does see the order
    ordered = build_baseline(ModelConfig(arch="sasrec", num_items=6, num_tags=3, max_tags=2, seq_len=8,
                                         session_len=2), TAGS).eval()
    assert not torch.allclose(ordered.encode_users(hist), ordered.encode_users(torch.tensor([[0, 0, 0, 5, 3, 1, 4, 2]])))


def test_paper_sasrec_reproduces_the_official_design():
    """extra sasrec_design="paper": raw edim-wide item vectors, tanh user vector, order-free on a full window,
    and the official key mask (first len positions) on a left-padded one."""
    from t2diff.model.baselines import PaperSASRec

    torch.manual_seed(0)
    cfg = ModelConfig(arch="sasrec", num_items=6, num_tags=3, max_tags=2, seq_len=8, session_len=2,
                      extra={"sasrec_design": "paper"})
    m = build_baseline(cfg, TAGS).eval()
    assert isinstance(m, PaperSASRec) and isinstance(build_model(cfg, TAGS), PaperSASRec)  # both entry points
    items = m.encode_items()
    assert items.shape == (7, cfg.edim) and torch.equal(items, m.items(torch.arange(7)))  # no item tower
    full = torch.tensor([[1, 2, 3, 4, 5, 6, 1, 2]])
    e = m.encode_users(full)
    assert e.shape == (1, cfg.edim) and e.abs().max() < 1  # tanh
    assert torch.allclose(e, m.encode_users(full.flip(1)), atol=1e-6)  # full window: a bag
    short = torch.tensor([[0, 0, 0, 0, 0, 1, 2, 3]])  # 3 real items: keys are positions 0-2, all padding
    x = m.items(short)
    allowed = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    allowed[..., :3] = True
    allowed &= ~torch.eye(8, dtype=torch.bool)
    allowed |= ~allowed.any(-1, keepdim=True)
    ref = torch.tanh(m.blocks[0](x, allowed).mean(1) @ m.w)
    torch.testing.assert_close(m.encode_users(short), ref)
    loss, _ = m({"hist": short, "hist_ts": torch.zeros_like(short), "target": torch.tensor([4]),
                 "target_ts": torch.zeros(1, dtype=torch.long)})
    loss.backward()
    assert torch.isfinite(loss) and m.w.grad is not None


def _diffurec(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="diffurec", num_items=6, num_tags=3, max_tags=2, seq_len=8, session_len=2, **kw)
    return build_model(cfg, TAGS)


def test_diffurec_trains_through_both_item_paths_and_keeps_padding_out():
    from t2diff.model.baselines import DiffuRec

    m = _diffurec()
    assert isinstance(m, DiffuRec) and m.steps == 32 and m.schedule.kind == "trunc_lin"
    hist = torch.tensor([[0, 0, 0, 0, 0, 1, 2, 3], [4, 5, 6, 1, 2, 3, 4, 5]])
    loss, metrics = m({"hist": hist, "target": torch.tensor([4, 6])})
    assert torch.isfinite(loss) and metrics["ce"] == pytest.approx(loss.item())
    loss.backward()
    g = m.items.id_weight.grad
    # history items, the diffused target (4, 6) and every candidate (the softmax) all reach the ID table
    assert g is not None and (g[1:].abs().sum(1) > 0).all() and m.time_embed[0].weight.grad is not None
    m.eval()
    gen = lambda s=0: torch.Generator().manual_seed(s)  # noqa: E731
    e = m.encode_users(hist[:1], generator=gen())
    assert e.shape == (1, m.cfg.user_dim) and torch.isfinite(e).all()
    torch.testing.assert_close(m.encode_users(hist[:1], generator=gen()), e, rtol=0, atol=0)  # reproducible
    torch.testing.assert_close(m.encode_users(hist[:1, -5:], generator=gen()), e)  # left padding is invisible
    assert not torch.allclose(m.encode_users(hist[:1], generator=gen(1)), e)  # sampled from noise
    other = hist[:1].clone()
    other[0, -1] = 6
    assert not torch.allclose(m.encode_users(other, generator=gen()), e)  # the history matters
    assert m.encode_users(hist, generator=gen(), num_steps=4).shape == (2, m.cfg.user_dim)


def test_diffurec_one_step_returns_the_denoisers_x0_from_pure_noise():
    """With one reverse step (t = 0) the user vector is f(history, x_T, 0), x_T the generator's first draw."""
    m = _diffurec(extra={"diffurec_steps": 5}).eval()
    hist = torch.tensor([[0, 0, 0, 4, 1, 2, 3, 5]])
    out = m.encode_users(hist, generator=torch.Generator().manual_seed(3), num_steps=1)
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(1, m.cfg.user_dim, generator=g)
    rep, allowed = m._history(hist)
    ref = m._denoise(rep, allowed, x_T, torch.zeros(1, dtype=torch.long), g)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_diffurec_overfits_a_deterministic_sequence():
    """Cyclic catalogue 1 -> 2 -> ... -> N -> 1: Recall@1 = 1.0 through the reverse process."""
    N = 12
    torch.manual_seed(0)
    cfg = ModelConfig(arch="diffurec", num_items=N, num_tags=2, max_tags=1, id_dim=6, tag_dim=2, user_dim=16,
                      seq_len=16, session_len=4, ffn_dim=32, emb_init_std=0.1)
    tags = torch.zeros(N + 1, 1, dtype=torch.long)
    tags[1:, 0] = torch.arange(N) % 2 + 1
    m = build_model(cfg, tags)
    starts = torch.arange(N)
    hist = (starts[:, None] + torch.arange(16)[None, :]) % N + 1
    target = (starts + 16) % N + 1
    hist[: N // 2, :5] = 0
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss, _ = m({"hist": hist, "target": target})
        loss.backward()
        opt.step()
    m.eval()
    scores = m.encode_users(hist, generator=torch.Generator().manual_seed(0)) @ m.encode_items()[1:].T
    assert (scores.argmax(1) + 1 == target).float().mean().item() == 1.0


def test_diffurec_refuses_more_reverse_steps_than_it_trained_with():
    m = _diffurec(extra={"diffurec_steps": 5}).eval()
    hist = torch.tensor([[0, 1, 2, 3]])
    assert m.encode_users(hist, num_steps=5).shape == (1, m.cfg.user_dim)
    with pytest.raises(ValueError, match="num_steps must be in 1..5"):  # as T2Diff's schedule does; no silent cap
        m.encode_users(hist, num_steps=6)


def test_paper_sasrec_refuses_tied_input():
    cfg = ModelConfig(arch="sasrec", num_items=6, num_tags=3, max_tags=2, seq_len=8, session_len=2, tied_input=True,
                      extra={"sasrec_design": "paper"})
    with pytest.raises(ValueError, match="tied_input does not apply"):
        build_baseline(cfg, TAGS)


def test_diffurec_without_the_diffusion_input_is_deterministic():
    """λ = 0 (the suite's ablation): x_t never enters the denoiser, so the noise cannot change the user vector."""
    m = _diffurec(extra={"diffurec_lambda": 0.0}).eval()
    hist = torch.tensor([[0, 0, 0, 4, 1, 2, 3, 5]])
    a = m.encode_users(hist, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(m.encode_users(hist, generator=torch.Generator().manual_seed(1)), a)
    assert not torch.allclose(_diffurec().eval().encode_users(hist, generator=torch.Generator().manual_seed(1)),
                              _diffurec().eval().encode_users(hist, generator=torch.Generator().manual_seed(0)))
