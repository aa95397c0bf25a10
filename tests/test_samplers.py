import pytest
import torch
from conftest import GaussianOracle

from ddpm.diffusion.schedule import cosine, linear
from ddpm.samplers import AncestralSampler, spaced_timesteps


def test_one_reverse_step_is_the_posterior_formula():
    sch = linear(1000)
    sampler = AncestralSampler(sch, clip_x0=False)
    i = 500
    x_t = torch.tensor([[[[0.3, -1.2]]]])
    x0 = torch.tensor([[[[0.5, -0.25]]]])
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
    out = sampler.step(x0, x_t, i, torch.Generator().manual_seed(7))
    b = sch.betas.double()[i]
    ab = torch.cumprod(1 - sch.betas.double(), 0)
    ab_t, ab_prev = ab[i], ab[i - 1]
    coef1 = ab_prev.sqrt() * b / (1 - ab_t)
    coef2 = (1 - b).sqrt() * (1 - ab_prev) / (1 - ab_t)
    var = b * (1 - ab_prev) / (1 - ab_t)
    expected = coef1 * x0.double() + coef2 * x_t.double() + var.sqrt() * z.double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_last_step_returns_the_clamped_x0_estimate():
    sampler = AncestralSampler(linear(1000))
    model = GaussianOracle(sampler.table, mu=5.0, s=0.1)  # data far outside [-1, 1]
    x_t = torch.full((4, 1, 1, 1), 5.0)  # at t=0, x_t is nearly x0 itself
    x0 = sampler.predict_x0(model, x_t, 0)
    assert torch.equal(x0, torch.ones(4, 1, 1, 1))
    assert torch.equal(sampler.step(x0, x_t, 0, None), x0)


@pytest.mark.parametrize("make_schedule", [linear, cosine])
def test_ancestral_sampler_recovers_a_gaussian(make_schedule):
    sch = make_schedule(1000)
    mu, s = 0.3, 0.2
    model = GaussianOracle(sch, mu, s)
    x, _ = AncestralSampler(sch).sample(
        model, (20_000, 1, 1, 1), generator=torch.Generator().manual_seed(0)
    )
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(s, rel=0.03)


def test_spacing_is_explicit():
    assert spaced_timesteps(1000, None) == list(range(1000))
    assert spaced_timesteps(1000, 5) == [0, 250, 500, 749, 999]  # round(linspace(0, 999, 5))
    assert spaced_timesteps(10, 1) == [9]
    assert AncestralSampler(linear(1000), steps=5).timesteps == [999, 749, 500, 250, 0]


def test_trajectory_records_the_requested_steps():
    sch = linear(100)
    model = GaussianOracle(sch, 0.0, 0.5)
    x, traj = AncestralSampler(sch).sample(model, (3, 1, 1, 1), record=[99, 50, 0])
    assert sorted(traj) == [0, 50, 99]
    assert torch.equal(traj[0], x[0])
