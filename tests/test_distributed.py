"""Data-parallel training under torchrun (gloo on the CPU) trains the model one process would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import DATA_ROOT, REPO, TINY, needs_mnist

from ddpm.hardware.distributed import Ranks
from ddpm.runs.tracking import read_metrics

# A global batch of 13 splits 7 + 6: uneven parts must still give the one-process loss.
DDP_RUN = [
    *(o for o in TINY if not o.startswith("trainer.batch_size")),
    "trainer.batch_size=13",
    "recipe=seed",  # what make_cfg composes by default; the bare command line picks cpu
]


@pytest.mark.parametrize(("world", "batch"), [(2, 13), (2, 12), (3, 8), (1, 5)])
def test_parts_cover_the_batch_once(world: int, batch: int) -> None:
    parts = [Ranks(r, world).part(batch) for r in range(world)]
    covered = torch.cat([torch.arange(batch)[p] for p in parts])
    assert torch.equal(covered, torch.arange(batch))


def torchrun(nproc: int, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", "-m", "ddpm.run", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# process=meanflow: the JVP target runs on the unwrapped network, the gradient through DDP
MEANFLOW_RUN = [*(o for o in DDP_RUN if not o.startswith("schedule.")), "process=meanflow"]


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("overrides", [DDP_RUN, MEANFLOW_RUN], ids=["ddpm", "meanflow"])
def test_two_gloo_processes_match_one_process(tmp_path, make_cfg, one_thread, overrides) -> None:
    from ddpm.run import run

    single = tmp_path / "single"
    run(make_cfg(*overrides), single)
    ddp = tmp_path / "ddp"
    res = torchrun(2, *overrides, f"hydra.run.dir={ddp}")
    assert res.returncode == 0, res.stderr[-3000:]

    one, two = read_metrics(single), read_metrics(ddp)
    assert [r["step"] for r in two] == [1, 2, 3, 4]  # rank 0 alone wrote the rows
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    w1 = torch.load(single / "checkpoints" / "last.pt", weights_only=True)["model"]
    w2 = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-6)
    assert json.loads((ddp / "summary.json").read_text())["steps"] == 4


@needs_mnist
@pytest.mark.slow
def test_ddp_run_resumes(tmp_path, make_cfg, one_thread) -> None:
    """Two torchrun launches (2 steps, then on to 4) give the uninterrupted run's losses."""
    from ddpm.run import run

    whole = tmp_path / "whole"
    run(make_cfg(*DDP_RUN), whole)
    ddp = tmp_path / "ddp"
    first = [o for o in DDP_RUN if not o.startswith("trainer.max_steps")]
    res = torchrun(2, *first, "trainer.max_steps=2", f"hydra.run.dir={ddp}")
    assert res.returncode == 0, res.stderr[-3000:]
    res = torchrun(2, *DDP_RUN, f"hydra.run.dir={ddp}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed at step 2" in res.stdout + res.stderr  # not a fresh start
    resumed = [r["loss"] for r in read_metrics(ddp)]
    assert resumed == pytest.approx([r["loss"] for r in read_metrics(whole)], rel=1e-5)
