"""Distillation (ddpm.distill, ddpm.training.reflow): the loss on exact oracles, the student's
plans, exact resume of a student run, and one-line errors."""

from pathlib import Path

import pytest
import torch
from conftest import CONF, GaussianOracle, ProcessOracle, fast_only, run_module
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ddpm.configs.presets import preset
from ddpm.errors import UserError
from ddpm.processes import DDPMProcess
from ddpm.runs import checkpoint
from ddpm.runs.load import load_trained
from ddpm.training.reflow import ReflowLoss, pair_dataset, plan_rows

MU = 0.3
PROCESSES = {
    "ddpm": lambda: DDPMProcess(preset("schedule", "cosine", timesteps=1000)),
    "flow": lambda: preset("process", "flow"),
    "edm": lambda: preset("process", "edm", sigma_data=0.5),
}


def point_mass(process, mu: float):
    """The exact network when every image is ``mu`` (x0 = mu from any x, any level); the DDPM
    one predicts v, as a DDPM student does."""
    if isinstance(process, DDPMProcess):
        return GaussianOracle(process.grid, mu, 0.0, prediction="v")
    return ProcessOracle(process, mu, 0.0)


def student_plans(grid, calls=(1, 2, 4)) -> list[list[int]]:
    return [preset("sampler", "distilled", schedule=grid, steps=k).timesteps for k in calls]


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_exact_student_has_zero_loss_and_lands_on_the_image_in_1_2_and_4_calls(name):
    """Pairs (mu, z): the network whose x0 estimate is mu everywhere is the perfect student.
    Its loss is 0, a network off by d has loss d^2, and DDIM on each trailing plan maps every
    z to mu, whatever the number of calls (the straight coupling is a DDIM path)."""
    process = PROCESSES[name]()
    grid = process.grid
    z = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    pairs = pair_dataset(torch.full_like(z, MU), z, None).images
    loss = ReflowLoss(grid, student_plans(grid), "v")
    torch.manual_seed(0)
    assert float(loss.loss(point_mass(process, MU), pairs)) < 1e-8
    torch.manual_seed(0)
    off = float(loss.loss(point_mass(process, MU + 0.1), pairs))
    assert off == pytest.approx(0.1**2, rel=1e-3)
    for calls in (1, 2, 4):
        sampler = preset("sampler", "distilled", schedule=grid, steps=calls)
        x, _ = sampler.sample(point_mass(process, MU), z.shape, x_T=z)
        assert sampler.nfe == calls
        assert (x - MU).abs().max() < 1e-4, (name, calls)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_rank_parts_of_the_student_loss_add_up_to_the_whole_batch(name):
    """Every rank draws the rows for the whole batch, then takes its part, as the loop needs."""
    process = PROCESSES[name]()
    torch.manual_seed(0)
    model = preset("model", "base", channels=[8, 16], num_classes=10, prediction="v")
    pairs = pair_dataset(torch.rand(6, 1, 28, 28) * 2 - 1, torch.randn(6, 1, 28, 28), None)
    loss = ReflowLoss(process.grid, student_plans(process.grid), "v")
    labels = torch.arange(6)
    torch.manual_seed(5)
    whole = loss.loss(model, pairs.images, labels=labels)
    parts = []
    for part in (slice(0, 2), slice(2, 6)):
        torch.manual_seed(5)
        parts.append(loss.loss(model, pairs.images, labels=labels, part=part))
    torch.testing.assert_close(parts[0] + parts[1], whole)
    assert float(whole.detach()) > 0


def test_each_plan_weighs_the_same_and_its_rows_share_its_weight():
    rows, weights = plan_rows([[19], [19, 9], [19, 14, 9, 4]])
    assert rows.tolist() == [4, 9, 14, 19]
    expected = [1 / 12, 1 / 6 + 1 / 12, 1 / 12, 1 / 3 + 1 / 6 + 1 / 12]
    assert weights.tolist() == pytest.approx(expected, abs=1e-15)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-15)


def test_the_trailing_plans_start_from_pure_noise_and_never_end_on_the_clean_row():
    grid = preset("schedule", "cosine", timesteps=1000)
    assert student_plans(grid) == [[999], [999, 499], [999, 749, 499, 249]]


# --- the command ------------------------------------------------------------------------------


