import math

import pytest
import torch

from ddpm.configs.presets import preset
from ddpm.diffusion.plans import (
    KARRAS_RHO,
    SIGMA_MAX,
    SPACINGS,
    half_log_snr,
    timestep_plan,
)
from ddpm.errors import UserError
from ddpm.samplers import spaced_timesteps

SCHEDULES = ("cosine", "linear", "sigmoid")


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 20, 50, 100, 500, 999])
def test_every_plan_is_distinct_increasing_integers_from_near_the_top_to_zero(
    schedule, spacing, steps
):
    T = 1000
    plan = timestep_plan(preset("schedule", schedule, timesteps=T), steps, spacing)
    assert all(isinstance(t, int) for t in plan)
    assert len(plan) == steps  # exactly the calls asked for, no silent dedupe
    assert all(b > a for a, b in zip(plan, plan[1:], strict=False))
    assert plan[0] >= 0 and plan[-1] <= T - 1
    stride = T // steps
    if spacing == "leading":  # DDIM's even skip: ends at 0, starts one stride below the top
        assert plan[0] == 0 and plan[-1] == (steps - 1) * stride >= T - 2 * stride
    elif spacing == "trailing":  # Lin et al.: starts at the top, last call one stride above 0
        assert plan[-1] == T - 1 and plan[0] == round(T / steps) - 1
    elif steps == 1:
        assert plan == [T - 1]
    else:
        assert plan[-1] == T - 1 and plan[0] == 0


@pytest.mark.parametrize("spacing", SPACINGS)
def test_all_steps_or_none_keep_every_timestep(spacing):
    sch = preset("schedule", "cosine", timesteps=50)
    assert timestep_plan(sch, None, spacing) == list(range(50))
    assert timestep_plan(sch, 50, spacing) == list(range(50))
    assert timestep_plan(sch, 10, spacing, top=5) == list(range(6))  # more steps than room


def test_linspace_is_the_seeds_plan_and_the_others_are_pinned():
    sch = preset("schedule", "cosine", timesteps=1000)
    for steps in (1, 2, 5, 20, 50, 999):
        assert timestep_plan(sch, steps) == spaced_timesteps(1000, steps)
    assert timestep_plan(sch, 5) == [0, 250, 500, 749, 999]
    assert timestep_plan(sch, 5, "leading") == [0, 200, 400, 600, 800]
    assert timestep_plan(sch, 5, "trailing") == [199, 399, 599, 799, 999]
    assert timestep_plan(sch, 5, "quadratic") == [0, 62, 250, 562, 999]
    assert timestep_plan(sch, 8, "logsnr") == [0, 9, 52, 216, 602, 882, 968, 999]
    assert timestep_plan(sch, 8, "karras") == [0, 37, 243, 659, 884, 957, 981, 999]
    sch = preset("schedule", "linear", timesteps=1000)
    assert timestep_plan(sch, 8, "logsnr") == [0, 7, 36, 136, 363, 599, 781, 999]
    assert timestep_plan(sch, 8, "karras") == [0, 24, 143, 388, 594, 738, 845, 999]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_logsnr_and_karras_are_uniform_in_their_variable_below_sigma_max(schedule):
    """Uniform in lambda (logsnr) or in sigma^(1/rho) (karras) up to one timestep of rounding;
    only the jump from the top to the sigma_max = 80 end of the range is wider."""
    sch = preset("schedule", schedule, timesteps=1000)
    lam = half_log_snr(sch)
    for spacing in ("logsnr", "karras"):
        plan = timestep_plan(sch, 8, spacing)
        values = lam[plan] if spacing == "logsnr" else (-lam[plan]).exp() ** (1 / KARRAS_RHO)
        gaps = (values[:-1] - values[1:]).abs()
        inner = gaps[:-1]
        assert float((inner - inner.mean()).abs().max() / inner.mean()) < 0.05
        assert float(gaps[-1]) > float(inner.mean())
        # the range's noisy end is sigma = 80; the plan's second point is one gap below it
        end = -math.log(SIGMA_MAX) if spacing == "logsnr" else SIGMA_MAX ** (1 / KARRAS_RHO)
        assert float((values[-2] - end).abs()) == pytest.approx(float(inner.mean()), rel=0.05)


def test_quadratic_plan_is_dense_near_the_data():
    plan = timestep_plan(preset("schedule", "linear", timesteps=1000), 10, "quadratic")
    gaps = torch.tensor(plan).diff()
    assert bool((gaps[1:] >= gaps[:-1]).all()) and gaps[0] < gaps[-1] / 10


@pytest.mark.parametrize("spacing", SPACINGS)
def test_starting_at_plans_below_t_with_the_same_spacing(spacing):
    sch = preset("schedule", "cosine", timesteps=1000)
    sampler = preset("sampler", "ddim", schedule=sch, steps=10, spacing=spacing)
    short = sampler.starting_at(300)
    assert len(short.timesteps) == 10 and max(short.timesteps) <= 300
    assert short.timesteps == sorted(set(short.timesteps), reverse=True)
    if spacing != "leading":
        assert short.timesteps[0] == 300
    assert sampler.timesteps == timestep_plan(sch, 10, spacing)[::-1]  # untouched


def test_unknown_spacing_is_a_one_line_user_error():
    with pytest.raises(UserError) as err:
        timestep_plan(preset("schedule", "linear", timesteps=100), 10, "cubic")
    assert str(err.value) == (
        "sampler.spacing='cubic': one of linspace, leading, trailing, quadratic, logsnr, karras"
    )
