import math

import pytest
import torch
from conftest import GaussianOracle
from hydra.utils import instantiate

from ddpm.config import validate
from ddpm.diffusion.schedule import cosine, linear, sigmoid
from ddpm.errors import UserError
from ddpm.samplers import (
    AncestralSampler,
    DDIMSampler,
    DPMSolverPPSampler,
    Sampler,
    spaced_timesteps,
)

MU, S = 0.3, 0.2
SCHEDULES = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid}
SAMPLERS = {
    "ddpm": lambda sch: AncestralSampler(sch),
    "ddpm_100": lambda sch: AncestralSampler(sch, steps=100),
    "ddim_eta0": lambda sch: DDIMSampler(sch, eta=0.0),
    "ddim_eta1": lambda sch: DDIMSampler(sch, eta=1.0),
    "dpm_solver_pp": lambda sch: DPMSolverPPSampler(sch),
}
# Relative error allowed on the std, per sampler at its default step count. The mean comes out
# within 0.004 everywhere; the std does not: s = 0.2 puts all the action between t = 0 and the
# first few visited steps of the round(linspace(0, T-1, steps)) plan, and every few-step
# sampler loses variance there. Measured worst case over the three schedules (exact discrete
# recursion, no Monte Carlo): ddpm 1000 -1.9%, ddpm 100 -12.7%, DDIM-50 eta 0 -12.1%,
# DDIM-50 eta 1 -20.8%, DPM-Solver++-20 -24.6% (all linear; cosine is the kindest). The margin
# over those is the Monte Carlo error of a std from 20k samples (0.5%, 3 sigma).
STD_TOL = {"ddpm": 0.035, "ddpm_100": 0.145, "ddim_eta0": 0.14, "ddim_eta1": 0.23}
STD_TOL["dpm_solver_pp"] = 0.265


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_recovers_the_gaussian(name, schedule, prediction):
    sch = SCHEDULES[schedule](1000)
    model = GaussianOracle(sch, MU, S, prediction)
    x, _ = SAMPLERS[name](sch).sample(
        model, (20_000, 1, 1, 1), generator=torch.Generator().manual_seed(0)
    )
    assert x.mean().item() == pytest.approx(MU, abs=0.006)
    assert x.std().item() == pytest.approx(S, rel=STD_TOL[name])


def _gain(sampler: Sampler, sch) -> float:
    """The deterministic sampler's map x_T -> x_0 is affine on Gaussian data: its slope / s."""
    model = GaussianOracle(sch, MU, S)
    x, _ = sampler.sample(model, (2, 1, 1, 1), x_T=torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1))
    return (x[1] - x[0]).item() / S


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_deterministic_samplers_converge_and_dpm_solver_pp_faster(schedule):
    sch = SCHEDULES[schedule](1000)

    def err(sampler: Sampler) -> float:
        return abs(_gain(sampler, sch) - 1)

    ddim = {n: err(DDIMSampler(sch, steps=n, clip_x0=False)) for n in (50, 200, 1000)}
    dpm = {n: err(DPMSolverPPSampler(sch, steps=n, clip_x0=False)) for n in (50, 200)}
    assert ddim[1000] < 0.01 and dpm[200] < 0.01  # exact in the limit
    assert 3.0 < ddim[50] / ddim[200] < 5.0  # first order: 4x the steps, ~1/4 the error
    assert dpm[50] < 0.6 * ddim[50] and dpm[200] < 0.5 * ddim[200]


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


