"""``python -m ddpm.run``: compose the config, validate it, build the objects, train.

Returns the final loss, so Hydra sweepers can minimise it.
"""

from __future__ import annotations

import logging
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

from ddpm import checkpoint
from ddpm.config import check_command_line, validate
from ddpm.errors import UserError
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
    """Builds every object from ``cfg`` and trains; the summary dict comes back."""
    validate(cfg)
    torch.manual_seed(cfg.trainer.seed)  # before building: initial weights depend on it
    config = OmegaConf.to_container(cfg, resolve=True)
    start_path = checkpoint.resume_path(cfg.trainer.resume, run_dir)
    start = checkpoint.load(start_path) if start_path else None
    resumed = {}
    if start is not None:
        start["path"] = str(start_path)
        resumed = {"resume_step": start["step"], "resume_id": start.get("wandb_run_id")}
    make_tracker = build(cfg.logger, _partial_=True)  # kwargs below stay plain data
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
        schedule = build(cfg.schedule)
        optimizer = build(cfg.optimizer)(model.parameters())
        sampler = build(cfg.sampler, schedule=schedule)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s parameters; run dir %s", f"{n_params:,}", run_dir)
        return train(cfg, model, schedule, optimizer, sampler, data, tracker, run_dir, start)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
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
    return float(summary["final_loss"])


def cli() -> None:
    """The console entry: unknown group options are refused in one line before Hydra runs."""
    try:
        check_command_line(sys.argv[1:])
    except UserError as err:
        sys.exit(f"error: {err}")
    main()


if __name__ == "__main__":
    cli()
