import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from ddpm.configs.presets import preset
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError


def test_linear_matches_its_closed_form():
    sch = preset("schedule", "linear", timesteps=1000, beta_start=1e-4, beta_end=0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(sch.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(sch.alpha_bar.numpy(), ab, rtol=1e-6)
    assert sch.alpha_bar[-1].item() == pytest.approx(4.035e-5, rel=1e-3)  # well-known value
    np.testing.assert_allclose(sch.alpha_bar_prev.numpy()[1:], ab[:-1], rtol=1e-6)
    assert sch.alpha_bar_prev[0].item() == 1.0


def test_posterior_terms_match_their_formulas():
    sch = preset("schedule", "linear", timesteps=1000)
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
    sch = preset("schedule", "cosine", timesteps=T, s=s, max_beta=0.999)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 1, 100, 500, 900, 990]:
        assert sch.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert sch.betas.max().item() == pytest.approx(0.999)  # the last beta is clipped
    assert (sch.betas[:-1] < 0.999).all()


def test_overrides_change_the_table():
    sch = preset("schedule", "linear", timesteps=10, beta_start=0.1, beta_end=0.2)
    assert len(sch) == 10
    assert sch.betas[0].item() == pytest.approx(0.1) and sch.betas[-1].item() == pytest.approx(0.2)


def test_q_sample_has_the_right_marginals():
    sch = preset("schedule", "linear", timesteps=1000)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    for step in [0, 250, 999]:
        t = torch.full((len(x0),), step)
        xt = sch.q_sample(x0, t, torch.randn_like(x0))
        ab = sch.alpha_bar[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
        assert xt.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.01, abs=1e-4)


def test_respacing_keeps_the_marginals_and_the_full_plan_is_identical():
    sch = preset("schedule", "linear", timesteps=1000)
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


def _sigmoid_alpha_bar(u: float, start: float, end: float, tau: float) -> float:
    """The continuous sigmoid schedule (Jabri et al. 2022; Chen 2023), written out."""

    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    hi, lo = sig(end / tau), sig(start / tau)
    return (hi - sig((start + u * (end - start)) / tau)) / (hi - lo)


@pytest.mark.parametrize(
    ("start", "end", "tau"), [(-3.0, 3.0, 1.0), (-3.0, 3.0, 2.0), (0.0, 3.0, 0.7)]
)
def test_sigmoid_matches_its_closed_form(start, end, tau):
    T = 1000
    sch = preset("schedule", "sigmoid", timesteps=T, start=start, end=end, tau=tau)
    for t in [0, 1, 10, 250, 499, 750, 990, 997]:
        expected = _sigmoid_alpha_bar((t + 1) / T, start, end, tau)
        assert sch.alpha_bar[t].item() == pytest.approx(expected, rel=1e-5), t
    assert sch.betas[-1].item() == pytest.approx(0.999)  # alpha_bar(1) = 0: the beta is clipped
    assert (sch.betas[:-1] < 0.999).all() and (sch.betas > 0).all()


def test_sigmoid_defaults_are_symmetric_about_the_middle():
    sch = preset("schedule", "sigmoid", timesteps=1000)
    assert sch.alpha_bar[499].item() == pytest.approx(0.5, abs=1e-7)  # u = 1/2: S(0) = 1/2
    # Symmetric sigmoid: alpha_bar(u) + alpha_bar(1 - u) = 1 away from the clipped end.
    for t in [9, 99, 299]:
        pair = sch.alpha_bar[t].item() + sch.alpha_bar[998 - t].item()
        assert pair == pytest.approx(1.0, abs=1e-6)
    assert 1 - sch.alpha_bar[0].item() == pytest.approx(3.0028e-4, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"start": 3.0, "end": -3.0},
            r"^schedule.start=3.0: a number less than schedule.end=-3.0$",
        ),
        ({"tau": 0.0}, r"^schedule.tau=0.0: a number > 0$"),
        ({"max_beta": 1.5}, r"^schedule.max_beta=1.5: a number in \(0, 1\)$"),
    ],
)
def test_bad_sigmoid_knobs_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        preset("schedule", "sigmoid", timesteps=100, **kwargs)


@pytest.mark.parametrize("option", ["linear", "cosine", "sigmoid"])
def test_half_log_snr_is_dpm_solvers_lambda(option):
    sch = preset("schedule", option, timesteps=1000)
    ab = sch._alpha_bar64
    lam = 0.5 * torch.log(ab / (1 - ab))
    torch.testing.assert_close(sch.half_log_snr, lam.float())
    assert (sch.half_log_snr[1:] < sch.half_log_snr[:-1]).all()  # noisier, lower lambda
    kept = [0, 10, 500, 999]
    assert torch.equal(sch.respace(kept).half_log_snr, sch.half_log_snr[kept])


@pytest.mark.parametrize("option", ["linear", "cosine", "sigmoid"])
def test_every_schedule_option_exposes_the_same_tables(make_cfg, option):
    cfg = make_cfg(f"schedule={option}", "schedule.timesteps=200")
    sch = instantiate(cfg.schedule)
    reference = preset("schedule", "linear", timesteps=200)
    tables = {k for k, v in vars(reference).items() if isinstance(v, torch.Tensor)}
    assert {k for k, v in vars(sch).items() if isinstance(v, torch.Tensor)} == tables
    for name in tables - {"_alpha_bar64"}:
        assert getattr(sch, name).shape == (200,) and getattr(sch, name).dtype in (
            torch.float32,
            torch.long,
        ), name
    ab = sch.alpha_bar
    assert (ab[1:] < ab[:-1]).all() and 0 < ab[-1] < ab[0] < 1
