import pytest
import torch

from t2diff.model import ModelConfig, build_model
from t2diff.model.attention import MixedAttention

from .conftest import N_ITEMS, make_batch, make_model, make_tags


@pytest.mark.parametrize("arch", ["t2diff", "t2diff_no_dp", "mixed_attention"])
def test_interface_shapes(arch):
    m = make_model(arch)
    b = make_batch()
    loss, metrics = m(b)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) for v in metrics.values())
    assert (metrics["kl"] > 0) == (arch != "mixed_attention")
    m.eval()
    e_u = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=torch.Generator().manual_seed(0))
    assert e_u.shape == (6, m.cfg.user_dim)
    e_i = m.encode_items()
    assert e_i.shape == (N_ITEMS + 1, m.cfg.user_dim) and e_i[0].abs().sum() == 0
    torch.testing.assert_close(m.encode_items(torch.tensor([3, 7])), e_i[[3, 7]])


TIED = {"tied_input": True}  # the offline experiment: history as the item tower's output


@pytest.mark.parametrize("arch,kw", [("t2diff", {}), ("mixed_attention", {}), ("t2diff", TIED)])
def test_padding_never_influences_the_output(arch, kw):
    m = make_model(arch, **kw).eval()
    b = make_batch()
    hist, ts, now = b["hist"], b["hist_ts"], b["target_ts"]
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ref = m.encode_users(hist, ts, now, generator=g())
    # 1) junk in the padding row of the ID table
    with torch.no_grad():
        m.items.id_weight[0] = 7.0
    out1 = m.encode_users(hist, ts, now, generator=g())
    # 2) junk timestamps under the mask
    ts2 = ts.masked_fill(hist == 0, 123_456_789)
    out2 = m.encode_users(hist, ts2, now, generator=g())
    # 3) a longer run of left padding (L = 70 instead of 50)
    out3 = m.encode_users(torch.nn.functional.pad(hist, (20, 0)), torch.nn.functional.pad(ts, (20, 0)), now,
                          generator=g())
    for out in (out1, out2, out3):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # sanity: the check can fail -- changing a real item changes the output
    hist4 = hist.clone()
    hist4[:, -1] = hist4[:, -1] % N_ITEMS + 1
    assert not torch.allclose(m.encode_users(hist4, ts, now, generator=g()), ref)


