"""W&B runs read back from their local files, multirun sweeps, and the offline comparison."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import DATA_ROOT, REPO, TINY, TINY_WANDB, needs_mnist
from PIL import Image
from wandb_files import read_runs

from ddpm.compare import compare
from ddpm.configs.presets import preset
from ddpm.errors import UserError
from ddpm.run import run
from ddpm.runs.tracking import HydraJob, has_wandb_credentials, read_metrics

# Tiny jobs for sweeps on the command line (the conftest list minus the logger choice).
SWEEP_BASE = [o for o in TINY if not o.startswith("logger")] + ["logger.mode=offline"]


def sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT)}
    swept = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in SWEEP_BASE if o.split("=", 1)[0] not in swept]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ddpm.run",
            "-m",
            *overrides,
            *base,
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_mnist
def test_an_offline_run_holds_history_images_summary_and_config(make_cfg, tmp_path):
    summary = run(make_cfg(*TINY_WANDB), tmp_path)
    (wb,) = read_runs(tmp_path)
    assert wb.project == "ddpm" and wb.exit_code == 0
    assert wb.folder.parent == tmp_path / "wandb"  # never ./wandb in the launch dir
    losses = [r["loss"] for r in wb.history if "loss" in r]
    assert losses == [r["loss"] for r in read_metrics(tmp_path)] and len(losses) == 4
    assert all({"lr", "grad_norm", "images_per_s"} <= set(r) for r in wb.history if "loss" in r)
    images = [f for f in wb.files if f.startswith("media/images/samples/")]
    assert any("grid" in f for f in images) and any("progress" in f for f in images)
    local = {}
    for png in (tmp_path / "samples").glob("*.png"):
        with Image.open(png) as img:
            local[png.name] = (img.size, list(img.convert("RGB").getdata()))
    for f in images:  # each logged picture is one of the run's own files, pixel for pixel
        with Image.open(wb.folder / "files" / f) as img:
            logged = (img.size, list(img.convert("RGB").getdata()))
        assert logged in local.values(), f
    assert local["grid_0000004.png"][0] == (2 + 4 * 30, 2 + 30)  # 4 digits in one row
    assert wb.summary["final_loss"] == summary["final_loss"]
    assert wb.summary["steps"] == 4 and "images_per_s" in wb.summary
    assert wb.config["trainer"]["max_steps"] == 4  # the resolved config, as a plain dict
    assert wb.config["model"]["channels"] == [16, 32]


@needs_mnist
def test_missing_data_stops_the_run_before_anything_is_written(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match="MNIST is missing"):
        run(make_cfg(*TINY_WANDB, f"dataset.root={tmp_path / 'none'}"), run_dir)
    assert not run_dir.exists()  # no run folder, no W&B run
    assert not (tmp_path / "none").exists()  # no empty MNIST/raw left where data was sought


@needs_mnist
def test_a_job_failing_while_training_finishes_its_run_with_a_nonzero_code(make_cfg, tmp_path):
    with pytest.raises(UserError, match="loss is nan"):
        run(make_cfg(*TINY_WANDB, "optimizer.lr=1e30"), tmp_path)
    (wb,) = read_runs(tmp_path)
    assert wb.exit_code == 1


@pytest.mark.slow
@needs_mnist
def test_a_logging_failure_warns_once_and_training_goes_on(make_cfg, tmp_path, monkeypatch):
    calls = []

    def broken_log(self, *args, **kwargs):
        calls.append(1)
        raise ConnectionError("W&B is down")

    monkeypatch.setattr("wandb.sdk.wandb_run.Run.log", broken_log)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run(make_cfg(*TINY_WANDB), tmp_path)
    ours = [w for w in caught if "W&B logging failed" in str(w.message)]
    assert len(ours) == 1 and len(calls) == 1  # after one failure it stops trying
    assert summary["steps"] == 4 and len(read_metrics(tmp_path)) == 4


@needs_mnist
@pytest.mark.slow
def test_a_2x2_sweep_gives_4_runs_in_one_group_and_a_comparison(tmp_path):
    res = sweep(tmp_path, "model.time_dim=16,32", "schedule=linear,cosine")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(d for d in tmp_path.iterdir() if d.is_dir())
    assert [d.name for d in jobs] == ["0", "1", "2", "3"]
    runs = [r for d in jobs for r in read_runs(d)]
    assert len(runs) == 4 and len({r.run_id for r in runs}) == 4
    assert {r.group for r in runs} == {tmp_path.name}
    assert sorted(r.name for r in runs) == sorted(
        f"model.time_dim={d},schedule={s}" for d in (16, 32) for s in ("linear", "cosine")
    )
    for r in runs:
        assert r.exit_code == 0 and len([h for h in r.history if "loss" in h]) == 4
        assert any("grid" in f for f in r.files)
        assert f"schedule:{r.config['schedule']['_target_'].rsplit('.', 1)[1]}" in r.tags

    text = compare(tmp_path)
    assert text.count("| ok |") == 4
    assert "`model.time_dim=16,schedule=cosine`" in text
    assert "trainer.max_steps" not in text  # shared overrides are not labels
    md = (tmp_path / "comparison.md").read_text()
    final = json.loads((tmp_path / "3" / "summary.json").read_text())["final_loss"]
    assert f"{final:.4f}" in md
    with Image.open(tmp_path / "comparison.png") as img:
        assert img.size[0] > 400


@pytest.mark.slow
@needs_mnist
def test_a_failed_job_does_not_stop_the_others(tmp_path):
    res = sweep(tmp_path, "optimizer.lr=1e30,2e-4")  # job 0 diverges while training
    assert res.returncode != 0  # the sweep reports the failure
    assert (tmp_path / "0" / "FAILED").read_text().startswith("NonFiniteLoss: loss is")
    assert json.loads((tmp_path / "1" / "summary.json").read_text())["steps"] == 4
    assert read_runs(tmp_path / "0")[0].exit_code == 1
    assert read_runs(tmp_path / "1")[0].exit_code == 0
    text = compare(tmp_path)
    assert "| failed: NonFiniteLoss: loss is" in text and text.count("| ok |") == 1


def test_run_names_use_the_swept_keys(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: ['model=small,base', 'trainer.max_steps=5', 'x=[1,2]']\n"
        "  sweeper:\n    params:\n      optimizer.lr: 1e-4,1e-3\n"
    )
    job = HydraJob(["model=small", "trainer.max_steps=5", "optimizer.lr=1e-4"], {}, tmp_path)
    assert job.swept_keys() == {"model", "optimizer.lr"}
    assert job.run_name() == "model=small,optimizer.lr=1e-4"
    assert HydraJob(["model=base", "+x=1"], {}, None).run_name() == "model=base,x=1"


def test_credentials_come_from_the_environment_or_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not has_wandb_credentials()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert has_wandb_credentials()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert has_wandb_credentials()


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(UserError, match="logger.mode='sometimes': one of auto, online"):
        preset("logger", "wandb", run_dir=tmp_path, mode="sometimes")


def test_compare_on_a_missing_dir_is_one_line(tmp_path, capsys):
    from ddpm.compare import cli

    with pytest.raises(SystemExit) as ended:
        cli([str(tmp_path / "nope")])
    assert ended.value.code == f"error: sweep dir {str(tmp_path / 'nope')!r} does not exist"


def test_compare_tells_repeated_runs_apart_and_draws_single_points(tmp_path):
    """A job run twice with the same overrides, and one logged row per job: distinct labels,
    and a marker for each job's single point."""

    for job, loss, model in (("0", 0.5, "small"), ("1", 0.25, "small"), ("2", 0.1, "base")):
        folder = tmp_path / job
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n")
        (folder / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": loss}) + "\n")
        (folder / "summary.json").write_text(json.dumps({"final_loss": loss, "steps": 10}))
    text = compare(tmp_path)
    assert "`model=small (#0)`" in text and "`model=small (#1)`" in text
    assert "`model=base`" in text
    assert (tmp_path / "comparison.png").is_file()
    from ddpm.compare import loss_figure
    from ddpm.comparison.jobs import find_jobs

    lines = loss_figure(find_jobs(tmp_path), "t").axes[0].lines
    assert [line.get_label() for line in lines] == [
        "model=small (#0)",
        "model=small (#1)",
        "model=base",
    ]
    assert all(line.get_marker() == "o" and len(line.get_xdata()) == 1 for line in lines)
