"""The real entry point, run the way a user runs it, and the files it leaves behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT, REPO, TINY, needs_mnist
from PIL import Image

from ddpm.run import run
from ddpm.runs import checkpoint
from ddpm.runs.tracking import read_metrics


def run_cli(*overrides: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "ddpm.run", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_mnist
@pytest.mark.slow
def test_a_short_small_run_leaves_every_file_and_learns(tmp_path):
    out = tmp_path / "run"
    res = run_cli(
        "recipe=seed",
        "model=small",
        "schedule=linear",
        "trainer.max_steps=40",
        "trainer.log_every=10",
        "trainer.checkpoint_every=20",
        "trainer.sample_every=20",
        "trainer.num_samples=16",
        "sampler.steps=50",
        "device=cpu",
        f"hydra.run.dir={out}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    # Not a terminal: the plan first, one line per logged row instead of a bar, a summary last.
    log = res.stdout
    assert "; 40 steps" in log and "757,505 parameters" in log
    assert log.count("plan:") == 1  # once, also on a first start
    assert [ln.split("] - ")[1].split(":")[0] for ln in log.splitlines() if "] - step " in ln] == [
        "step 10/40 (epoch 0)",
        "step 20/40 (epoch 0)",
        "step 30/40 (epoch 0)",
        "step 40/40 (epoch 0)",
    ]
    assert "train:" not in res.stderr  # no tqdm bar redrawn into a log file
    assert f"checkpoint: {out / 'checkpoints' / 'last.pt'}" in log and "final loss" in log

    for name in ["config.yaml", "overrides.yaml", "hydra.yaml"]:
        assert (out / ".hydra" / name).is_file()
    last = checkpoint.load(out / "checkpoints" / "last.pt")
    assert last["step"] == 40 and last["config"]["model"]["channels"] == [32, 64, 128]
    assert checkpoint.load(out / "checkpoints" / "step_0000020.pt")["step"] == 20
    for png in ["samples/grid_0000020.png", "samples/grid_0000040.png", "loss.png"]:
        with Image.open(out / png) as img:
            assert img.size[0] > 28
    with Image.open(out / "samples" / "progress.png") as img:
        assert img.size[0] > 4 * img.size[1]  # a strip of 8 panels
    with Image.open(out / "samples" / "grid_0000040.png") as img:
        assert img.size == (2 + 8 * 30, 2 + 2 * 30)  # 16 digits, 8 per row, 2px padding

    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert set(rows[0]) >= {"step", "epoch", "loss", "lr", "images_per_s"}
    assert rows[0]["lr"] == pytest.approx(2e-4)
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"], [r["loss"] for r in rows]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["num_parameters"] == 757_505

    # The checkpoint restores the network it came from.
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    model = instantiate(OmegaConf.create(last["config"]).model)
    model.load_state_dict(last["model"])


@pytest.mark.slow
@needs_mnist
def test_same_seed_same_losses_and_weights(make_cfg, tmp_path):
    cfg = make_cfg(*TINY)
    first = run(cfg, tmp_path / "a")
    second = run(cfg, tmp_path / "b")
    losses = [[r["loss"] for r in read_metrics(tmp_path / d)] for d in "ab"]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert first["final_loss"] == second["final_loss"]
    wa = checkpoint.load(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    wb = checkpoint.load(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = run(make_cfg(*TINY, "trainer.seed=1"), tmp_path / "c")
    assert other["final_loss"] != first["final_loss"]


@pytest.mark.slow
@needs_mnist
def test_max_steps_wins_over_epochs(make_cfg, tmp_path):
    summary = run(make_cfg(*TINY, "trainer.epochs=3", "trainer.max_steps=2"), tmp_path)
    assert summary["steps"] == 2


@pytest.mark.slow
def test_a_bad_config_is_one_line_and_a_nonzero_exit(tmp_path):
    res = run_cli("model.channels=[30,60]", f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "error: model.channels=[30, 60]: every width divisible by model.norm_groups=8"
    ], res.stderr
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.batch_size=-1"], "error: trainer.batch_size=-1: an integer >= 1"),
        (["dataset.download=false"], "error: dataset.root="),
        (
            ["dataset=image_folder", "dataset.root={images}", "trainer.eval_every=5"],
            "error: trainer.eval_every=5: no trained evaluator for image folders",
        ),
    ],
)
@pytest.mark.slow
def test_a_rejected_start_leaves_no_folder_behind(tmp_path_factory, overrides, message):
    """A bad value, data that is not there, or quality measurement where no evaluator exists:
    one line, exit 1, and the launch folder is as it was (no outputs/<date>/<time>, no W&B
    run, no empty data/MNIST/raw)."""
    launch = tmp_path_factory.mktemp("launch")
    images = tmp_path_factory.mktemp("images")
    Image.new("L", (28, 28)).save(images / "a.png")
    overrides = [o.format(images=images) for o in overrides]
    env_root = {"DDPM_DATA_ROOT": str(launch / "nowhere")} if "download" in overrides[0] else {}
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **env_root}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddpm.run",
            *overrides,
            "logger.mode=offline",
            "trainer.max_steps=1",
        ],
        cwd=launch,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(message), res.stderr
    assert sorted(p.name for p in launch.iterdir()) == []


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("option", ["trainer.precision=bf16", "trainer.channels_last=true"])
def test_speed_options_train_to_nearly_the_same_losses(make_cfg, tmp_path, option):
    plain = run(make_cfg(*TINY), tmp_path / "plain")
    other = run(make_cfg(*TINY, option), tmp_path / "other")
    a = [r["loss"] for r in read_metrics(tmp_path / "plain")]
    b = [r["loss"] for r in read_metrics(tmp_path / "other")]
    assert len(a) == len(b) == 4
    assert b == pytest.approx(a, rel=0.05)  # same data and noise; only rounding differs
    assert plain["steps"] == other["steps"]


@pytest.mark.slow
def test_a_compiled_network_and_channels_last_give_eager_outputs_within_float_tolerance():
    """What trainer.compile (inductor on the CPU) and channels_last change: rounding only."""
    from ddpm.configs.presets import preset

    model = preset("model", "res_tiny", channels=[8, 16, 32], time_dim=32).eval()
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        eager = model(x, t)
        compiled = torch.compile(model)(x, t)
        model.to(memory_format=torch.channels_last)
        last = model(x.contiguous(memory_format=torch.channels_last), t)
    scale = eager.abs().max()
    assert (compiled - eager).abs().max() <= 1e-4 * scale
    assert (last - eager).abs().max() <= 1e-4 * scale


@needs_mnist
def test_fp16_off_cuda_is_refused(make_cfg, tmp_path):
    from ddpm.errors import UserError

    with pytest.raises(UserError, match="trainer.precision='fp16': CUDA only here"):
        run(make_cfg(*TINY, "trainer.precision=fp16"), tmp_path)
