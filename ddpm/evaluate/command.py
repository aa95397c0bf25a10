"""What ``python -m ddpm.evaluate run_dir=<run>`` does: sample from a run, measure the samples.

The model and schedule come from the run's checkpoint (:func:`ddpm.runs.load_trained`), the
sampler from ``conf/sampler``; metrics are those of :func:`ddpm.evaluate.metrics.evaluate_images`
on the cached evaluator. Writes ``<run>/eval/<sampler>_<steps>_n<N>[_<ckpt stem>].json`` and,
when the run has a W&B run, logs ``eval/<that name>/<metric>`` into it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddpm.errors import UserError
from ddpm.evaluate.cache import load_evaluator, resolve_dir
from ddpm.evaluate.metrics import K_NEIGHBOURS, evaluate_images
from ddpm.evaluate.wandb_run import log_into_run
from ddpm.runs import load_for_sampling, output_dir
from ddpm.samplers.base import Sampler
from ddpm.train import generate

log = logging.getLogger("ddpm")
MIN_SAMPLES = K_NEIGHBOURS + 1


def sample_images(
    model: nn.Module,
    sampler: Sampler,
    num: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``num`` samples on the CPU, drawn ``batch_size`` at a time; batch i uses its own seed.
    ``labels`` (``num`` of them) for a conditional model."""
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        n = min(batch_size, num - start)
        images, _ = generate(
            model,
            sampler,
            n,
            seed * 1_000_003 + i,
            device,
            record=None,
            progress=progress,
            labels=None if labels is None else labels[start : start + n],
        )
        out.append(images.detach().cpu())
        log.info("sampled %d/%d", start + n, num)
    return torch.cat(out)


def balanced_labels(model: nn.Module, num: int) -> torch.Tensor | None:
    """0, 1, ..., 9, 0, 1, ... for a conditional model (every class equally often), else None:
    FID then compares against a class-balanced test set, as for unconditional samples."""
    classes = getattr(model, "num_classes", None)
    return None if classes is None else torch.arange(num) % classes


def _check(cfg: DictConfig) -> None:
    for key, low in (("num_samples", MIN_SAMPLES), ("batch_size", 1)):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"{key}={value!r}: an integer >= {low}")
    if not isinstance(cfg.seed, int):
        raise UserError(f"seed={cfg.seed!r}: an integer")
    if not isinstance(cfg.wandb, bool):
        raise UserError(f"wandb={cfg.wandb!r}: true or false")


def evaluate_run(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """Samples ``cfg.num_samples`` images from the run, measures them, writes the JSON.

    A conditional run draws every class equally often at ``sampler.guidance_scale`` and also
    reports the label accuracy (overall and per class).
    """
    _check(cfg)
    job = load_for_sampling(cfg)
    model, sampler, path, device = job.model, job.sampler, job.checkpoint, job.device
    steps = len(sampler.timesteps)
    name = f"{sampler_name}_{steps}_n{cfg.num_samples}"
    if getattr(model, "num_classes", None) is not None:
        name += f"_w{sampler.guidance_scale:g}"  # conditional: one file per guidance scale
    name = job.tagged(name)
    default_out = output_dir(None, cfg.run_dir, path, "eval", name)
    out = (
        Path(cfg.out).expanduser() if cfg.out else default_out.with_name(default_out.name + ".json")
    )
    evaluator, reference = load_evaluator(cfg.evaluator_dir, device, data_root=cfg.data_root)

    start = time.perf_counter()
    labels = balanced_labels(model, cfg.num_samples)
    images = sample_images(
        model, sampler, cfg.num_samples, cfg.batch_size, cfg.seed, device, cfg.progress, labels
    )
    sample_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate_images(images, evaluator, reference, seed=cfg.seed, labels=labels)
    eval_s = time.perf_counter() - start
    train_step = job.step

    result = {
        "metrics": metrics,
        "checkpoint": str(path),
        "step": train_step,
        "sampler": sampler_name,
        "steps": steps,
        "guidance_scale": sampler.guidance_scale if labels is not None else None,
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "device": str(device),
        "sample_seconds": sample_s,
        "eval_seconds": eval_s,
        "evaluator": {
            "dir": str(resolve_dir(cfg.evaluator_dir)),
            "test_accuracy": evaluator.meta["test_accuracy"],
            "build_id": evaluator.meta["build_id"],
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "%s: %s", name, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "share_" not in k)
    )
    log.info("sampling %.1f s, metrics %.1f s -> %s", sample_s, eval_s, out)
    if cfg.wandb:
        run_root = default_out.parent.parent
        prefixed = {f"eval/{default_out.name}/{k}": v for k, v in metrics.items()}
        log_into_run(
            run_root,
            prefixed,
            step=train_step,
            project=OmegaConf.select(job.config, "logger.project", default=None),
            entity=OmegaConf.select(job.config, "logger.entity", default=None),
        )
    return result