def test_empty_history_is_finite():
    m = make_model("t2diff").eval()
    e = m.encode_users(torch.zeros(2, 50, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(e).all()


def test_bad_input_rejected():
    m = make_model("t2diff").eval()
    with pytest.raises(ValueError, match="out of range"):
        m.encode_users(torch.full((1, 50), N_ITEMS + 5))
    with pytest.raises(ValueError):
        build_model(ModelConfig(arch="t2diff", num_items=N_ITEMS, num_tags=6, max_tags=3), make_tags(N_ITEMS - 1))
    with pytest.raises(ValueError):
        ModelConfig(arch="bert4rec")


def test_add_items_grows_tables_and_keeps_old_vectors():
    m = make_model("t2diff").eval()
    b = make_batch()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    old_items = m.encode_items()
    old_users = m.encode_users(b["hist"], b["hist_ts"], generator=g())
    new = m.add_items(torch.tensor([[1, 2, 0], [3, 0, 0]]))
    assert new.tolist() == [N_ITEMS + 1, N_ITEMS + 2]
    assert m.cfg.num_items == N_ITEMS + 2 and m.item_tags.shape == (N_ITEMS + 3, 3)
    assert m.items.id_weight.shape[0] == N_ITEMS + 3
    e = m.encode_items()
    assert e.shape[0] == N_ITEMS + 3
    torch.testing.assert_close(e[: N_ITEMS + 1], old_items, rtol=0, atol=0)
    torch.testing.assert_close(m.encode_users(b["hist"], b["hist_ts"], generator=g()), old_users, rtol=0, atol=0)
    # the new items are usable in histories and as targets
    b["hist"][:, -1] = N_ITEMS + 1
    b["target"][:] = N_ITEMS + 2
    loss, _ = m.train()(b)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        m.add_items(torch.tensor([[99, 0, 0]]))  # unknown tag id


def test_tiny_model_overfits_a_deterministic_sequence():
    """Cyclic catalogue 1 -> 2 -> ... -> N -> 1: every next item is determined; Recall@1 must reach 1.0
    through the inference path (reverse diffusion included)."""
    N = 12
    torch.manual_seed(0)
    cfg = ModelConfig(arch="t2diff", num_items=N, num_tags=2, max_tags=1, id_dim=6, tag_dim=2, user_dim=16,
                      seq_len=16, session_len=4, ffn_dim=32, emb_init_std=0.1, lambda_kl=0.1)
    tags = torch.zeros(N + 1, 1, dtype=torch.long)
    tags[1:, 0] = torch.arange(N) % 2 + 1
    m = build_model(cfg, tags)
    starts = torch.arange(N)
    hist = (starts[:, None] + torch.arange(16)[None, :]) % N + 1  # (N, 16)
    target = (starts + 16) % N + 1
    hist[: N // 2, :5] = 0  # some padded rows too
    batch = {"hist": hist, "hist_ts": None, "target": target, "target_ts": None}
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss, metrics = m(batch)
        loss.backward()
        opt.step()
    m.eval()
    scores = m.encode_users(hist, generator=torch.Generator().manual_seed(0)) @ m.encode_items()[1:].T
    recall1 = (scores.argmax(1) + 1 == target).float().mean().item()
    assert recall1 == 1.0, (recall1, metrics)


def test_item_lookup_through_the_catalogue_table_equals_the_per_position_computation():
    """encode_users gathers raw item vectors from a whole-catalogue table when a batch has more positions than
    the catalogue has rows (towers.per_row via input_vectors(table=True)); both branches must give forward()'s values exactly."""
    m = make_model("t2diff").eval()
    with torch.no_grad():
        m.items.id_weight[0] = 7.0  # junk in the padding row must still map to zeros
        m.items.id_weight[5] *= 100.0  # a row that emb_max_norm clips
    big = make_batch(B=6)["hist"]  # 300 positions > 31 catalogue rows: the table branch
    small = big[:1, -20:]  # 20 positions: computed per position
    assert big.numel() > N_ITEMS + 1 >= small.numel()
    for idx in (big, small, torch.zeros(0, 50, dtype=torch.long)):
        torch.testing.assert_close(m.input_vectors(idx, table=True), m.items(idx), rtol=0, atol=0)
    assert m.input_vectors(big, table=True)[big == 0].abs().sum() == 0


def test_eq22_user_ffn_is_in_the_path_and_keeps_padding_out():
    """ModelConfig.user_ffn: e_u = FFN(concat(h_l, h_s)) as the paper's Eq. 22 writes it (the official code uses the
    plain concat). It must train, keep the interface, ignore padding, and actually shape e_u."""
    m = make_model("t2diff", user_ffn=True)
    b = make_batch()
    loss, _ = m(b)
    loss.backward()
    m.eval()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    ref = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=g())
    assert ref.shape == (6, m.cfg.user_dim) and torch.isfinite(ref).all()
    pad = lambda t: torch.nn.functional.pad(t, (15, 0))  # noqa: E731
    torch.testing.assert_close(m.encode_users(pad(b["hist"]), pad(b["hist_ts"]), b["target_ts"], generator=g()), ref,
                               rtol=0, atol=0)
    ffn = [mod for mod in m.modules() if isinstance(mod, MixedAttention)][0].ffn
    assert sum(p.numel() for p in ffn.parameters()) > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ffn.parameters() if p.dim() > 1)
    with torch.no_grad():  # the FFN's last layer decides e_u: zero it and e_u becomes its bias alone
        last = [mod for mod in ffn.modules() if isinstance(mod, torch.nn.Linear)][-1]
        last.weight.zero_()
    out = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=g())
    torch.testing.assert_close(out, last.bias.expand_as(out))


def test_tied_variant_reads_the_candidate_side_vectors():
    m = make_model("t2diff", **TIED)
    U = m.cfg.user_dim
    assert m.cfg.tied_input and m.input_dim == U and m.user_tower.blocks[0].q.weight.shape == (U, U) != (m.cfg.edim, m.cfg.edim)
    b = make_batch()
    loss, metrics = m(b)
    loss.backward()
    assert torch.isfinite(loss) and metrics["kl"] > 0
    assert m.item_tower.mlp is not None and all(p.grad is not None for p in m.item_tower.parameters())
    m.eval()
    e_u = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=torch.Generator().manual_seed(0))
    assert e_u.shape == (6, U)
    # the tower sees user_dim-wide vectors: changing only the item tower changes the user vector
    with torch.no_grad():
        for p in m.item_tower.parameters():
            p.mul_(1.5)
    e2 = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(e2, e_u)
    untied = make_model("t2diff").eval()
    e3 = untied.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in untied.item_tower.parameters():
            p.mul_(1.5)
    torch.testing.assert_close(untied.encode_users(b["hist"], b["hist_ts"], b["target_ts"],
                                                   generator=torch.Generator().manual_seed(0)), e3)
    with pytest.raises(ValueError, match="eager"):
        m.set_compiled_tower(lambda *a: None)