def _ab(sch, t: int) -> float:
    return float(sch._alpha_bar64[t]) if t >= 0 else 1.0


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_one_ddim_step_is_song_et_al_eq_12(eta):
    sch = cosine(1000)
    sampler = DDIMSampler(sch, steps=10, eta=eta, clip_x0=False)
    i = 4  # row 4 of the plan [0, 111, 222, 333, 444, ...]: t = 444 -> s = 333
    t, s = sampler.table.timesteps[i].item(), sampler.table.timesteps[i - 1].item()
    assert (t, s) == (444, 333)
    x_t = torch.tensor([0.7, -1.1]).reshape(2, 1, 1, 1)
    x0 = torch.tensor([0.2, -0.4]).reshape(2, 1, 1, 1)
    out = sampler.step(x0, x_t, i, torch.Generator().manual_seed(3))
    a_t, a_s = _ab(sch, t), _ab(sch, s)
    eps = (x_t.double() - math.sqrt(a_t) * x0.double()) / math.sqrt(1 - a_t)
    sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3)).double()
    expected = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s - sigma**2) * eps + sigma * z
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_dpm_solver_pp_steps_are_lu_et_al_2m():
    sch = sigmoid(1000)
    sampler = DPMSolverPPSampler(sch, steps=10, clip_x0=False)
    assert sampler.timesteps == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]

    def lam(t: int) -> float:
        return 0.5 * math.log(_ab(sch, t) / (1 - _ab(sch, t)))

    def first(x, d, t, s):
        h = lam(s) - lam(t)
        sig = math.sqrt((1 - _ab(sch, s)) / (1 - _ab(sch, t)))
        return sig * x - math.sqrt(_ab(sch, s)) * math.expm1(-h) * d

    x9 = torch.tensor([1.5, -0.5]).double().reshape(2, 1, 1, 1)
    d9, d8 = torch.tensor([0.1, 0.2]).double(), torch.tensor([0.3, -0.1]).double()
    d9, d8 = d9.reshape(2, 1, 1, 1), d8.reshape(2, 1, 1, 1)
    sampler.reset()
    x8 = sampler.step(d9.float(), x9.float(), 9, None)  # first step: first order (DDIM)
    torch.testing.assert_close(x8.double(), first(x9, d9, 999, 888), rtol=1e-5, atol=1e-6)
    x7 = sampler.step(d8.float(), x8, 8, None)  # second step: 2M
    r = (lam(888) - lam(999)) / (lam(777) - lam(888))
    d = (1 + 1 / (2 * r)) * d8 - 1 / (2 * r) * d9
    torch.testing.assert_close(x7.double(), first(x8.double(), d, 888, 777), rtol=1e-5, atol=1e-6)
    # The final solver step (into t = 0) is first order, and t = 0 returns the estimate.
    sampler._prev = (2, d9.float())
    x0 = sampler.step(d8.float(), x7, 1, None)
    torch.testing.assert_close(x0.double(), first(x7.double(), d8, 111, 0), rtol=1e-5, atol=1e-6)
    assert torch.equal(sampler.step(d8.float(), x0, 0, None), d8.float())
    # reset() forgets the previous estimate: the next step 8 is first order again.
    sampler.reset()
    again = sampler.step(d8.float(), x8, 8, None)
    torch.testing.assert_close(
        again.double(), first(x8.double(), d8, 888, 777), rtol=1e-5, atol=1e-6
    )


def test_dpm_solver_pp_is_reset_between_calls():
    sch = linear(1000)
    model = GaussianOracle(sch, MU, S)
    sampler = DPMSolverPPSampler(sch)
    x_T = torch.randn(64, 1, 1, 1)
    first, _ = sampler.sample(model, x_T.shape, x_T=x_T)
    assert sampler._prev is not None and sampler._prev[0] == 0
    second, _ = sampler.sample(model, x_T.shape, x_T=x_T)
    assert torch.equal(first, second)


