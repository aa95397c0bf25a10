"""The recipe study's levers (experiments/cpu_recipe): learning-rate schedules, soft-min-SNR
weighting and flow matching's optimal-transport pairing, against closed forms and oracles."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import TINY, needs_mnist
from omegaconf import DictConfig

from ddpm.configs.presets import build, preset
from ddpm.configs.run_config import build_process, validate
from ddpm.diffusion.objective import loss_weight
from ddpm.errors import UserError
from ddpm.processes.flow import ot_pairs
from ddpm.run import run
from ddpm.runs import checkpoint
from ddpm.runs.tracking import read_metrics
from ddpm.training.lr_schedule import lr_multiplier


def test_lr_multipliers_follow_their_closed_forms():
    assert lr_multiplier("constant", 7, 0.9, 0, 10) == 1.0
    # EDM2's inverse square root: flat to the reference step, then 1/sqrt(step / ref)
    assert lr_multiplier("inverse_sqrt", 10, 0.0, 0, 10) == 1.0
    assert lr_multiplier("inverse_sqrt", 40, 0.0, 0, 10) == pytest.approx(0.5)
    assert lr_multiplier("linear", 1, 0.25, 0, 1) == pytest.approx(0.75)
    assert lr_multiplier("cosine", 1, 0.5, 0, 1) == pytest.approx(0.5)
    assert lr_multiplier("cosine", 1, 1.0, 0, 1) == pytest.approx(0.0, abs=1e-12)
    # warm-up multiplies whichever schedule runs
    assert lr_multiplier("inverse_sqrt", 5, 0.0, 20, 10) == pytest.approx(0.25)
    assert lr_multiplier("linear", 5, 0.5, 10, 1) == pytest.approx(0.25)


def test_a_time_budget_drives_the_decay_when_it_comes_first(make_cfg):
    settings = build(
        make_cfg("trainer.lr_schedule=linear", "trainer.max_minutes=10").trainer
    )  # epochs bound the steps far beyond the budget
    total = 10_000
    assert settings.lr_at(1, total, 0.0) == 1.0
    assert settings.lr_at(2, total, 300.0) == pytest.approx(0.5)  # half the 10 minutes used
    assert settings.lr_at(3, total, 900.0) == 0.0  # past the budget: never negative


@needs_mnist
@pytest.mark.slow
def test_the_logged_rates_are_the_schedule_and_a_resume_continues_it_exactly(make_cfg, tmp_path):
    """lr 2e-4 (recipe=seed), warm-up 2 steps, linear decay over 4 steps: the rate before
    step s is 2e-4 min(s/2, 1) (1 - (s-1)/4). A run resumed from its step-2 checkpoint ends
    with the uninterrupted run's weights bit for bit."""
    over = [
        *TINY,
        "trainer.lr_schedule=linear",
        "trainer.lr_warmup_steps=2",
        "trainer.checkpoint_every=2",
        "trainer.keep_last=null",
    ]
    whole = tmp_path / "whole"
    run(make_cfg(*over), run_dir=whole)
    rates = [r["lr"] for r in read_metrics(whole)]
    assert rates == pytest.approx([2e-4 * f for f in (0.5, 0.75, 0.5, 0.25)])

    part = tmp_path / "part"
    step2 = whole / "checkpoints" / "step_0000002.pt"
    run(make_cfg(*over, f"trainer.resume={step2}"), run_dir=part)
    a = checkpoint.load(whole / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(part / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in read_metrics(part)][-2:] == pytest.approx(rates[-2:])


def test_soft_min_snr_is_the_smooth_minimum_in_x0_units():
    """5 SNR / (SNR + 5) on the x0 error; on an eps error divided by SNR: 5 / (SNR + 5)."""
    sch = preset("schedule", "linear", timesteps=1000)
    t = torch.tensor([0, 500, 999])
    snr = sch.snr[t].double()
    got = loss_weight("eps", "soft_min_snr", t, sch).double()
    torch.testing.assert_close(got, 5 / (snr + 5), rtol=1e-5, atol=0)
    x0 = loss_weight("x0", "soft_min_snr", t, sch).double()
    assert bool((x0 <= torch.minimum(snr, torch.full_like(snr, 5.0)) + 1e-6).all())
    process = preset("process", "flow")
    times = torch.tensor([0.2, 0.8], dtype=torch.float64)
    c_out = process.coefficients(times)[2]
    snr_flow = ((1 - times) / times) ** 2
    torch.testing.assert_close(
        process.weight(times, c_out, "soft_min_snr"), 5 * snr_flow / (snr_flow + 5) * times**2
    )


def _pair_cost(x0: torch.Tensor, noise: torch.Tensor) -> float:
    return float((x0 - noise).pow(2).sum())


def test_ot_pairing_is_the_cheapest_permutation_of_the_noise():
    """Against every one of the 6! orders of a 6-image batch: the pairing is a permutation of
    the noise rows and its total squared distance is the minimum."""
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, 1, 4, 4, generator=gen)
    noise = torch.randn(6, 1, 4, 4, generator=gen)
    paired = ot_pairs(x0, noise)
    rows = [int(torch.nonzero((noise == p).all(dim=(1, 2, 3)))[0]) for p in paired]
    assert sorted(rows) == list(range(6))
    best = min(_pair_cost(x0, noise[list(order)]) for order in itertools.permutations(range(6)))
    assert _pair_cost(x0, paired) == pytest.approx(best, rel=1e-6)
    assert _pair_cost(x0, paired) < _pair_cost(x0, noise)


