"""``python -m ddpm.run`` (``ddpm-run``): train a diffusion model from the composed config.

Config -> objects (:func:`ddpm.configs.run_config.build_parts`, which is also the
validation) -> data -> the loop (:mod:`ddpm.training.loop`) -> files and logs in the run dir.
Returns
:func:`objective` (the final FID when measured, else the final loss) for sweepers.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ddpm.configs.run_config import Parts, build_parts, check_top_level
from ddpm.configs.unread import check_named, named_process, without_unread
from ddpm.data import ImageDataset
from ddpm.errors import UserError, require
from ddpm.evaluate.cache import evaluator_for, load_evaluator
from ddpm.frontend.cli import hydra_command, in_sweep, sampler_choice
from ddpm.hardware import distributed
from ddpm.hardware.devices import pick_device
from ddpm.runs import checkpoint
from ddpm.runs.same_run import check_same_run, stored_record
from ddpm.runs.tracking import SilentTracker
from ddpm.training import posthoc_ema
from ddpm.training.loop import Interrupted, train
from ddpm.training.outputs import RunOutputs
from ddpm.training.state import TrainState

log = logging.getLogger("ddpm")


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Builds every object from ``cfg``, reads the data and trains; returns the summary.

    Everything that can be wrong with the config or the data is found before the first file
    is written. Under torchrun every rank runs this; they share rank 0's run dir and only
    rank 0 writes.
    """
    check_top_level(cfg)
    cfg = without_unread(cfg)
    device = pick_device(cfg.device)
    ranks = distributed.setup(device)
    try:
        device = distributed.local_device(device, ranks)
        parts = build_parts(cfg, device)
        every = parts.settings.eval_every  # has the dataset an evaluator? before anything is read
        evaluator = evaluator_for(cfg.dataset, "trainer.eval_every", every) if every else None
        data = parts.dataset.load()
        check_fit(parts, data, ranks)
        run_dir = _shared_run_dir(run_dir, ranks)
        return train_run(cfg, parts, data, run_dir, device, ranks, evaluator)
    finally:
        distributed.teardown()


def check_fit(parts: Parts, data: ImageDataset, ranks: distributed.Ranks) -> None:
    """The model takes the dataset's images and labels; the batch has an image per rank."""
    model, batch = parts.model, parts.settings.batch_size
    expected = (model.in_channels, model.image_size, model.image_size)
    shape = tuple(data.images.shape[1:])
    require(
        shape == expected,
        "model.image_size/in_channels",
        expected,
        f"the dataset's images are {shape}",
    )
    classes, top = getattr(model, "num_classes", None), int(data.labels.max())
    require(
        classes is None or top < classes,
        "model.num_classes",
        classes,
        f"the dataset has labels up to {top}; use num_classes > that",
    )
    require(
        ranks.world <= batch,
        "trainer.batch_size",
        batch,
        f"the global batch, at least one image per process ({ranks.world} processes)",
    )