@pytest.mark.parametrize("tied", [False, True])
def test_input_vectors_table_path_gives_the_same_vectors(tied):
    """Inference gathers from a per-row table when the batch has more entries than the catalogue; same values."""
    m = make_model("t2diff", tied_input=tied).eval()
    hist = make_batch()["hist"]
    assert hist.numel() > m.items.num_items + 1  # the table branch is the one taken
    direct = m.input_vectors(hist)
    assert direct.shape == (*hist.shape, m.input_dim) and torch.all(direct[hist == 0] == 0)
    torch.testing.assert_close(m.input_vectors(hist, table=True), direct)


TOKEN = {"extra": {"next_token": "last"}}  # mixed attention with x_n as the extra session token


def test_next_token_last_gives_mixed_attention_x_n_as_the_extra_session_token():
    m = make_model("mixed_attention", **TOKEN).eval()
    plain = make_model("mixed_attention").eval()
    assert m.diffusion is None and m.user_tower.use_next and not plain.user_tower.use_next
    plain.load_state_dict(m.state_dict())  # the token adds no parameter: same weights, one token more
    b = make_batch()
    hist, ts = m._canon(b["hist"], b["hist_ts"])
    mask = hist > 0
    x = m.input_vectors(hist)
    out = m.encode_users(b["hist"], b["hist_ts"], b["target_ts"])
    # by hand: the user head with the session's last vector as x̂_{n+1}
    torch.testing.assert_close(out, m._user(x, mask, x[:, -1], ts, b["target_ts"]))
    assert not torch.allclose(out, plain.encode_users(b["hist"], b["hist_ts"], b["target_ts"]))
    # the token is x_n, not another history vector
    assert not torch.allclose(out, m._user(x, mask, x[:, -2], ts, b["target_ts"]))
    # training: the token without the diffusion, so no KL term
    m.train()
    loss, metrics = m(b)
    assert metrics["kl"] == 0 and torch.isfinite(loss)


def test_next_token_is_checked_and_survives_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="next_token must be one of"):
        make_model("mixed_attention", extra={"next_token": "first"})
    with pytest.raises(ValueError, match="mixed_attention ablation"):
        make_model("t2diff", **TOKEN)
    from t2diff.model import load_checkpoint, save_checkpoint

    m = make_model("mixed_attention", **TOKEN).eval()
    save_checkpoint(tmp_path / "m.pt", m)
    back, _ = load_checkpoint(tmp_path / "m.pt")
    assert back.next_token == "last" and back.user_tower.use_next
    b = make_batch()
    torch.testing.assert_close(back.encode_users(b["hist"], b["hist_ts"], b["target_ts"]),
                               m.encode_users(b["hist"], b["hist_ts"], b["target_ts"]))


def test_next_token_noise_is_x_n_plus_a_unit_gaussian_and_learned_is_one_trained_vector(tmp_path):
    b = make_batch()
    noisy = make_model("mixed_attention", extra={"next_token": "noise"}).eval()
    hist, ts = noisy._canon(b["hist"], b["hist_ts"])
    x, mask = noisy.input_vectors(hist), hist > 0
    gen = torch.Generator().manual_seed(5)
    out = noisy.encode_users(b["hist"], b["hist_ts"], b["target_ts"], generator=gen)
    eps = torch.randn(x[:, -1].shape, generator=torch.Generator().manual_seed(5))  # the same draw, by hand
    torch.testing.assert_close(out, noisy._user(x, mask, x[:, -1] + eps, ts, b["target_ts"]))
    assert not torch.allclose(out, noisy._user(x, mask, x[:, -1], ts, b["target_ts"]))  # not the plain x_n token
    assert noisy.token_vector is None

    learned = make_model("mixed_attention", extra={"next_token": "learned"})
    v = learned.token_vector
    assert v.shape == (learned.cfg.edim,) and v.requires_grad
    assert v.detach().norm() > 0.5  # unit scale per dimension, like the untrained official U-Net's ẑ0
    hist, ts = learned._canon(b["hist"], b["hist_ts"])
    x, mask = learned.input_vectors(hist), hist > 0
    learned.eval()
    out = learned.encode_users(b["hist"], b["hist_ts"], b["target_ts"])  # every user gets the same token
    torch.testing.assert_close(out, learned._user(x, mask, v.detach().expand(len(hist), -1), ts, b["target_ts"]))
    learned.train()
    loss, metrics = learned(b)
    loss.backward()
    assert metrics["kl"] == 0 and v.grad is not None and v.grad.abs().sum() > 0  # the tower loss trains it
    from t2diff.model import load_checkpoint, save_checkpoint

    learned.eval()
    save_checkpoint(tmp_path / "l.pt", learned)
    back, _ = load_checkpoint(tmp_path / "l.pt")
    torch.testing.assert_close(back.token_vector, v)
    torch.testing.assert_close(back.encode_users(b["hist"], b["hist_ts"], b["target_ts"]), out)
