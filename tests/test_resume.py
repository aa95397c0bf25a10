"""Crash safety: kill -9 and resume, SIGINT/SIGTERM, non-finite loss, atomic checkpoints."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT, REPO, TINY, TINY_WANDB, needs_mnist
from wandb_files import read_runs

from ddpm.errors import UserError
from ddpm.run import run
from ddpm.runs import checkpoint
from ddpm.runs.tracking import read_metrics
from ddpm.training.state import NonFiniteLoss

# A run long enough to interrupt: checkpoints every 3 steps, a row per step, offline W&B.
RESUMABLE = [o for o in TINY_WANDB if not o.startswith("trainer.max_steps")] + [
    "trainer.checkpoint_every=3",
    "trainer.keep_last=null",
]


def start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "ddpm.run", *RESUMABLE, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_for(proc: subprocess.Popen, text: str) -> None:
    """Reads the job's log (blocking, no sleeps) until a line contains ``text``."""
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"process ended before logging {text!r}")


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


@needs_mnist
@pytest.mark.slow
def test_kill_9_then_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ref = start(whole, "trainer.max_steps=12")
    ref.communicate()
    assert ref.returncode == 0

    victim = start(broken, "trainer.max_steps=12")
    wait_for(victim, "checkpoint at step 6")
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    killed_at = checkpoint.load(broken / "checkpoints" / "last.pt")["step"]
    assert 6 <= killed_at < 12

    resumed = start(broken, "trainer.max_steps=12")  # resume=auto: the same command again
    resumed.communicate()
    assert resumed.returncode == 0

    assert losses(broken) == losses(whole) and len(losses(whole)) == 12
    a = checkpoint.load(whole / "checkpoints" / "last.pt")
    b = checkpoint.load(broken / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    # Both processes wrote to the same W&B run id (the killed one may not have flushed its
    # records, so its id is read from its folder name, offline-run-<date>-<id>).
    runs = read_runs(broken)
    assert len(runs) == 2 and {r.folder.name.rsplit("-", 1)[1] for r in runs} == {
        b["tracker_run_id"]
    }
    assert runs[-1].run_id == b["tracker_run_id"] and runs[-1].exit_code == 0


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_checkpoints_at_a_step_boundary_and_exits_cleanly(tmp_path, sig):
    proc = start(tmp_path, "trainer.max_steps=100000")
    wait_for(proc, "checkpoint at step 3")
    proc.send_signal(sig)
    rest, _ = proc.communicate()
    assert proc.returncode == 128 + sig  # 130 / 143, the shell's convention
    assert f"hydra.run.dir={tmp_path}" in rest  # the exact command that continues this run
    last = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert 3 <= last["step"] < 100000
    assert [s for s, _ in losses(tmp_path)] == list(range(1, last["step"] + 1))
    (wb,) = read_runs(tmp_path)
    assert wb.exit_code == 128 + sig


@pytest.mark.slow
@needs_mnist
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_WANDB, "optimizer.lr=1e30", "trainer.checkpoint_every=1")
    with pytest.raises(NonFiniteLoss, match=r"loss is (nan|inf) at step \d") as err:
        run(cfg, tmp_path)
    bad_step = int(str(err.value).split(" at step ")[1].split(":")[0])
    good = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert good["step"] == bad_step - 1
    (wb,) = read_runs(tmp_path)
    assert wb.exit_code == 1  # the W&B run is marked failed


