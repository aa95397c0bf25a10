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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ddpm.configs.presets import build
from ddpm.configs.run_config import Parts, build_optimizer
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError, fail, is_int, require
from ddpm.evaluate.cache import evaluator_for
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.hardware import distributed
from ddpm.hardware.devices import pick_device
from ddpm.run import is_fresh, remove_run_dir, train_run
from ddpm.runs import checkpoint as ckpt
from ddpm.runs.load import checkpoint_path, data_root, load_for_sampling, load_trained
from ddpm.samplers.ddim import DDIMSampler
from ddpm.samplers.generate import balanced_labels
from ddpm.training.consistency import ConsistencyTuning
from ddpm.training.loop import Interrupted
from ddpm.training.reflow import ReflowLoss, pair_dataset, teacher_pairs

log = logging.getLogger("ddpm")
PAIRS_FILE = "pairs.pt"


METHODS = ("reflow", "ect")


def check_settings(cfg: DictConfig) -> list[int]:
    """The command's own keys, each a one-line error; returns ``calls`` as a sorted list."""
    method = cfg.method.name
    require(method in METHODS, "method.name", method, f"one of {', '.join(METHODS)}")
    for key in ("pairs", "pair_batch"):
        if method == "reflow":
            require(is_int(cfg[key], 1), key, cfg[key], "an integer >= 1")
        else:  # ect trains on the run's images: a pair setting would be composed and ignored
            require(cfg[key] is None, key, cfg[key], "null: read by distill_method=reflow only")
    if method == "ect":
        require(cfg.get("sampler") is None, "sampler", "set",
                "none: distill_method=ect draws no teacher samples")  # fmt: skip
    calls = OmegaConf.to_container(cfg.calls) if OmegaConf.is_list(cfg.calls) else cfg.calls
    ok = isinstance(calls, list) and calls and all(is_int(c, 1) for c in calls)
    ok = ok and len(set(calls)) == len(calls)
    require(ok, "calls", calls, "a list of distinct integers >= 1")
    trainer = cfg.trainer
    weighting, dropout = trainer.loss_weighting, trainer.label_dropout
    require(weighting == "none", "trainer.loss_weighting", weighting, "none (the x0 error)")
    require(dropout == 0, "trainer.label_dropout", dropout, "0 (each pair keeps its label)")
    require(
        OmegaConf.is_dict(cfg.student),
        "student",
        cfg.student,
        "a sampler config; pick another with sampler@student=<option>",
    )
    return sorted(calls)


def student_config(
    cfg: DictConfig, teacher: DictConfig, grid: NoiseSchedule, calls: list[int]
) -> DictConfig:
    """The teacher's run config with the student's sampler, optimizer, trainer, logger and
    device: what the student's checkpoints record, so it reloads like any run. A DDPM eps
    teacher gets a v student: an eps network's x0 estimate divides by sqrt(alpha_bar), about
    1e-4 at the top row, so a 1-call eps student cannot be accurate (v: x0 = a x - s v)."""
    node = OmegaConf.to_container(teacher, resolve=True)
    for key in ("optimizer", "trainer", "logger"):
        node[key] = OmegaConf.to_container(cfg[key], resolve=True)
    node["sampler"] = {**OmegaConf.to_container(cfg.student, resolve=True), "steps": calls[0]}
    node["device"], node["experiment_name"] = cfg.device, "distill"
    node["dataset"]["root"] = data_root(teacher, None)  # where evaluations find the data now
    if grid.precond is None and node["model"]["prediction"] == "eps":  # a DDPM grid
        node["model"]["prediction"] = "v"
    return OmegaConf.create(node)


def student_plans(config: DictConfig, grid: Any, calls: list[int]) -> list[list[int]]:
    """The rows of the student's plan at each call count (refusing a plan DDIM cannot make
    exact, and more calls than the grid has rows)."""
    top = len(grid)
    require(max(calls) <= top, "calls", calls, f"call counts in 1..{top} (the process's levels)")
    plans = []
    for k in calls:
        sampler = build(config.sampler, schedule=grid, steps=k)
        exact = isinstance(sampler, DDIMSampler) and sampler.eta == 0 and not sampler.planned
        require(exact, "student", config.sampler._target_, "DDIM with eta=0 and no plan file")
        plans.append(sampler.timesteps)
    return plans


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


def updates_done(optimizer: torch.optim.Optimizer) -> int:
    """Optimizer steps taken so far (Adam's own count, restored with its state on resume)."""
    for state in optimizer.state.values():
        return int(state["step"])
    return 0


