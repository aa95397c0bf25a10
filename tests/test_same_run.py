"""A sweep job reuses a folder (skips it, or resumes from its last.pt) only when the folder
holds a run of the job's own config; experiment presets give every swept key its own folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_ROOT, REPO, TINY, needs_mnist

from ddpm.configs.later_keys import LATER_KEYS
from ddpm.errors import UserError
from ddpm.runs.same_run import MAY_DIFFER, check_same_run, differing_keys
from ddpm.runs.tracking import read_metrics

STORED = {"trainer": {"seed": 0, "max_steps": 10, "lr": 1e-3}, "model": {"channels": [16, 32]}}


def test_only_keys_outside_the_budget_and_tracker_count():
    job = {
        "trainer": {"seed": 0, "max_steps": 50, "lr": 1e-3, "resume": "auto"},
        "model": {"channels": [16, 32]},
        "logger": {"mode": "offline"},
    }
    assert differing_keys(STORED, job) == []
    assert "trainer.max_steps" in MAY_DIFFER
    job["trainer"]["seed"] = 1
    job["model"]["channels"] = [16, 64]
    job["process"] = {"levels": 1000}
    assert differing_keys(STORED, job) == ["model.channels", "process.levels", "trainer.seed"]


def test_a_run_written_before_a_key_existed_matches_only_the_keys_old_behaviour():
    """The stored record lacks trainer.lr_schedule: a job with constant (what the run did)
    resumes it; a job asking for a decay is another run."""
    job = {"trainer": {"seed": 0, "max_steps": 10, "lr": 1e-3, "lr_schedule": "constant"},
           "model": {"channels": [16, 32]}}  # fmt: skip
    assert LATER_KEYS["trainer.lr_schedule"] == "constant"
    assert differing_keys(STORED, job) == []
    job["trainer"]["lr_schedule"] = "linear"
    assert differing_keys(STORED, job) == ["trainer.lr_schedule"]


def test_another_config_is_refused_in_one_line_naming_the_folder_and_keys(tmp_path):
    job = {"trainer": {"seed": 1, "max_steps": 10, "lr": 1e-3}, "model": {"channels": [16, 32]}}
    with pytest.raises(UserError) as err:
        check_same_run(STORED, job, tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "trainer.seed 0 -> 1" in message
    check_same_run(STORED, dict(STORED), tmp_path)  # the same run: allowed


def env() -> dict[str, str]:
    return {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT), "WANDB_MODE": "offline"}


@needs_mnist
@pytest.mark.slow
def test_a_two_seed_sweep_of_an_experiment_preset_trains_two_runs(tmp_path):
    """The reproduction of the defect: before, seed 1 was 'already finished, skipped' in seed
    0's folder and reported seed 0's result. Then a job sent into the other seed's folder is
    refused and leaves it as it was."""
    tiny = [
        o for o in TINY if not o.startswith(("recipe=", "schedule.", "trainer.max_steps", "model."))
    ]
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "ddpm.run", "-m", "+experiment=formulations",
        "+formulation=ddpm_eps", "trainer.seed=0,1", "trainer.max_steps=3",
        "trainer.sample_every=0", "sampler.steps=2", *tiny, f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already finished" not in done.stdout + done.stderr
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [f.split(",")[0] for f in folders] == ["ddpm_eps", "ddpm_eps"]
    assert [f.rsplit(",", 1)[1] for f in folders] == ["trainer.seed=0", "trainer.seed=1"]
    runs = [[r["loss"] for r in read_metrics(sweep / name)] for name in folders]
    assert len(runs[0]) == len(runs[1]) == 3 and runs[0] != runs[1]

    seed0 = sweep / folders[0]
    before = {p: p.stat().st_mtime_ns for p in seed0.rglob("*") if _kept(p)}
    into_seed0 = [
        *command[:6],
        "trainer.seed=1",
        *command[7:],
        f"hydra.sweep.subdir='{folders[0]}'",
    ]
    refused = subprocess.run(into_seed0, cwd=REPO, env=env(), capture_output=True, text=True)
    said = refused.stdout + refused.stderr
    assert "holds a run of another config (trainer.seed 0 -> 1)" in said
    assert {p: p.stat().st_mtime_ns for p in seed0.rglob("*") if _kept(p)} == before
    assert not (seed0 / "FAILED").exists()


def _kept(path: Path) -> bool:
    """The run's own files (Hydra rewrites .hydra/ and appends to its log on every launch)."""
    return path.is_file() and ".hydra" not in path.parts and path.suffix != ".log"
