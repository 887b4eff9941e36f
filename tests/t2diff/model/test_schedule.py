import math

import pytest
import torch

from t2diff.model.schedule import NoiseSchedule, make_betas


def test_exp_schedule_matches_official_endpoints():
    b = make_betas(50, "exp", 1e-2, 4.5)
    assert b[0].item() == pytest.approx(1e-2 * math.exp(4.5 / 50))
    assert b[-1].item() == pytest.approx(0.9, rel=1e-3)
    assert bool((b[1:] > b[:-1]).all())


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_ablation_schedules_share_endpoints_and_differ_inside(kind):
    e, o = make_betas(50, "exp"), make_betas(50, kind)
    assert o[0].item() == pytest.approx(e[0].item()) and o[-1].item() == pytest.approx(e[-1].item())
    assert not torch.allclose(o[10:40], e[10:40])


def test_bad_schedule_rejected():
    with pytest.raises(ValueError):
        make_betas(50, "cosine")
    with pytest.raises(ValueError):
        make_betas(50, "exp", a=0.5, b=4.5)  # betas would exceed 1
    with pytest.raises(ValueError):
        NoiseSchedule(10, posterior="ddim")


def test_closed_form_equals_iterating_eq1():
    """q(x_t|x_0) closed form vs x_s = sqrt(1-β_s) x_{s-1} + sqrt(β_s) ε_s iterated: same mean coefficient,
    same noise variance, and Monte-Carlo samples agree in mean and std."""
    T = 12
    sch = NoiseSchedule(T, "exp", a=0.02, b=2.0)
    betas = sch.betas.double()
    x0 = torch.tensor([1.5, -0.7, 0.0, 2.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    S = 200_000
    x = x0.expand(S, 4).clone()
    coef, var = 1.0, 0.0
    for s in range(T):
        x = (1 - betas[s]).sqrt() * x + betas[s].sqrt() * torch.randn(S, 4, generator=g, dtype=torch.float64)
        coef, var = coef * math.sqrt(1 - betas[s]), (1 - betas[s]) * var + betas[s]
        t = torch.tensor([s])
        # zero noise isolates the x0 coefficient; unit "noise" on zero x0 isolates the noise scale
        closed_mean = sch.add_noise(x0.float()[None], torch.zeros(1, 4), t)
        closed_std = sch.add_noise(torch.zeros(1, 4), torch.ones(1, 4), t)
        torch.testing.assert_close(closed_mean[0].double(), coef * x0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(closed_std[0, 0].double(), torch.tensor(float(var) ** 0.5, dtype=torch.float64),
                                   rtol=1e-5, atol=1e-6)
    t = torch.full((S,), T - 1)
    closed = sch.add_noise(x0.float().expand(S, 4), torch.randn(S, 4, generator=g), t).double()
    torch.testing.assert_close(x.mean(0), closed.mean(0), atol=1e-2, rtol=0)
    torch.testing.assert_close(x.std(0), closed.std(0), atol=1e-2, rtol=0)


def _hand_tables(betas):
    """Textbook quantities written out per step for a tiny T."""
    ab, acc = [], 1.0
    for b in betas:
        acc *= 1 - b
        ab.append(acc)
    rows = []
    for t in range(len(betas)):
        ab_t, ab_p = ab[t], (ab[t - 1] if t > 0 else 1.0)
        var = (1 - ab_p) / (1 - ab_t) * betas[t]
        rows.append(dict(c0=math.sqrt(ab_p) * betas[t] / (1 - ab_t),
                         ct_ddpm=math.sqrt(1 - betas[t]) * (1 - ab_p) / (1 - ab_t),
                         ct_off=math.sqrt(ab_t) * (1 - ab_p) / (1 - ab_t), var=var))
    return rows


@pytest.mark.parametrize("posterior", ["official", "ddpm"])
def test_posterior_mean_and_variance_by_hand(posterior):
    T = 3
    sch = NoiseSchedule(T, "exp", a=0.1, b=1.5, posterior=posterior)
    betas = [0.1 * math.exp(1.5 * s / 3) for s in (1, 2, 3)]
    hand = _hand_tables(betas)
    tab = sch.step_coefficients()
    assert tab["timesteps"].tolist() == [2, 1, 0]
    for i, t in enumerate([2, 1, 0]):
        h = hand[t]
        assert tab["coef_x0"][i].item() == pytest.approx(h["c0"], rel=1e-5)
        assert tab["variance"][i].item() == pytest.approx(h["var"], rel=1e-5, abs=1e-9)
        ct = h["ct_off"] if posterior == "official" else h["ct_ddpm"]
        assert tab["coef_xt"][i].item() == pytest.approx(ct, rel=1e-5, abs=1e-9)
        sigma = h["var"] if posterior == "official" else math.sqrt(h["var"])
        assert tab["sigma"][i].item() == pytest.approx(sigma, rel=1e-5, abs=1e-9)
    # step() applies exactly that update
    x0, xt, eps = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25]), torch.tensor([0.3, -0.1])
    h = hand[2]
    ct = h["ct_off"] if posterior == "official" else h["ct_ddpm"]
    sig = h["var"] if posterior == "official" else math.sqrt(h["var"])
    torch.testing.assert_close(sch.step(x0, 0, xt, eps), h["c0"] * x0 + ct * xt + sig * eps)


def test_last_step_returns_x0_and_strided_steps():
    sch = NoiseSchedule(50)
    ts = sch.set_timesteps(10)
    assert ts[0].item() == 49 and ts[-1].item() == 0 and len(set(ts.tolist())) == 10
    assert bool((ts[1:] < ts[:-1]).all())
    x0, xt = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(sch.step(x0, 9, xt, torch.randn(3, 4)), x0)
    # full schedule: the respaced beta equals the true beta, so the x0 weight matches the DDPM formula
    tab = sch.step_coefficients(50)
    ab = sch.alphas_cumprod.double()
    t = 30
    i = 49 - t
    expect = ab[t - 1].sqrt() * sch.betas.double()[t] / (1 - ab[t])
    assert tab["coef_x0"][i].item() == pytest.approx(expect.item(), rel=1e-4)
    with pytest.raises(ValueError):
        sch.step_coefficients(51)


def test_trunc_lin_is_diffurecs_schedule():
    # DiffuRec's get_named_beta_schedule("trunc_lin"): c = 1000/T, linspace(c*1e-4 + 0.01, c*0.02 + 0.01, T),
    # the end falling back to c*1e-3 + 0.01 when it would pass 1
    b = make_betas(32, "trunc_lin")
    assert b[0].item() == pytest.approx(0.013125) and b[-1].item() == pytest.approx(0.635)
    assert torch.allclose(b.diff(), torch.full((31,), (0.635 - 0.013125) / 31, dtype=torch.float64))
    b10 = make_betas(10, "trunc_lin")  # c = 100: 2.01 > 1, so the end is 0.11
    assert b10[0].item() == pytest.approx(0.02) and b10[-1].item() == pytest.approx(0.11)
