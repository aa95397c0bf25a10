"""``python -m ddpm.run``: compose the config, validate it, build the objects, train.

Returns the final loss, so Hydra sweepers can minimise it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ddpm.config import validate
from ddpm.errors import UserError
from ddpm.train import train

log = logging.getLogger("ddpm")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Builds every object from ``cfg`` and trains; the summary dict comes back."""
    validate(cfg)
    torch.manual_seed(cfg.trainer.seed)  # before building: initial weights depend on it
    data = instantiate(cfg.dataset)
    model = instantiate(cfg.model)
    expected = (model.in_channels, model.image_size, model.image_size)
    if tuple(data.images.shape[1:]) != expected:
        raise UserError(
            f"model.image_size/in_channels={expected} do not match the dataset's images "
            f"{tuple(data.images.shape[1:])}"
        )
    schedule = instantiate(cfg.schedule)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    sampler = instantiate(cfg.sampler, schedule=schedule)
    log.info(
        "model: %s parameters; run dir %s",
        f"{sum(p.numel() for p in model.parameters()):,}",
        run_dir,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    make_tracker = instantiate(cfg.logger, _partial_=True)  # kwargs below stay plain data
    with make_tracker(run_dir=run_dir, run_config=config) as tracker:
        return train(cfg, model, schedule, optimizer, sampler, data, tracker, run_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    try:
        summary = run(cfg, Path(hc.runtime.output_dir))
    except UserError as err:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweep reports it after the other jobs have run
        sys.exit(f"error: {err}")
    return float(summary["final_loss"])


if __name__ == "__main__":
    main()
