import math

import numpy as np
import pytest
import torch

from ddpm.diffusion.schedule import NoiseSchedule, cosine, linear


def test_linear_matches_its_closed_form():
    sch = linear(1000, 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(sch.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(sch.alpha_bar.numpy(), ab, rtol=1e-6)
    assert sch.alpha_bar[-1].item() == pytest.approx(4.035e-5, rel=1e-3)  # well-known value
    np.testing.assert_allclose(sch.alpha_bar_prev.numpy()[1:], ab[:-1], rtol=1e-6)
    assert sch.alpha_bar_prev[0].item() == 1.0


def test_posterior_terms_match_their_formulas():
    sch = linear(1000)
    b = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - b)
    abp = np.concatenate([[1.0], ab[:-1]])
    np.testing.assert_allclose(sch.posterior_variance.numpy(), b * (1 - abp) / (1 - ab), rtol=1e-5)
    np.testing.assert_allclose(
        sch.posterior_mean_coef1.numpy(), np.sqrt(abp) * b / (1 - ab), rtol=1e-5
    )
    np.testing.assert_allclose(
        sch.posterior_mean_coef2.numpy(), np.sqrt(1 - b) * (1 - abp) / (1 - ab), rtol=1e-5
    )


def test_cosine_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    sch = cosine(T, s=s, max_beta=0.999)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 1, 100, 500, 900, 990]:
        assert sch.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert sch.betas.max().item() == pytest.approx(0.999)  # the last beta is clipped
    assert (sch.betas[:-1] < 0.999).all()


def test_overrides_change_the_table():
    sch = linear(timesteps=10, beta_start=0.1, beta_end=0.2)
    assert len(sch) == 10
    assert sch.betas[0].item() == pytest.approx(0.1) and sch.betas[-1].item() == pytest.approx(0.2)


def test_q_sample_has_the_right_marginals():
    sch = linear(1000)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    for step in [0, 250, 999]:
        t = torch.full((len(x0),), step)
        xt = sch.q_sample(x0, t, torch.randn_like(x0))
        ab = sch.alpha_bar[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
        assert xt.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.01, abs=1e-4)


def test_respacing_keeps_the_marginals_and_the_full_plan_is_identical():
    sch = linear(1000)
    full = sch.respace(range(1000))
    for name in ["betas", "alpha_bar", "posterior_variance", "posterior_mean_coef1"]:
        assert torch.equal(getattr(full, name), getattr(sch, name)), name
    kept = [0, 99, 499, 999]
    sub = sch.respace(kept)
    assert torch.equal(sub.alpha_bar, sch.alpha_bar[kept])
    assert sub.timesteps.tolist() == kept
    ab = sch.alpha_bar.double()
    assert sub.betas[2].item() == pytest.approx(1 - (ab[499] / ab[99]).item(), rel=1e-5)


def test_from_betas_and_alpha_bar_agree():
    betas = torch.tensor([0.1, 0.2, 0.3])
    sch = NoiseSchedule.from_betas(betas)
    assert sch.alpha_bar.tolist() == pytest.approx([0.9, 0.72, 0.504])
    assert sch.betas.tolist() == pytest.approx([0.1, 0.2, 0.3])