@pytest.mark.slow
@needs_mnist
def test_periodic_checkpoints_keep_only_the_newest(make_cfg, tmp_path):
    cfg = make_cfg(
        *TINY, "trainer.max_steps=10", "trainer.checkpoint_every=2", "trainer.keep_last=2"
    )
    run(cfg, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000006.pt", "step_0000008.pt"]


@needs_mnist
def test_a_checkpoint_holds_everything_resume_needs(make_cfg, tmp_path):
    run(make_cfg(*TINY), tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "progress", "rng", "config", "tracker_run_id", "step"} <= set(
        state
    )
    assert state["progress"]["step"] == 4 and state["progress"]["epoch"] == 0
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert [s for s, _ in state["progress"]["history"]] == [1, 2, 3, 4]
    # Checkpoints written before the key was the tracker's still name their W&B run.
    assert checkpoint.run_id({"wandb_run_id": "abc123"}) == "abc123"
    assert checkpoint.run_id({"tracker_run_id": "def", "wandb_run_id": "old"}) == "def"


@pytest.mark.slow
@needs_mnist
def test_resume_from_a_named_checkpoint_of_another_architecture_is_refused(make_cfg, tmp_path):
    run(make_cfg(*TINY), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    cfg = make_cfg(*TINY, "model.channels=[8,16]", f"trainer.resume={ckpt}")
    with pytest.raises(UserError, match="does not fit this model") as err:
        run(cfg, tmp_path / "b")
    assert "\n" not in str(err.value) and str(ckpt) in str(err.value)


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"step": 1, "w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if the process were killed mid-write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"step": 2, "w": torch.zeros(3)}, path)
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_a_truncated_checkpoint_is_one_clear_line(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save({"step": 1, "w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="is not a readable ddpm checkpoint") as err:
        checkpoint.load(path)
    assert "\n" not in str(err.value)


def test_a_missing_resume_checkpoint_is_refused(tmp_path):
    with pytest.raises(UserError, match="trainer.resume='.*nope.pt': no such checkpoint file"):
        checkpoint.resume_path(str(tmp_path / "nope.pt"), tmp_path)
    assert checkpoint.resume_path("auto", tmp_path) is None
    assert checkpoint.resume_path("never", tmp_path) is None


@pytest.mark.slow
@needs_mnist
def test_ema_follows_its_recursion_and_resumes_exactly(make_cfg, tmp_path):
    ema_cfg = [
        *TINY,
        "trainer.ema_decay=0.25",
        "trainer.checkpoint_every=1",
        "trainer.keep_last=null",
    ]
    run(make_cfg(*ema_cfg), tmp_path / "whole")
    ckpts = tmp_path / "whole" / "checkpoints"
    weights = [checkpoint.load(ckpts / f"step_{s:07d}.pt")["model"] for s in (1, 2, 3)]
    weights.append(checkpoint.load(ckpts / "last.pt")["model"])
    expected = {k: v.clone() for k, v in weights[0].items()}  # the first update copies
    for n, w in enumerate(weights[1:], start=1):
        d = min(0.25, (1 + n) / (10 + n))  # warm-up 2/11, then the set 0.25, 0.25
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in expected}
    last = checkpoint.load(ckpts / "last.pt")
    assert last["ema_updates"] == 4
    for k, v in expected.items():
        torch.testing.assert_close(last["ema"][k], v, rtol=1e-6, atol=1e-7)

    # Two steps, then the same command with max_steps=4 in the same dir: the same EMA.
    run(make_cfg(*ema_cfg, "trainer.max_steps=2"), tmp_path / "halves")
    run(make_cfg(*ema_cfg), tmp_path / "halves")
    again = checkpoint.load(tmp_path / "halves" / "checkpoints" / "last.pt")
    assert all(torch.equal(again["ema"][k], last["ema"][k]) for k in last["ema"])
    assert losses(tmp_path / "halves") == losses(tmp_path / "whole")

    from ddpm.runs.load import load_trained

    _, model, _ = load_trained(tmp_path / "whole")  # sampling commands use the EMA weights
    assert all(torch.equal(v, last["ema"][k]) for k, v in model.state_dict().items())


@needs_mnist
@pytest.mark.slow
def test_a_killed_sweep_resumes_each_job_where_it_stopped(tmp_path):
    """kill -9 during job #1 of three, then the same sweep command on the same folder: job #0
    is left as it was, job #1 continues from its own checkpoint (bit for bit the uninterrupted
    run, its W&B run resumed), job #2 runs, and a stale FAILED file is gone."""
    sweep, whole = tmp_path / "sweep", tmp_path / "whole"
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT)}
    command = [
        sys.executable, "-m", "ddpm.run", "-m", *RESUMABLE, "trainer.max_steps=9",
        "trainer.seed=0,1,2", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip

    def launch() -> subprocess.Popen:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    victim = launch()
    wait_for(victim, f"checkpoint at step 6: {sweep / '1'}")
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert (sweep / "0" / "summary.json").is_file() and not (sweep / "2").exists()
    assert not (sweep / "1" / "summary.json").exists()
    killed_at = checkpoint.load(sweep / "1" / "checkpoints" / "last.pt")["step"]
    assert 6 <= killed_at < 9
    (sweep / "1" / "FAILED").write_text("RuntimeError: as if it had failed\n")

    def outputs(job: Path) -> dict[Path, int]:
        """What the job wrote (Hydra rewrites .hydra/ and appends to its log each launch)."""
        kept = [p for p in job.rglob("*") if p.is_file() and ".hydra" not in p.parts]
        return {p: p.stat().st_mtime_ns for p in kept if p.suffix != ".log"}

    first = outputs(sweep / "0")

    again = launch()
    log, _ = again.communicate()
    assert again.returncode == 0, log[-2000:]
    assert f"already finished, skipped: {sweep / '0'}" in log
    assert f"resumed at step {killed_at}" in log
    assert outputs(sweep / "0") == first and len(first) > 5
    assert not (sweep / "1" / "FAILED").exists()
    assert [len(losses(sweep / str(job))) for job in range(3)] == [9, 9, 9]

    ref = start(whole, "trainer.max_steps=9", "trainer.seed=1")
    ref.communicate()
    assert losses(sweep / "1") == losses(whole)
    a = checkpoint.load(whole / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(sweep / "1" / "checkpoints" / "last.pt")
    assert all(torch.equal(a[k], b["model"][k]) for k in a)
    runs = read_runs(sweep / "1")
    assert len(runs) == 2 and {r.folder.name.rsplit("-", 1)[1] for r in runs} == {
        b["tracker_run_id"]
    }
