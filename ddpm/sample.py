"""``python -m ddpm.sample run_dir=<run>``: draw images from a trained run with any sampler.

The model and schedule are rebuilt from the run's checkpoint (:mod:`ddpm.runs.load`); the sampler
comes from ``conf/sampler`` like in training, so ``sampler=dpm_solver_pp sampler.steps=10``
works here too. Writes ``grid.png``, ``progress.png`` (one image's reverse process),
``samples.pt`` (the raw tensor in [-1, 1]) and ``sample.json`` (settings and speed).
Conditional runs take ``label=7`` (or a list) or ``labels=all`` (a 10x10 grid, one row per
class), guided by ``sampler.guidance_scale``; ``labels.pt`` then holds each image's class.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddpm.errors import UserError, is_int, require
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.runs import viz
from ddpm.runs.load import load_for_sampling, output_dir
from ddpm.samplers.generate import generate, label_rows

log = logging.getLogger("ddpm")


def requested_labels(cfg: DictConfig, model: nn.Module) -> torch.Tensor | None:
    """The class of each image to draw from ``label``/``labels``, or None (unconditional)."""
    label, mode = cfg.get("label"), cfg.get("labels")
    if label is None and mode is None:
        return None
    classes = getattr(model, "num_classes", None)
    key = "label" if label is not None else "labels"
    require(
        classes is not None,
        key,
        label if label is not None else mode,
        "this run is unconditional (model.num_classes=null); train with model.num_classes=10 "
        "to ask for classes",
    )
    if mode is not None:
        ok = label is None and mode == "all"
        require(ok, "labels", mode, "allowed all (and no label= with it)")
        return label_rows(classes, 10)  # ten per class, one row each
    wanted = list(label) if OmegaConf.is_list(label) else [label]
    ok = bool(wanted) and all(is_int(c, 0) and c < classes for c in wanted)
    require(ok, "label", label, f"a class 0..{classes - 1} or a non-empty list of them")
    return torch.tensor(wanted).repeat(-(-cfg.num_samples // len(wanted)))[: cfg.num_samples]


def read_back(
    samples: torch.Tensor, labels: torch.Tensor, dataset: Any = None
) -> dict[str, float] | None:
    """Label accuracy by the run's dataset's evaluator when its cache exists (never built
    here: that takes minutes; ``python -m ddpm.evaluate`` builds it), else None (also when
    the images are not the evaluator's size, e.g. MNIST padded to 32)."""
    from ddpm.evaluate.cache import EVALUATED, WEIGHTS, dataset_of, load_evaluator, resolve_dir
    from ddpm.evaluate.metrics import extract, label_accuracy

    name, _ = dataset_of(dataset)
    if name not in EVALUATED or not (resolve_dir(None, name) / WEIGHTS).is_file():
        return None
    evaluator, _ = load_evaluator(None, "cpu", build_missing=False, dataset=name)
    try:
        _, logits = extract(evaluator, samples.detach().cpu())
    except UserError as err:
        log.warning("no label accuracy: %s", err)
        return None
    return label_accuracy(logits, labels)


def sample(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """Samples ``cfg.num_samples`` images and writes them under the output folder."""
    require(is_int(cfg.num_samples, 1), "num_samples", cfg.num_samples, "an integer >= 1")
    job = load_for_sampling(cfg)
    model, schedule, sampler, ckpt, device = (
        job.model,
        job.schedule,
        job.sampler,
        job.checkpoint,
        job.device,
    )
    steps = len(sampler.timesteps)
    labels = requested_labels(cfg, model)
    name = job.setting(sampler_name)
    if labels is not None:
        classes = dict.fromkeys(labels.tolist())  # in order, once each
        what = "all" if cfg.get("labels") else "-".join(str(c) for c in classes)
        name += f"_label{what}_w{sampler.guidance_scale:g}"
    name = job.tagged(name)
    out = output_dir(cfg.out_dir, cfg.run_dir, ckpt, "samples", name)
    num = cfg.num_samples if labels is None else len(labels)

    start = time.perf_counter()
    samples, trajectory = generate(
        model,
        sampler,
        num,
        cfg.seed,
        device,
        record=viz.progress_steps(len(schedule)),
        progress=cfg.progress,
        labels=labels,
    )
    took = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    viz.save_grid(samples, out / "grid.png", nrow=10 if cfg.get("labels") else 8)
    viz.save_progress(trajectory, out / "progress.png")
    torch.save(samples.detach().cpu().contiguous(), out / "samples.pt")
    accuracy = None
    if labels is not None:
        torch.save(labels.clone(), out / "labels.pt")
        accuracy = read_back(samples, labels, job.config.get("dataset"))
        if accuracy is not None:
            log.info(
                "the evaluator reads %.1f%% as the requested label",
                100 * accuracy["label_accuracy"],
            )
    info = {
        "checkpoint": str(ckpt),
        "sampler": sampler_name,
        "steps": steps,
        "nfe": sampler.nfe,  # network calls per image
        "num_samples": num,
        "labels": None if labels is None else labels.tolist(),
        "guidance_scale": None if labels is None else sampler.guidance_scale,
        "label_accuracy": accuracy,
        "seed": cfg.seed,
        "device": str(device),
        "seconds": took,
        "images_per_s": num / took,
        "out_dir": str(out),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "sample.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "%d images with %s (%d steps) in %.1f s (%.2f images/s) -> %s",
        num,
        sampler_name,
        steps,
        took,
        info["images_per_s"],
        out,
    )
    return info


def main(cfg: DictConfig) -> None:
    sample(cfg, sampler_choice())


cli = hydra_command("ddpm-sample", __doc__, "sample", main)

if __name__ == "__main__":
    cli()