def _shared_run_dir(run_dir: Path, ranks: distributed.Ranks) -> Path:
    """Rank 0's run dir for every rank (each rank's Hydra may have stamped its own time);
    a rank's own empty Hydra folder is removed, and its log stays quiet."""
    shared = Path(distributed.broadcast(str(run_dir), ranks))
    if not ranks.main:
        logging.getLogger("ddpm").setLevel(logging.WARNING)
        if run_dir != shared and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def train_run(
    cfg: DictConfig,
    parts: Parts,
    data: ImageDataset,
    run_dir: Path,
    device: Any,
    ranks: distributed.Ranks,
    evaluator: tuple[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    """Trains ``parts`` on ``data`` into ``run_dir`` (resuming from its checkpoint when there
    is one) with the tracker open; ``cfg`` is what the checkpoints record."""
    settings = parts.settings
    config = OmegaConf.to_container(cfg, resolve=True)
    state = TrainState.create(
        parts.model, parts.optimizer, settings.ema_decay, settings.posthoc_ema_stds
    )
    resumed: dict[str, Any] = {}
    start_path = checkpoint.resume_path(settings.resume, run_dir)
    if start_path is not None:
        start = checkpoint.load(start_path)
        if settings.resume == "auto":  # the folder's own run: only when it is this job's
            check_same_run(start.get("config", {}), config, run_dir)
        state.load_state_dict(start, start_path)
        resumed = {"resume_step": start["step"], "resume_id": checkpoint.run_id(start)}
        log.info("resumed at step %d (epoch %d) from %s", state.step, state.epoch, start_path)
    elif removed := posthoc_ema.clear_snapshots(run_dir):
        log.info("a fresh start: removed %d post-hoc EMA snapshots of an earlier run", removed)
    log_plan(cfg, settings, parts, len(data), run_dir)
    open_tracker = parts.logger if ranks.main else SilentTracker
    with open_tracker(run_dir=run_dir, run_config=config, **resumed) as tracker:
        quality = None
        if evaluator is not None and ranks.main:  # rank 0 measures
            # Building the evaluator (first use) seeds torch: keep the training streams, which
            # every rank must share, untouched.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                name, options = evaluator
                quality = load_evaluator(
                    None, device, data_root=cfg.dataset.root, dataset=name, options=options
                )
        out = RunOutputs(run_dir, state, parts.sampler, settings, tracker, device, config, quality)
        return train(settings, state, parts.process, data, out, device, ranks)


def log_plan(cfg: DictConfig, settings: Any, parts: Parts, num_images: int, run_dir: Path) -> None:
    """What the run is about to do, before it does it: what trains, on which network, how it
    will be sampled, and for how long."""
    steps = settings.total_steps(num_images)
    per_epoch = math.ceil(num_images / settings.batch_size)
    budget = f", stopping after {settings.max_minutes:g} min" if settings.max_minutes else ""
    n_params = sum(p.numel() for p in parts.model.parameters())
    log.info(
        "plan: %s; %s, %s parameters; sampler %s; %d steps (%.1f epochs of %d images, "
        "batch %d)%s; run dir %s",
        what_trains(cfg, parts),
        type(parts.model).__name__,
        f"{n_params:,}",
        sampler_line(parts.sampler),
        steps,
        steps / per_epoch,
        num_images,
        settings.batch_size,
        budget,
        run_dir,
    )


def what_trains(cfg: DictConfig, parts: Parts) -> str:
    """``process ddpm (T=1000), linear schedule, eps target`` or ``process flow (...)``."""
    process = parts.process
    said = [f"process {process.describe()}"]
    if "schedule" in process.reads:
        said.append(f"{cfg.schedule._target_.rsplit('.', 1)[-1]} schedule")
    if "model.prediction" in process.reads:
        said.append(f"{parts.model.prediction} target")
    return ", ".join(said)


def sampler_line(sampler: Any) -> str:
    """``dpm_solver_pp_sde, 50 calls on the logsnr plan`` (the sampler group's option)."""
    calls = "adaptive calls" if sampler.nfe is None else f"{sampler.nfe:g} calls"
    fixed = sampler.plan_file is None
    plan = f"the {sampler.spacing} plan" if fixed else f"plan {sampler.plan_file}"
    name = type(sampler).__name__
    name = sampler_choice(sampler_choice(name), group="sampler@student")  # a distill student's
    return f"{name}, {calls} on {plan}"


def objective(cfg: DictConfig, summary: dict) -> float:
    """What a sweep or search minimises: the final FID when the run measured quality
    (``trainer.eval_every`` > 0, so the summary has ``fid``), else the final training loss.

    The loss only ranks runs of the same schedule and prediction target (its scale depends on
    both); FID ranks any two runs measured with the same ``trainer.eval_samples``.
    """
    key = "fid" if cfg.trainer.eval_every else "final_loss"
    return float(summary.get(key, math.nan))  # NaN on torchrun ranks > 0: rank 0 measures


def resume_command(run_dir: Path) -> str:
    """The command that continues this run in its own folder."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir")]
    return shlex.join(["python", "-m", "ddpm.run", *overrides, f"hydra.run.dir={run_dir}"])


def report(summary: dict[str, Any], run_dir: Path) -> None:
    """Where everything went, and the numbers that matter."""
    quality = f", FID {summary['fid']:.2f}" if "fid" in summary else ""
    log.info(
        "done: %d steps, final loss %.4f, %.0f images/s%s\n"
        "  grids and progress strip: %s\n  loss curve: %s\n  checkpoint: %s\n"
        "  metrics: %s (summary.json beside it)",
        summary["steps"],
        summary["final_loss"],
        summary["images_per_s"],
        quality,
        run_dir / "samples",
        run_dir / "loss.png",
        run_dir / "checkpoints" / "last.pt",
        run_dir / "metrics.jsonl",
    )


def is_fresh(run_dir: Path) -> bool:
    """Nothing but Hydra's own files: a folder a failed start may remove."""
    return run_dir.is_dir() and not any(
        (run_dir / name).exists() for name in ("checkpoints", "metrics.jsonl", "summary.json")
    )


def remove_run_dir(run_dir: Path) -> None:
    """The run dir, and the date folders above it inside the launch folder once empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    launch = Path.cwd().resolve()
    for parent in run_dir.resolve().parents:
        if parent == launch or launch not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that ended (``summary.json`` is written last), else None."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def main(cfg: DictConfig) -> float:
    """One training run in Hydra's run dir.

    In a sweep, a job whose folder already holds a finished run of its config is skipped, and
    every other job resumes from its own ``checkpoints/last.pt`` (``trainer.resume=auto``): the
    same sweep command with ``hydra.sweep.dir=<its folder>`` continues a killed sweep. A folder
    holding a run of another config is refused (:mod:`ddpm.runs.same_run`), never reused.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if in_sweep():  # a single run's command line was checked before Hydra ran
        check_named(cfg, HydraConfig.get().overrides.task)
    cfg = without_unread(cfg)
    if in_sweep() and (done := finished(run_dir)) is not None:
        stored = stored_record(run_dir)
        job = OmegaConf.to_container(cfg, resolve=True)
        check_same_run(stored if stored is not None else {}, job, run_dir)
        log.info("already finished, skipped: %s", run_dir)
        return objective(cfg, done)
    fresh = is_fresh(run_dir)
    try:
        summary = run(cfg, run_dir)
    except UserError:
        if fresh and not in_sweep() and is_fresh(run_dir):
            remove_run_dir(run_dir)  # a bad start leaves no folder behind
        raise
    except Interrupted as err:
        log.warning("stopped by %s; continue with:\n  %s", err, resume_command(run_dir))
        sys.exit(err.exit_code)
    if "final_loss" in summary:
        report(summary, run_dir)
    return objective(cfg, summary)


cli = hydra_command("ddpm-run", __doc__, "config", main, rewrite=named_process)

if __name__ == "__main__":
    cli()
