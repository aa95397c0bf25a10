"""``python -m ddpm.sample`` and the run loader it shares with later commands."""

import json

import pytest
import torch
from conftest import run_module
from PIL import Image

from ddpm.errors import UserError
from ddpm.runs.load import load_trained, output_dir


def test_load_trained_rebuilds_the_run(tiny_run):
    cfg, model, schedule = load_trained(tiny_run)
    assert list(cfg.model.channels) == [16, 32] and len(schedule) == 20
    assert not model.training
    saved = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)


def test_missing_runs_and_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"^run_dir='.*nope': no such directory$"):
        load_trained(tmp_path / "nope")
    with pytest.raises(UserError, match=r"no checkpoints/last.pt in it"):
        load_trained(tmp_path)
    with pytest.raises(UserError, match=r"^checkpoint='.*x.pt': no such file$"):
        load_trained(None, tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"^run_dir: required"):
        load_trained(None)


def test_default_output_folders(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert output_dir(None, tmp_path / "run", ckpt, "samples", "ddim_50") == (
        tmp_path / "run" / "samples" / "ddim_50"
    )
    other = ckpt.with_name("step_0000020.pt")
    assert output_dir(None, None, other, "samples", "ddim_50") == (
        tmp_path / "run" / "samples" / "ddim_50_step_0000020"
    )
    assert output_dir(tmp_path / "o", None, other, "samples", "x") == tmp_path / "o"


@pytest.mark.slow
def test_sample_cli_writes_grid_strip_and_tensor(tiny_run):
    res = run_module(
        "ddpm.sample",
        f"run_dir={tiny_run}",
        "sampler=dpm_solver_pp",
        "sampler.steps=8",
        "num_samples=12",
        "device=cpu",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = tiny_run / "samples" / "dpm_solver_pp_8"
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (12, 1, 28, 28) and samples.dtype == torch.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0  # the x0 estimate is clamped
    with Image.open(out / "grid.png") as img:
        assert img.size == (2 + 8 * 30, 2 + 2 * 30)  # 12 digits, 8 per row, 2px padding
    with Image.open(out / "progress.png") as img:
        assert img.size[0] > 4 * img.size[1]
    info = json.loads((out / "sample.json").read_text())
    assert info["steps"] == 8 and info["num_samples"] == 12 and info["images_per_s"] > 0
    assert info["nfe"] == 8  # one network call per step for DPM-Solver++(2M)

    # Same seed, same samples; the checkpoint= form and out_dir= land where asked.
    again = tiny_run / "again"
    ckpt = tiny_run / "checkpoints" / "last.pt"
    res = run_module(
        "ddpm.sample",
        f"checkpoint={ckpt}",
        "sampler=dpm_solver_pp",
        "sampler.steps=8",
        "num_samples=12",
        "device=cpu",
        "progress=false",
        f"out_dir={again}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.equal(torch.load(again / "samples.pt", weights_only=True), samples)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run_dir=/nonexistent/run"], "error: run_dir='/nonexistent/run': no such directory"),
        ([], "error: run_dir: required, the folder of a training run (run_dir=outputs/...)"),
        (["run_dir=."], "error: run_dir='.': no checkpoints/last.pt in it"),
    ],
)
@pytest.mark.slow
def test_sample_cli_bad_input_is_one_line(overrides, message):
    res = run_module("ddpm.sample", *overrides)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr


@pytest.mark.slow
def test_sample_cli_checks_the_sampler_against_the_runs_schedule(tiny_run):
    res = run_module("ddpm.sample", f"run_dir={tiny_run}", "sampler.steps=50")  # T = 20
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: sampler.steps=50: null or 1..schedule.timesteps=20"
    ], res.stderr


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_generate_samples_in_channels_last_on_a_cpu_and_restores_the_layout(layout):
    """The same images as a contiguous network's within float tolerance, and the network
    comes back in the layout training gave it (trainer.channels_last or not)."""
    from ddpm.configs.presets import preset
    from ddpm.samplers.generate import generate, memory_format

    torch.manual_seed(0)
    model = preset("model", "res_tiny", channels=[8, 16, 32], time_dim=32)
    for p in model.parameters():  # the zero-initialised output layer would hide any difference
        p.data.normal_(0, 0.05)
    sampler = preset(
        "sampler", "ddim", schedule=preset("schedule", "linear", timesteps=20), steps=3
    )
    with torch.no_grad():
        x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        plain, _ = sampler.sample(model.eval(), x_T.shape, x_T=x_T)
    model.train().to(memory_format=layout)
    assert memory_format(model) == layout
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(memory_format(m)))
    generate(model, sampler, 3, 1, torch.device("cpu"))
    assert seen and set(seen) == {torch.channels_last}
    assert memory_format(model) == layout and model.training
    again, _ = generate(model, sampler, 3, 0, torch.device("cpu"))
    assert torch.isfinite(again).all()
    with torch.no_grad():
        model.eval().to(memory_format=torch.channels_last)
        last, _ = sampler.sample(model, x_T.shape, x_T=x_T)
    assert torch.allclose(last, plain, atol=1e-5)
