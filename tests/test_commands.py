"""Every command shares one front end: --help, a console script, one-line errors, exit 1."""

import importlib
import os
import shutil
import subprocess

import pytest
import torch
from conftest import DATA_ROOT, REPO

COMMANDS = {
    "run": "ddpm.run",
    "sample": "ddpm.sample",
    "evaluate": "ddpm.evaluate.command",
    "denoise": "ddpm.denoise",
    "compare": "ddpm.compare",
    "bench": "ddpm.bench",
    "search": "ddpm.search",
    "plan": "ddpm.plan",
    "distill": "ddpm.distill",
    "build-evaluator": "ddpm.evaluate.build",
}
SHARED_CHECKPOINT = REPO.parent / "shared" / "checkpoints" / "small-cosine-ema-22ep.pt"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_answers_help_with_its_keys(name, capsys):
    cli = importlib.import_module(COMMANDS[name]).cli
    assert cli(["--help"]) is None
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ddpm-{name} [key=value ...]")
    assert "Keys and defaults" in out and ":" in out.split("Keys and defaults")[1]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_refuses_a_bad_override_in_one_line(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = importlib.import_module(COMMANDS[name]).cli
    with pytest.raises(SystemExit) as ended:
        cli(["no_such_group.key=1"])
    message = str(ended.value.code)
    assert message.startswith("error: Could not override 'no_such_group.key'"), message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # nothing was created


SEED_KEYS = {
    "run": "trainer.seed",
    "sample": "seed",
    "evaluate": "seed",
    "denoise": "seed",
    "search": "search.seed",
    "build-evaluator": "seed",
}


@pytest.mark.parametrize("name", list(SEED_KEYS))
@pytest.mark.parametrize(("value", "shown"), [("abc", "'abc'"), ("1.5", "1.5"), ("-1", "-1")])
def test_every_seed_key_refuses_a_non_integer_in_one_line(
    name, value, shown, tmp_path, monkeypatch
):
    """``seed=abc`` once ended in torch's ``manual_seed expected a long`` traceback."""
    monkeypatch.chdir(tmp_path)
    key = SEED_KEYS[name]
    cli = importlib.import_module(COMMANDS[name]).cli
    with pytest.raises(SystemExit) as ended:
        cli(
            [f"run_dir={tmp_path / 'nope'}"] * (name in ("sample", "evaluate", "denoise"))
            + [f"{key}={value}"]
        )
    assert ended.value.code == f"error: {key}={shown}: an integer >= 0"
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_a_bad_key_of_a_sampling_command_names_the_key(tmp_path):
    """What a new user tried: dataset.root exists on every command that reads data."""
    from ddpm.evaluate.command import cli

    with pytest.raises(SystemExit) as ended:
        cli([f"run_dir={tmp_path}", "trainer.max_steps=3"])
    assert "trainer.max_steps" in str(ended.value.code) and "\n" not in str(ended.value.code)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ddpm-run") is None, reason="the package is not installed")
def test_console_scripts_are_installed_and_exit_1_on_bad_input(tmp_path):
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT)}
    for name in COMMANDS:
        assert shutil.which(f"ddpm-{name}"), name
    res = subprocess.run(
        ["ddpm-sample", f"run_dir={tmp_path / 'nope'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert (
        res.stderr.strip().splitlines()[-1]
        == f"error: run_dir='{tmp_path / 'nope'}': no such directory"
    )


@pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(), reason="no shared checkpoint")
def test_a_checkpoint_written_before_this_layout_still_samples():
    """The shared GPU checkpoint (older code: dataset target ddpm.data.mnist, trainer without a
    target) rebuilds and samples; its EMA weights draw digit-like images, not noise."""
    from ddpm.configs.presets import preset
    from ddpm.runs.load import load_trained
    from ddpm.samplers.generate import generate

    cfg, model, schedule = load_trained(None, SHARED_CHECKPOINT)
    assert cfg.dataset._target_ == "ddpm.data.mnist" and len(schedule) == 1000
    images, _ = generate(
        model, preset("sampler", "ddim", schedule=schedule, steps=10), 4, 0, torch.device("cpu")
    )
    assert images.shape == (4, 1, 28, 28)
    background = (images < -0.9).float().mean().item()
    assert 0.5 < background < 0.95  # mostly black background with strokes, like MNIST (0.81)


def test_python_m_ddpm_evaluate_is_the_evaluate_command(capsys, monkeypatch):
    import runpy

    monkeypatch.setattr("sys.argv", ["ddpm.evaluate", "--help"])
    runpy.run_module("ddpm.evaluate", run_name="__main__")
    assert capsys.readouterr().out.startswith("usage: ddpm-evaluate [key=value ...]")