def distill_cfg(*overrides: str):
    """conf/distill.yaml composed with ``overrides``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="distill", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def small(run_dir: Path, *more: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        "sampler=ddim",
        "sampler.steps=5",
        "pairs=24",
        "pair_batch=16",
        "trainer.batch_size=8",
        "trainer.log_every=1",
        "trainer.num_samples=4",
        "trainer.checkpoint_every=2",
        "device=cpu",
        "logger=none",
        *more,
    ]


@pytest.mark.slow
def test_a_student_is_a_run_whose_pairs_are_the_teachers_images(tiny_run, tmp_path):
    from ddpm.distill import distill

    out = tmp_path / "student"
    summary = distill(distill_cfg(*small(tiny_run, "trainer.max_steps=4")), out)
    assert summary["steps"] == 4
    saved = checkpoint.load(out / "pairs.pt")
    x0, z = saved["x0"], saved["z"]
    # the first batch's pairs again, from the teacher and its solver directly
    _, teacher, schedule = load_trained(tiny_run)
    solver = preset("sampler", "ddim", schedule=schedule, steps=5)
    again, _ = solver.sample(teacher, z[:16].shape, x_T=z[:16])
    assert torch.allclose(again, x0[:16], atol=1e-6)
    # the student reloads like any run: its own sampler, a v target (the teacher predicts eps)
    cfg, student, _ = load_trained(out)
    assert cfg.sampler.spacing == "trailing" and cfg.sampler.steps == 1
    assert student.prediction == "v" and cfg.experiment_name == "distill"
    res = run_module(
        "ddpm.sample", f"run_dir={out}", "sampler=distilled", "sampler.steps=2", "num_samples=4"
    )
    assert res.returncode == 0, res.stderr
    assert (out / "samples" / "distilled_2" / "grid.png").is_file()


def test_a_stopped_student_resumes_to_the_same_weights(tiny_run, tmp_path):
    from ddpm.distill import distill

    whole, halves = tmp_path / "whole", tmp_path / "halves"
    distill(distill_cfg(*small(tiny_run, "trainer.max_steps=4")), whole)
    distill(distill_cfg(*small(tiny_run, "trainer.max_steps=2")), halves)
    distill(distill_cfg(*small(tiny_run, "trainer.max_steps=4")), halves)  # reuses pairs.pt
    a = checkpoint.load(whole / "checkpoints" / "last.pt")
    b = checkpoint.load(halves / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


@pytest.mark.slow
def test_a_conditional_teacher_gives_a_conditional_student_of_balanced_pairs(tmp_path):
    from conftest import train_tiny

    from ddpm.distill import distill

    teacher = train_tiny(tmp_path / "teacher", "model.num_classes=10")
    out = tmp_path / "student"
    distill(distill_cfg(*small(teacher, "trainer.max_steps=2")), out)
    saved = checkpoint.load(out / "pairs.pt")
    assert saved["labels"].tolist() == [i % 10 for i in range(24)]
    _, model, schedule = load_trained(teacher)
    solver = preset("sampler", "ddim", schedule=schedule, steps=5)
    z, labels = saved["z"][:16], saved["labels"][:16]
    again, _ = solver.sample(model, z.shape, x_T=z, labels=labels)
    assert torch.allclose(again, saved["x0"][:16], atol=1e-6)  # each image drawn for its label
    _, student, _ = load_trained(out)
    assert student.num_classes == 10


def test_pairs_of_another_teacher_setting_are_refused(tiny_run, tmp_path):
    from ddpm.distill import distill

    out = tmp_path / "s"
    distill(distill_cfg(*small(tiny_run, "trainer.max_steps=1")), out)
    with pytest.raises(UserError, match="pairs.pt came from another teacher"):
        distill(distill_cfg(*small(tiny_run, "trainer.max_steps=2", "pairs=8")), out)


@pytest.mark.parametrize(
    ("overrides", "message"),
    fast_only(
        [
            (["calls=[0]"], "error: calls=[0]: a list of distinct integers >= 1"),
            (["calls=[2,2]"], "error: calls=[2, 2]: a list of distinct integers >= 1"),
            (["pairs=0"], "error: pairs=0: an integer >= 1"),
            (["sampler=dpm_solver_pp_sde"], "error: sampler='dpm_solver_pp_sde': stochastic"),
            (["trainer.loss_weighting=min_snr"], "error: trainer.loss_weighting='min_snr': none"),
            (["trainer.label_dropout=0.1"], "error: trainer.label_dropout=0.1: 0 (each pair"),
            (["calls=[1,50]"], "error: calls=[1, 50]: call counts in 1..20"),
            (["student=heun"], "error: student='heun': a sampler config; pick another with"),
            (["sampler@student=heun"], "error: student='ddpm.samplers.heun.HeunSampler': DDIM"),
            (["trainer.resume=/nope.pt"], "error: trainer.resume='/nope.pt': no such"),
        ],
        fast=lambda case: case[0] == ["sampler=dpm_solver_pp_sde"],
    ),
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, overrides, message):
    out = tmp_path / "student"
    res = run_module("ddpm.distill", *small(tiny_run, *overrides), f"hydra.run.dir={out}")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_missing_teacher_is_one_line(tmp_path):
    out = tmp_path / "student"
    res = run_module("ddpm.distill", f"run_dir={tmp_path / 'nope'}", f"hydra.run.dir={out}")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: run_dir='{tmp_path / 'nope'}': no such directory"
    ]
    assert not out.exists()