@dataclass
class StudentRun:
    """What a student of either method is before its loss: the teacher's config turned into the
    student's (:func:`student_config`), its trainer settings, the evaluator its
    ``trainer.eval_every`` asks for, and the network (the teacher's weights, already on the
    device, in train mode)."""

    config: DictConfig
    settings: Any
    evaluator: Any
    model: torch.nn.Module
    grid: NoiseSchedule

    @classmethod
    def start(
        cls,
        cfg: DictConfig,
        teacher: DictConfig,
        grid: NoiseSchedule,
        calls: list[int],
        weights: torch.nn.Module,
        run_dir: Path,
    ) -> StudentRun:
        config = student_config(cfg, teacher, grid, calls)
        settings = build(config.trainer)
        ckpt.resume_path(settings.resume, run_dir)  # a bad trainer.resume, before any work
        every = settings.eval_every
        evaluator = evaluator_for(config.dataset, "trainer.eval_every", every) if every else None
        model = weights.train()
        model.prediction = config.model.prediction
        return cls(config, settings, evaluator, model, grid)

    def optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.config.optimizer, self.model, self.settings)

    def train(
        self,
        optimizer: torch.optim.Optimizer,
        loss: Any,
        data: Any,
        run_dir: Path,
        device: torch.device,
    ) -> dict[str, Any]:
        """Trains the student on ``data`` under ``loss`` in ``run_dir``; its summary. The seed
        is set here, last, so both methods' draws start from it (a resume restores the stream)."""
        parts = Parts(
            settings=self.settings,
            model=self.model,
            schedule=self.grid,
            sampler=build(self.config.sampler, schedule=self.grid),
            optimizer=optimizer,
            dataset=None,  # the data comes ready: the pairs, or the run's images
            logger=build(self.config.logger, _partial_=True),
            process=loss,
        )
        torch.manual_seed(self.settings.seed)
        return train_run(self.config, parts, data, run_dir, device, distributed.SINGLE,
                         self.evaluator)  # fmt: skip


def consistency_tune(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """ECT: the teacher's weights tuned on its own training images into a consistency model
    (:class:`~ddpm.training.consistency.ConsistencyTuning`) in ``run_dir``; its summary."""
    calls = check_settings(cfg)
    device = pick_device(cfg.device)
    path = checkpoint_path(cfg.run_dir, cfg.checkpoint)
    teacher, model, grid = load_trained(cfg.run_dir, cfg.checkpoint, device, cfg.ema,
                                        cfg.get("posthoc_ema"))  # fmt: skip
    run = StudentRun.start(cfg, teacher, grid, calls, model.to(device), run_dir)
    data = build(run.config.dataset).load()
    optimizer = run.optimizer()
    options = {k: v for k, v in OmegaConf.to_container(cfg.method).items() if k != "name"}
    loss = ConsistencyTuning(
        grid,
        None if grid.precond is not None else run.model.prediction,
        run.settings.total_steps(len(data)),
        lambda: updates_done(optimizer),
        **options,
    )
    record = {"teacher": str(path.resolve()), "method": OmegaConf.to_container(cfg.method)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "distill.json").write_text(json.dumps(record, indent=2) + "\n")
    return run.train(optimizer, loss, data, run_dir, device)


def distill(cfg: DictConfig, run_dir: Path, teacher_name: str = "sampler") -> dict[str, Any]:
    """Draws (or reloads) the pairs, then trains the student in ``run_dir``; its summary.
    Every setting is checked before the pairs are drawn. ``distill_method=ect``: no pairs,
    :func:`consistency_tune`."""
    if cfg.method.name == "ect":
        return consistency_tune(cfg, run_dir)
    calls = check_settings(cfg)
    job = load_for_sampling(cfg)  # the teacher, with the pairs' solver
    if job.sampler.stochastic:
        fail("sampler", teacher_name, "stochastic; the pairs need a deterministic solver")
    device, grid = job.device, job.schedule  # the teacher's process grid, the student's too
    run = StudentRun.start(cfg, job.config, grid, calls, copy.deepcopy(job.model), run_dir)
    settings = run.settings
    plans = student_plans(run.config, grid, calls)

    about = {
        "teacher": str(job.checkpoint.resolve()),
        "ema": job.ema,
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "pairs": cfg.pairs,
        "seed": settings.seed,
        "calls": calls,  # a resumed student trains for the same plans
    }
    if job.posthoc_ema is not None:  # a key the pairs files of earlier teachers lack
        about["posthoc_ema"] = job.posthoc_ema
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
        ckpt.save({"about": about, "x0": x0, "z": z, "labels": labels}, path)
        record = {**about, "plans": plans, "pair_seconds": took}
        (run_dir / "distill.json").write_text(json.dumps(record, indent=2) + "\n")
        pairs = (x0, z, labels)
    del job  # the teacher: only its pairs are needed from here
    log.info("student plans (rows, noisiest first): %s", dict(zip(calls, plans, strict=True)))
    loss = ReflowLoss(grid, plans, run.model.prediction)
    return run.train(run.optimizer(), loss, pair_dataset(*pairs), run_dir, device)


def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = is_fresh(run_dir)
    try:
        summary = distill(cfg, run_dir, sampler_choice())
    except UserError:
        if fresh and is_fresh(run_dir) and not (run_dir / PAIRS_FILE).exists():
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