def test_ot_pairing_shortens_the_paths_a_flow_batch_trains_on():
    """On a 64-image batch the paired noise is much nearer its images than independent noise
    (expected |x0 - eps|^2 falls by far more than the spread of one draw)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 1, 8, 8, generator=gen) * 0.5 + 0.3
    noise = torch.randn(64, 1, 8, 8, generator=gen)
    assert _pair_cost(x0, ot_pairs(x0, noise)) < 0.9 * _pair_cost(x0, noise)


def test_flow_with_ot_pairs_trains_on_the_reordered_noise():
    """The loss sees the OT-reordered noise: with an exact velocity oracle for those pairs
    the loss is zero, while the independent pairing's noise gives a positive loss."""
    process = preset("process", "flow", pairing="ot")
    assert "OT pairs" in process.describe()
    x0 = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    process.draw(8, x0.device)
    noise = ot_pairs(x0, torch.randn_like(x0))  # the draws the loss makes, in its order

    class Oracle(torch.nn.Module):
        def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            return noise - x0

    torch.manual_seed(5)
    assert float(process.loss(Oracle(), x0)) == pytest.approx(0.0, abs=1e-10)
    torch.manual_seed(5)
    independent = preset("process", "flow")
    assert float(independent.loss(Oracle(), x0)) > 0.1


def test_a_flow_run_saved_before_pairing_existed_rebuilds_with_independent_noise():
    stored = {
        "_target_": "ddpm.processes.flow.FlowProcess",
        "time_sampling": "uniform",
        "logit_mean": 0.0,
        "logit_std": 1.0,
        "shift": 1.0,
        "levels": 50,
    }
    process = build_process(DictConfig({"process": stored}))
    assert process.pairing == "independent" and len(process.grid) == 50
    assert math.isclose(float(process.times[0]), 1 / 51)


def test_an_ot_paired_run_refuses_exactly_the_stochastic_samplers(make_cfg):
    """Pairing makes x_t given an image non-Gaussian, so only the ODE samples an OT run: every
    sampler preset that draws fresh noise is refused in one line, every other one is built;
    independent flow takes them all."""
    paired, independent = (build_process(make_cfg("process=flow", f"process.pairing={p}"))
                           for p in ("ot", "independent"))  # fmt: skip
    refused = []
    for name in ("ddpm", "ddim", "dpm_solver_pp_sde", "dpm_solver_pp", "heun", "euler", "unipc"):
        key = {"ddim": "eta", "heun": "churn"}.get(name)
        for value in (0.0, 1.0) if key else (None,):
            extra = {} if key is None else {key: value}
            sampler = preset("sampler", name, schedule=paired.grid, **extra)
            independent.check_sampler(sampler)  # never refused
            try:
                paired.check_sampler(sampler)
                was_refused = False
            except UserError as err:
                assert "process.pairing=ot" in str(err) and "\n" not in str(err)
                was_refused = True
            assert was_refused == sampler.stochastic
            if was_refused:
                refused.append(name if key is None else f"{name} {key}={value:g}")
    assert refused == ["ddpm", "ddim eta=1", "dpm_solver_pp_sde", "heun churn=1"]


def test_an_ot_paired_config_with_the_default_sampler_is_refused_before_training(make_cfg):
    with pytest.raises(UserError, match="pick a deterministic sampler"):
        validate(make_cfg("process=flow", "process.pairing=ot"))
    validate(make_cfg("process=flow", "process.pairing=ot", "sampler=dpm_solver_pp"))
