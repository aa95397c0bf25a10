"""Consistency tuning (``ddpm.distill distill_method=ect``, ddpm.training.consistency) and the
multistep consistency sampler, on exact oracles, plus exact resume and one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import GaussianOracle, ProcessOracle
from test_distill import distill_cfg

from ddpm.configs.presets import preset
from ddpm.errors import UserError
from ddpm.processes import DDPMProcess
from ddpm.runs import checkpoint
from ddpm.runs.load import load_trained
from ddpm.training.consistency import ConsistencyTuning, pseudo_huber

MU = 0.3
OPTIONS = {"stages": 8, "q": 2.0, "k": 8.0, "b": 1.0, "p_mean": -1.1, "p_std": 2.0,
           "huber_c": 0.00054}  # fmt: skip
PROCESSES = {
    "ddpm": lambda: DDPMProcess(preset("schedule", "cosine", timesteps=1000)),
    "flow": lambda: preset("process", "flow"),
}


def tuning(process, done: int, total: int = 800) -> ConsistencyTuning:
    prediction = None if process.grid.precond is not None else "v"
    return ConsistencyTuning(process.grid, prediction, total, lambda: done, **OPTIONS)


def constant(process, value: float):
    """A network whose x0 estimate is ``value`` everywhere (the exact one for data at value)."""
    if isinstance(process, DDPMProcess):
        return GaussianOracle(process.grid, value, 0.0, prediction="v")
    return ProcessOracle(process, value, 0.0)


def test_the_gap_starts_below_the_grid_and_halves_with_each_stage():
    """Stage 0: every r is below the grid (the target is the image). Stage s: sigma_r is the
    grid's level at or below sigma_t (1 - n(sigma_t) / 2^s), and r < t."""
    process = PROCESSES["ddpm"]()
    torch.manual_seed(0)
    t, r = tuning(process, done=0).levels(4000, torch.device("cpu"))
    assert bool((r == -1).all()) and bool((t >= 1).all())
    loss = tuning(process, done=700)  # 700 of 800 steps: stage 7 of 8
    assert loss.stage() == 7
    torch.manual_seed(1)
    t, r = loss.levels(4000, torch.device("cpu"))
    sig = loss.sigmas
    s_t = sig[t]
    s_r = s_t * (1 - (1 + 8 * torch.sigmoid(-s_t)) / 2**7)
    inside = r >= 0
    assert bool((r < t).all()) and float(inside.double().mean()) > 0.9
    assert bool((sig[r[inside]] <= s_r[inside] + 1e-12).all())
    above = (r[inside] + 1).clamp(max=len(sig) - 1)
    snapped = r[inside] + 1 == t[inside]  # at most one row below t
    assert bool(((sig[above] > s_r[inside]) | snapped).all())


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_loss_is_the_boundary_at_stage_0_and_self_consistency_at_the_last(name):
    """Every image is MU. The exact network (x0 estimate MU everywhere) has zero loss at every
    stage. A network off by d is consistent with itself, so the last stage (targets its own
    estimates at lower levels) gives it zero loss, while stage 0 (target: the image) charges
    pseudo-Huber(d) / sigma_t per image: the diffusion loss the run trained on."""
    process = PROCESSES[name]()
    x0 = torch.full((64, 1, 4, 4), MU)
    first, last = tuning(process, done=0), tuning(process, done=799)
    for loss in (first, last):
        torch.manual_seed(3)
        assert float(loss.loss(constant(process, MU), x0)) < 1e-4
    d = 0.05
    c = OPTIONS["huber_c"] * math.sqrt(16)
    huber = math.sqrt(16 * d * d + c * c) - c
    for loss, stage in ((first, 0), (last, 7)):
        torch.manual_seed(3)
        t, r = loss.levels(64, x0.device)
        assert loss.stage() == stage
        # only images whose r fell below the grid (all at stage 0) see the image as target
        expected = float(((r < 0).double() * huber / loss.sigmas[t]).mean())
        torch.manual_seed(3)
        got = float(loss.loss(constant(process, MU + d), x0))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-4), stage  # float32 estimates
    assert expected < 0.01 * huber / float(last.sigmas[-1])  # the last stage: almost none


def test_pseudo_huber_is_quadratic_below_c_and_linear_above():
    small, big = torch.full((1, 4), 1e-4), torch.full((1, 4), 10.0)
    c = 0.1
    assert float(pseudo_huber(small, c)) == pytest.approx(4e-8 / (2 * c), rel=1e-3)
    assert float(pseudo_huber(big, c)) == pytest.approx(20.0 - c, rel=1e-3)


def test_consistency_sampling_renoises_each_estimate_afresh():
    """Two calls: x0_hat at the top row, noised to the second row with the generator's next
    draw, then x0_hat there; on data at MU every call lands on MU. One call is DDIM's."""
    grid = preset("schedule", "cosine", timesteps=1000)
    net = GaussianOracle(grid, MU, 0.0, prediction="v")
    sampler = preset("sampler", "consistency", schedule=grid, steps=2)
    assert sampler.stochastic and sampler.nfe == 2
    z = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x, _ = sampler.sample(net, z.shape, x_T=z, generator=torch.Generator().manual_seed(1))
    assert (x - MU).abs().max() < 1e-4
    one = preset("sampler", "consistency", schedule=grid, steps=1)
    ddim = preset("sampler", "distilled", schedule=grid, steps=1)
    noisy = GaussianOracle(grid, MU, 0.5, prediction="v")
    assert not one.stochastic
    a, _ = one.sample(noisy, z.shape, x_T=z)
    b, _ = ddim.sample(noisy, z.shape, x_T=z)
    assert torch.equal(a, b)


def ect(run_dir, *more: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        "distill_method=ect",
        "trainer.batch_size=8",
        "trainer.log_every=1",
        "trainer.num_samples=4",
        "trainer.checkpoint_every=2",
        "device=cpu",
        "logger=none",
        *more,
    ]


def test_an_ect_student_is_a_run_that_resumes_to_the_same_weights(tiny_run, tmp_path):
    """Continued from its step-2 checkpoint, the student ends where the whole run ends: the
    stage comes from the optimizer's own step count, restored with it."""
    from ddpm.distill import distill

    whole, halves = tmp_path / "whole", tmp_path / "halves"
    run = ect(tiny_run, "trainer.max_steps=4", "method.stages=4", "trainer.keep_last=null")
    distill(distill_cfg(*run), whole)
    step2 = whole / "checkpoints" / "step_0000002.pt"
    distill(distill_cfg(*run, f"trainer.resume={step2}"), halves)
    a = checkpoint.load(whole / "checkpoints" / "last.pt")
    b = checkpoint.load(halves / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    cfg, student, _ = load_trained(whole)
    assert cfg.sampler._target_.endswith("ConsistencySampler") and cfg.sampler.steps == 1
    assert student.prediction == "v" and not (whole / "pairs.pt").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pairs=100"], "error: pairs=100: null: read by distill_method=reflow only"),
        (["sampler=ddim"], "error: sampler='set': none: distill_method=ect draws no teacher"),
        (["method.stages=0"], "error: method.stages=0: an integer >= 1"),
        (["method.q=1"], "error: method.q=1: a number > 1"),
    ],
)
def test_bad_ect_input_is_one_line(tiny_run, tmp_path, overrides, message):
    from ddpm.distill import distill

    with pytest.raises(UserError) as err:
        distill(distill_cfg(*ect(tiny_run, "trainer.max_steps=2", *overrides)), tmp_path / "s")
    assert f"error: {err.value}".startswith(message)
