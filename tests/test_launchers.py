"""Launcher presets (conf/hydra/launcher/): every sweep job keeps its own run dir and W&B run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, DATA_ROOT, TINY, needs_mnist
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from wandb_files import read_runs

from ddpm.configs.run_config import check_command_line
from ddpm.errors import UserError

# The conftest's tiny run minus dataset.root (the jobs must read DDPM_DATA_ROOT from the
# environment they inherit) and with an offline W&B run per job.
JOB = [o for o in TINY if not o.startswith(("dataset.root", "logger"))] + ["logger.mode=offline"]


def sweep(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m ddpm.run -m ...`` run from ``cwd`` (not the repo), one thread per job."""
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT), "WANDB_MODE": "offline"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "ddpm.run", "-m", *overrides, *JOB, "hydra.sweep.dir=sweep"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def job_runs(sweep_dir: Path, jobs: int) -> list:
    """Each job's dir holds exactly one W&B run; all runs differ and share the sweep's group."""
    assert sorted(d.name for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()) == [
        str(i) for i in range(jobs)
    ]
    runs = []
    for i in range(jobs):
        (wb,) = read_runs(sweep_dir / str(i))
        assert wb.folder.parent == sweep_dir / str(i) / "wandb"
        runs.append(wb)
    assert len({r.run_id for r in runs}) == jobs
    assert {r.group for r in runs} == {sweep_dir.name}
    return runs


@pytest.mark.parametrize(
    "option", ["slurm", "slurm_local", "local_parallel", "submitit_local", "joblib", "basic"]
)
def test_launcher_options_pass_the_command_line_check(option):
    check_command_line(["-m", f"hydra/launcher={option}", "model=small"])
    check_command_line([f"hydra/launcher={option}", "model=small"])


def test_an_unknown_launcher_is_one_line():
    with pytest.raises(UserError) as err:
        check_command_line(["-m", "hydra/launcher=slrum"])
    assert str(err.value).startswith("hydra/launcher='slrum': unknown hydra/launcher; allowed:")
    assert "local_parallel" in str(err.value) and "\n" not in str(err.value)


def test_the_slurm_preset_asks_sbatch_for_what_it_says(tmp_path, monkeypatch):
    """No SLURM here: stop at sbatch and read the script submitit wrote for a 2-job array."""
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=my_account",
                f"hydra.sweep.dir={tmp_path}",
                "hydra.job.name=ddpm",
            ],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    scripts = []

    class Submitted(Exception):
        pass

    def fake_submit(self, command):
        scripts.append(self._make_submission_file_text(command, "uid"))
        raise Submitted

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(SlurmExecutor, "_submit_command", fake_submit)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: 0.0, config=cfg)
    with pytest.raises(Submitted):
        launcher.launch([["model=small"], ["model=base"]], initial_job_idx=0)
    (script,) = scripts
    lines = set(script.splitlines())
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --account=my_account",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --array=0-1%2",  # %min(jobs, array_parallelism)
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
    ]:
        assert line in lines, script
    assert f"--output={tmp_path}/.submitit/%A_%a/%A_%a_0_log.out" in script


@needs_mnist
@pytest.mark.slow
def test_submitit_local_jobs_each_get_a_run_dir_and_a_wandb_run(tmp_path):
    res = sweep(tmp_path, "hydra/launcher=slurm_local", "schedule=linear,cosine")
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "sweep"  # relative to the launch dir: the job processes kept its cwd
    runs = job_runs(out, 2)
    assert sorted(r.name for r in runs) == ["schedule=cosine", "schedule=linear"]
    for i, wb in enumerate(runs):
        summary = json.loads((out / str(i) / "summary.json").read_text())
        assert summary["steps"] == 4 and wb.exit_code == 0
        assert wb.summary["final_loss"] == summary["final_loss"]
        assert wb.config["dataset"]["root"] == str(DATA_ROOT)  # from the inherited env
    assert len(list((out / ".submitit").glob("*/*_log.out"))) == 2  # submitit ran them


@needs_mnist
@pytest.mark.slow
def test_joblib_jobs_each_get_a_run_and_failures_stay_visible(tmp_path):
    """3 jobs on 2 workers, so one worker process runs two jobs: still one W&B run per job."""
    res = sweep(
        tmp_path,
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
        "optimizer.lr=2e-4,1e30,2e-4",  # job 1 diverges: it fails while training
    )
    assert res.returncode != 0  # the sweep reports its failed job
    out = tmp_path / "sweep"
    runs = job_runs(out, 3)
    assert [r.exit_code for r in runs] == [0, 1, 0]
    assert (out / "1" / "FAILED").read_text().startswith("NonFiniteLoss: loss is")
    assert not (out / "1" / "summary.json").exists()
    for i in (0, 2):
        assert json.loads((out / str(i) / "summary.json").read_text())["steps"] == 4
        assert not (out / str(i) / "FAILED").exists()