def test_ddim_with_eta_zero_is_deterministic_given_x_T():
    sch = cosine(1000)
    model = GaussianOracle(sch, MU, S)
    x_T = torch.randn(256, 1, 1, 1)
    a, _ = DDIMSampler(sch).sample(
        model, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(1)
    )
    b, _ = DDIMSampler(sch).sample(
        model, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(a, b)
    c, _ = DDIMSampler(sch, eta=1.0).sample(
        model, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(2)
    )
    assert not torch.equal(a, c)


def test_ddim_with_eta_one_is_the_ancestral_sampler_on_the_same_plan():
    sch = linear(1000)
    model = GaussianOracle(sch, MU, S)
    x_T = torch.randn(256, 1, 1, 1)
    runs = [
        s.sample(model, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(5))[0]
        for s in (DDIMSampler(sch, steps=50, eta=1.0), AncestralSampler(sch, steps=50))
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)


def test_ddpm_respaced_to_all_steps_is_the_ancestral_sampler_bit_for_bit():
    sch = cosine(1000)
    model = GaussianOracle(sch, MU, S)
    full = AncestralSampler(sch)
    outs = [
        s.sample(model, (512, 1, 1, 1), generator=torch.Generator().manual_seed(9))[0]
        for s in (
            full,
            AncestralSampler(sch, steps=1000),
            AncestralSampler(sch.respace(range(1000))),
        )
    ]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_spacing_is_explicit():
    assert spaced_timesteps(1000, None) == list(range(1000))
    assert spaced_timesteps(1000, 5) == [0, 250, 500, 749, 999]  # round(linspace(0, 999, 5))
    assert spaced_timesteps(10, 1) == [9]
    assert AncestralSampler(linear(1000), steps=5).timesteps == [999, 749, 500, 250, 0]
    assert DDIMSampler(linear(1000)).timesteps[:3] == [999, 979, 958]  # 50 steps by default
    assert len(DDIMSampler(linear(1000)).timesteps) == 50
    assert len(DPMSolverPPSampler(linear(1000)).timesteps) == 20


def test_starting_at_restricts_the_plan_to_timesteps_up_to_t():
    sch = linear(1000)
    ddim = DDIMSampler(sch, steps=50)
    short = ddim.starting_at(200)
    assert short.timesteps == spaced_timesteps(201, 50)[::-1]
    assert short.timesteps[0] == 200 and short.timesteps[-1] == 0 and len(short.timesteps) == 50
    assert torch.equal(short.table.alpha_bar, sch.alpha_bar[short.table.timesteps])
    assert ddim.timesteps[0] == 999 and short.eta == ddim.eta  # the original is untouched
    assert AncestralSampler(sch).starting_at(10).timesteps == list(range(10, -1, -1))
    assert AncestralSampler(sch).starting_at(999).table is sch
    with pytest.raises(ValueError):
        ddim.starting_at(1000)


def test_trajectory_records_the_requested_steps():
    sch = linear(100)
    model = GaussianOracle(sch, 0.0, 0.5)
    x, traj = AncestralSampler(sch).sample(model, (3, 1, 1, 1), record=[99, 50, 0])
    assert sorted(traj) == [0, 50, 99]
    assert torch.equal(traj[0], x[0])


@pytest.mark.parametrize("option", ["ddpm", "ddim", "dpm_solver_pp"])
def test_every_sampler_option_builds_from_its_yaml(make_cfg, option):
    cfg = make_cfg(f"sampler={option}", "schedule=sigmoid")
    validate(cfg)
    sampler = instantiate(cfg.sampler, schedule=instantiate(cfg.schedule))
    assert isinstance(sampler, Sampler)
    assert len(sampler.timesteps) == {"ddpm": 1000, "ddim": 50, "dpm_solver_pp": 20}[option]


def test_bad_sampler_keys_are_one_line_user_errors(make_cfg):
    with pytest.raises(UserError, match=r"^sampler.eta=-0.5: a number >= 0"):
        validate(make_cfg("sampler=ddim", "sampler.eta=-0.5"))
    with pytest.raises(UserError, match=r"^sampler.steps=0: null or 1..schedule.timesteps=1000"):
        validate(make_cfg("sampler=dpm_solver_pp", "sampler.steps=0"))
