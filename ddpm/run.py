"""``python -m ddpm.run``: compose the config, validate it, build the objects, train.

Returns :func:`objective` (final FID, or final loss), so Hydra sweepers can minimise it.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ddpm import checkpoint, distributed
from ddpm.config import check_command_line, validate
from ddpm.errors import UserError
from ddpm.runs import pick_device
from ddpm.tracking import SilentTracker
from ddpm.train import Interrupted, train

log = logging.getLogger("ddpm")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate``, but a UserError raised inside stays a UserError (one clean line)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Builds every object from ``cfg`` and trains; the summary dict comes back.

    Under torchrun every rank runs this; they share rank 0's run dir and only rank 0 writes.
    """
    validate(cfg)
    ranks = distributed.setup(pick_device(cfg.trainer.device))
    try:
        if ranks.world > cfg.trainer.batch_size:
            raise UserError(
                f"trainer.batch_size={cfg.trainer.batch_size}: the global batch, at least one "
                f"image per process ({ranks.world} processes)"
            )
        return _run(cfg, _shared_run_dir(run_dir, ranks), ranks)
    finally:
        distributed.teardown()


def _shared_run_dir(run_dir: Path, ranks: distributed.Ranks) -> Path:
    """Rank 0's run dir for every rank (each rank's Hydra may have stamped its own time);
    a rank's own empty Hydra folder is removed, and its log stays quiet."""
    shared = Path(distributed.broadcast(str(run_dir), ranks))
    if not ranks.main:
        logging.getLogger("ddpm").setLevel(logging.WARNING)
        if run_dir != shared and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def _run(cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks) -> dict:
    torch.manual_seed(cfg.trainer.seed)  # before building: initial weights depend on it
    config = OmegaConf.to_container(cfg, resolve=True)
    start_path = checkpoint.resume_path(cfg.trainer.resume, run_dir)
    start = checkpoint.load(start_path) if start_path else None
    resumed = {}
    if start is not None:
        start["path"] = str(start_path)
        resumed = {"resume_step": start["step"], "resume_id": start.get("wandb_run_id")}
    # kwargs below stay plain data; ranks other than 0 log nothing
    make_tracker = build(cfg.logger, _partial_=True) if ranks.main else SilentTracker
    # Opened before anything can fail, so a failing job still leaves a finished, failed run.
    with make_tracker(run_dir=run_dir, run_config=config, **resumed) as tracker:
        data = build(cfg.dataset)
        model = build(cfg.model)
        expected = (model.in_channels, model.image_size, model.image_size)
        if tuple(data.images.shape[1:]) != expected:
            raise UserError(
                f"model.image_size/in_channels={expected} do not match the dataset's images "
                f"{tuple(data.images.shape[1:])}"
            )
        classes = getattr(model, "num_classes", None)
        if classes is not None and int(data.labels.max()) >= classes:
            raise UserError(
                f"model.num_classes={classes}: the dataset has labels up to "
                f"{int(data.labels.max())}; use num_classes > that"
            )
        schedule = build(cfg.schedule)
        optimizer = build(cfg.optimizer)(model.parameters())
        sampler = build(cfg.sampler, schedule=schedule)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s parameters; run dir %s", f"{n_params:,}", run_dir)
        return train(cfg, model, schedule, optimizer, sampler, data, tracker, run_dir, start, ranks)


def objective(cfg: DictConfig, summary: dict) -> float:
    """What a sweep or search minimises: the final FID when the run measured quality
    (``trainer.eval_every`` > 0, so the summary has ``fid``), else the final training loss.

    The loss only ranks runs of the same schedule and prediction target (its scale depends on
    both); FID ranks any two runs measured with the same ``trainer.eval_samples``.
    """
    key = "fid" if cfg.trainer.eval_every else "final_loss"
    return float(summary.get(key, math.nan))  # NaN on torchrun ranks > 0: rank 0 measures


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One training run; returns :func:`objective`: the final FID when ``trainer.eval_every``
    > 0, else the final loss."""
    hc = HydraConfig.get()
    try:
        summary = run(cfg, Path(hc.runtime.output_dir))
    except UserError as err:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweep reports it after the other jobs have run
        sys.exit(f"error: {err}")
    except Interrupted as err:
        log.warning("stopped by %s; continue with the same command (trainer.resume=auto)", err)
        sys.exit(err.exit_code)
    return objective(cfg, summary)


def with_default_recipe(argv: list[str]) -> list[str]:
    """``recipe=fast`` appended when the command names no model, schedule, recipe or
    experiment: a bare ``python -m ddpm.run`` trains the best recipe for a CPU budget, while
    ``model=base`` (or any named model/schedule) keeps the study note's recipe exactly."""
    keys = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    if keys & {"model", "schedule", "recipe", "experiment"}:
        return argv
    return [*argv, "recipe=fast"]


def cli() -> None:
    """The console entry: picks the default recipe, and refuses unknown group options in one
    line before Hydra runs."""
    argv = with_default_recipe(sys.argv[1:])
    try:
        check_command_line(argv)
    except UserError as err:
        sys.exit(f"error: {err}")
    sys.argv[1:] = argv
    main()


if __name__ == "__main__":
    cli()
