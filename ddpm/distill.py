"""``python -m ddpm.distill run_dir=<teacher run>``: a student that samples in 1, 2 or 4 calls.

Reflow on teacher pairs (:mod:`ddpm.training.reflow`): the teacher's deterministic solver
(``sampler``, the ``ode10`` preset by default) maps ``pairs`` noises to images once; the student,
the teacher's network and weights to start, then learns to reach each image from its noise in
``calls`` DDIM steps on the trailing plan (``student``). Why reflow: it needs one pass of the
teacher, not one per training step, which is what a CPU can afford, and one student serves
every call count it trained for.

The student is a training run of its own (the teacher's config with the student's sampler,
optimizer and trainer), so checkpoints, exact resume, W&B and ``ddpm.sample``/``ddpm.evaluate``
(``sampler=distilled sampler.steps=<calls>``) work as for any run; ``distill.json`` in it names
the teacher.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ddpm.configs.presets import build
from ddpm.configs.run_config import Parts, build_process
from ddpm.errors import UserError, fail, is_int, require
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.hardware import distributed
from ddpm.hardware.devices import pick_device
from ddpm.run import is_fresh, remove_run_dir, train_run
from ddpm.runs import checkpoint as ckpt
from ddpm.runs.load import load_for_sampling
from ddpm.samplers.generate import balanced_labels
from ddpm.training.loop import Interrupted
from ddpm.training.reflow import ReflowLoss, pair_dataset, teacher_pairs

log = logging.getLogger("ddpm")
PAIRS_FILE = "pairs.pt"


def check_settings(cfg: DictConfig) -> list[int]:
    """The command's own keys, each a one-line error; returns ``calls`` as a sorted list."""
    for key in ("pairs", "pair_batch"):
        require(is_int(cfg[key], 1), key, cfg[key], "an integer >= 1")
    calls = OmegaConf.to_container(cfg.calls) if OmegaConf.is_list(cfg.calls) else cfg.calls
    ok = isinstance(calls, list) and calls and all(is_int(c, 1) for c in calls)
    require(
        ok and len(set(calls)) == len(calls), "calls", calls, "a list of distinct integers >= 1"
    )
    weighting = cfg.trainer.loss_weighting
    require(weighting == "none", "trainer.loss_weighting", weighting, "none (the x0 error)")
    return sorted(calls)


def student_config(cfg: DictConfig, teacher: DictConfig, calls: list[int]) -> DictConfig:
    """The teacher's run config with the student's sampler, optimizer, trainer, logger and
    device: what the student's checkpoints record, so it reloads like any run."""
    node = OmegaConf.to_container(teacher, resolve=True)
    node.setdefault("process", {"_target_": "ddpm.processes.DDPMProcess"})  # pre-process runs
    for key in ("optimizer", "trainer", "logger"):
        node[key] = OmegaConf.to_container(cfg[key], resolve=True)
    node["sampler"] = {**OmegaConf.to_container(cfg.student, resolve=True), "steps": calls[0]}
    node["device"], node["experiment_name"] = cfg.device, "distill"
    if (
        node["process"]["_target_"].endswith("DDPMProcess")
        and node["model"].get("prediction", "eps") == "eps"
    ):
        # an eps network's x0 estimate divides by sqrt(alpha_bar), about 1e-4 at the top row,
        # so a 1-call eps student cannot be accurate; v gives x0 = a x - s v there
        node["model"]["prediction"] = "v"
    return OmegaConf.create(node)


def load_pairs(path: Path, about: dict[str, Any]) -> tuple[torch.Tensor, ...] | None:
    """The pairs a previous start of this run drew with the same teacher and settings."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("about") != about:
        fail(
            "run dir",
            str(path.parent),
            f"its {PAIRS_FILE} came from another teacher or settings; use a new folder",
        )
    return saved["x0"], saved["z"], saved["labels"]


def distill(cfg: DictConfig, run_dir: Path, teacher_name: str = "sampler") -> dict[str, Any]:
    """Draws (or reloads) the pairs, then trains the student in ``run_dir``; its summary."""
    calls = check_settings(cfg)
    job = load_for_sampling(cfg)  # the teacher, with the pairs' solver
    if job.sampler.stochastic:
        fail("sampler", teacher_name, "stochastic; the pairs need a deterministic solver")
    device = pick_device(cfg.device)
    config = student_config(cfg, job.config, calls)
    settings = build(config.trainer)
    process = build_process(config).to(device)
    grid = process.grid
    plans = [build(config.sampler, schedule=grid, steps=k).timesteps for k in calls]
    student = copy.deepcopy(job.model).to(device).train()  # the teacher's weights to start
    prediction = student.prediction = config.model.get("prediction", "eps")
    parts = Parts(
        settings=settings,
        model=student,
        schedule=grid,
        sampler=build(config.sampler, schedule=grid),
        optimizer=build(config.optimizer)(student.parameters()),
        dataset=None,  # the pairs are the data
        logger=build(config.logger, _partial_=True),
        process=ReflowLoss(grid, plans, prediction),
    )
    for group in parts.optimizer.param_groups:
        group["lr"] *= settings.lr_factor()

    about = {
        "teacher": str(job.checkpoint.resolve()),
        "ema": job.ema,
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "pairs": cfg.pairs,
        "seed": settings.seed,
    }
    path = run_dir / PAIRS_FILE
    pairs = load_pairs(path, about)
    if pairs is None:
        start = time.perf_counter()
        labels = balanced_labels(job.model, cfg.pairs)
        x0, z = teacher_pairs(
            job.model, job.sampler, cfg.pairs, cfg.pair_batch, settings.seed, job.device, labels
        )
        took = time.perf_counter() - start
        log.info("%d teacher pairs in %.1f s (%s calls each)", cfg.pairs, took, job.sampler.nfe)
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save({"about": about, "x0": x0, "z": z, "labels": labels}, path)
        record = {**about, "calls": calls, "plans": plans, "pair_seconds": took}
        (run_dir / "distill.json").write_text(json.dumps(record, indent=2) + "\n")
        pairs = (x0, z, labels)
    data = pair_dataset(*pairs)
    torch.manual_seed(settings.seed)  # the loss's row draws (a resume restores the stream)
    log.info("student plans (rows, noisiest first): %s", dict(zip(calls, plans, strict=True)))
    return train_run(config, parts, data, run_dir, device, distributed.SINGLE, None)


def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = is_fresh(run_dir)
    try:
        summary = distill(cfg, run_dir, sampler_choice())
    except UserError:
        if fresh and is_fresh(run_dir):
            remove_run_dir(run_dir)  # a bad start leaves no folder behind
        raise
    except Interrupted as err:
        log.warning(
            "stopped by %s; continue with the same command and hydra.run.dir=%s", err, run_dir
        )
        sys.exit(err.exit_code)
    log.info(
        "done: %d steps, final loss %.4f; student %s (sampler=distilled sampler.steps=<calls>)",
        summary["steps"],
        summary["final_loss"],
        run_dir / "checkpoints" / "last.pt",
    )


cli = hydra_command("ddpm-distill", __doc__, "distill", main)

if __name__ == "__main__":
    cli()
