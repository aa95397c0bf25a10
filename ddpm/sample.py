"""``python -m ddpm.sample run_dir=<run>``: draw images from a trained run with any sampler.

The model and schedule are rebuilt from the run's checkpoint (:mod:`ddpm.runs`); the sampler
comes from ``conf/sampler`` like in training, so ``sampler=dpm_solver_pp sampler.steps=10``
works here too. Writes ``grid.png``, ``progress.png`` (one image's reverse process),
``samples.pt`` (the raw tensor in [-1, 1]) and ``sample.json`` (settings and speed).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ddpm import viz
from ddpm.errors import UserError, one_line_errors
from ddpm.runs import load_for_sampling, output_dir
from ddpm.train import generate

log = logging.getLogger("ddpm")


def sampler_choice(default: str = "sampler") -> str:
    """The option picked from the sampler group (``ddim``, ...), when running under Hydra."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("sampler", default))
    return default


def sample(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """Samples ``cfg.num_samples`` images and writes them under the output folder."""
    if not isinstance(cfg.num_samples, int) or cfg.num_samples < 1:
        raise UserError(f"num_samples={cfg.num_samples!r}: an integer >= 1")
    job = load_for_sampling(cfg)
    model, schedule, sampler, ckpt, device = (
        job.model,
        job.schedule,
        job.sampler,
        job.checkpoint,
        job.device,
    )
    steps = len(sampler.timesteps)
    out = output_dir(cfg.out_dir, cfg.run_dir, ckpt, "samples", f"{sampler_name}_{steps}")

    start = time.perf_counter()
    samples, trajectory = generate(
        model,
        sampler,
        cfg.num_samples,
        cfg.seed,
        device,
        record=viz.progress_steps(len(schedule)),
        progress=cfg.progress,
    )
    took = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    viz.save_grid(samples, out / "grid.png")
    viz.save_progress(trajectory, out / "progress.png")
    torch.save(samples.detach().cpu().contiguous(), out / "samples.pt")
    info = {
        "checkpoint": str(ckpt),
        "sampler": sampler_name,
        "steps": steps,
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "device": str(device),
        "seconds": took,
        "images_per_s": cfg.num_samples / took,
        "out_dir": str(out),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "sample.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "%d images with %s (%d steps) in %.1f s (%.2f images/s) -> %s",
        cfg.num_samples,
        sampler_name,
        steps,
        took,
        info["images_per_s"],
        out,
    )
    return info


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@one_line_errors
def main(cfg: DictConfig) -> None:
    sample(cfg, sampler_choice())


if __name__ == "__main__":
    main()
