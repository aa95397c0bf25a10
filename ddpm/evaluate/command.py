"""What ``python -m ddpm.evaluate run_dir=<run>`` does: sample from a run, measure the samples.

The model and schedule come from the run's checkpoint (:func:`ddpm.runs.load.load_trained`), the
sampler from ``conf/sampler``; metrics are those of :func:`ddpm.evaluate.metrics.evaluate_images`
on the run's dataset's cached evaluator (``features=classifier``) or on Inception-v3 features
(``features=inception``). Writes ``<run>/eval/<sampler>_<steps>_n<N>[_<ckpt stem>].json`` (that
name in ``out_dir`` when set) and, when the run has a W&B run, logs ``eval/<name>/<metric>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddpm.errors import is_int, require
from ddpm.evaluate.cache import dataset_of, evaluator_for, load_evaluator, resolve_dir
from ddpm.evaluate.metrics import K_NEIGHBOURS, evaluate_images
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.runs.load import data_root, load_for_sampling, output_dir
from ddpm.samplers.generate import balanced_labels, sample_images

log = logging.getLogger("ddpm")
MIN_SAMPLES = K_NEIGHBOURS + 1
FEATURES = ("classifier", "inception")


def _check(cfg: DictConfig) -> None:
    for key, low in (("num_samples", MIN_SAMPLES), ("batch_size", 1)):
        require(is_int(cfg[key], low), key, cfg[key], f"an integer >= {low}")
    require(isinstance(cfg.wandb, bool), "wandb", cfg.wandb, "true or false")
    require(is_int(cfg.bootstrap, 0), "bootstrap", cfg.bootstrap, "an integer >= 0 (0 = off)")
    features = cfg.get("features", "classifier")
    require(features in FEATURES, "features", features, f"one of {', '.join(FEATURES)}")


def scorer(cfg: DictConfig, run_cfg: DictConfig, device: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(extractor, reference, what the JSON says about them) for the run's dataset."""
    name, options = dataset_of(run_cfg.get("dataset"))
    root = data_root(run_cfg, cfg.dataset.root)
    if cfg.get("features", "classifier") == "inception":
        from ddpm.data import load_dataset
        from ddpm.evaluate.inception import load_inception

        node = OmegaConf.to_container(run_cfg.dataset, resolve=True)
        node.pop("train", None)
        key = hashlib.sha1(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()
        overrides = {"train": False} | ({"root": root} if root is not None else {})
        model, reference = load_inception(
            f"{name}-{key[:10]}", lambda: load_dataset(run_cfg.dataset, **overrides).images, device
        )
        return model, reference, {"dataset": name, "features": "inception", **model.meta}
    name, options = evaluator_for(run_cfg.get("dataset"), "features", "classifier")
    model, reference = load_evaluator(
        cfg.evaluator_dir, device, data_root=root, dataset=name, options=options
    )
    info = {
        "dataset": name,
        "features": "classifier",
        "dir": str(resolve_dir(cfg.evaluator_dir, name)),
        "test_accuracy": model.meta["test_accuracy"],
        "build_id": model.meta["build_id"],
        "arch": model.arch(),  # which classifier: a second evaluator differs here and in seed
        "seed": model.meta.get("seed"),
    }
    return model, reference, info


def evaluate_run(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """Samples ``cfg.num_samples`` images from the run, measures them, writes the JSON.

    A conditional run draws every class equally often at ``sampler.guidance_scale`` and also
    reports the label accuracy (overall and per class).
    """
    _check(cfg)
    job = load_for_sampling(cfg)
    model, sampler, path, device = job.model, job.sampler, job.checkpoint, job.device
    name = f"{job.setting(sampler_name)}_n{cfg.num_samples}"
    if getattr(model, "num_classes", None) is not None:
        name += f"_w{sampler.guidance_scale:g}"  # conditional: one file per guidance scale
    name = job.tagged(name)
    default_out = output_dir(None, cfg.run_dir, path, "eval", name)
    folder = Path(cfg.out_dir).expanduser() if cfg.out_dir else default_out.parent
    out = folder / f"{default_out.name}.json"
    evaluator, reference, evaluator_info = scorer(cfg, job.config, device)

    start = time.perf_counter()
    labels = balanced_labels(model, cfg.num_samples)
    images = sample_images(
        model, sampler, cfg.num_samples, cfg.batch_size, cfg.seed, device, cfg.progress, labels
    )
    sample_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate_images(
        images, evaluator, reference, seed=cfg.seed, labels=labels, bootstrap=cfg.bootstrap
    )
    eval_s = time.perf_counter() - start
    train_step = job.step

    result = {
        "metrics": metrics,
        "checkpoint": str(path),
        "step": train_step,
        "sampler": sampler_name,
        "steps": len(sampler.timesteps),
        "nfe": sampler.nfe,  # network calls per image
        "guidance_scale": sampler.guidance_scale if labels is not None else None,
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "device": str(device),
        "sample_seconds": sample_s,
        "eval_seconds": eval_s,
        "evaluator": evaluator_info,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    shown = "  ".join(f"{k} {_shown(v)}" for k, v in metrics.items() if "share_" not in k)
    log.info("%s: %s", name, shown)
    log.info("sampling %.1f s, metrics %.1f s -> %s", sample_s, eval_s, out)
    if cfg.wandb:
        from hydra.utils import get_object

        logger = OmegaConf.to_container(job.config.get("logger") or {}, resolve=True)
        prefixed = {f"eval/{default_out.name}/{k}": v for k, v in _scalars(metrics).items()}
        target = logger.get("_target_", "ddpm.runs.tracking.Tracker")
        # Runs trained before the package layout name their logger ddpm.tracking.<Class>.
        tracker = get_object(target.replace("ddpm.tracking.", "ddpm.runs.tracking.", 1))
        tracker.add_to_run(default_out.parent.parent, job.run_id, prefixed, train_step, logger)
    return result


def _shown(value: Any) -> str:
    """A metric for the log line: a number to 4 digits, an interval as [low, high]."""
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}"


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics as W&B scalars: an interval ``[low, high]`` as ``<key>_low``/``_high``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, list):
            out[f"{key}_low"], out[f"{key}_high"] = value
        else:
            out[key] = value
    return out


def main(cfg: DictConfig) -> None:
    evaluate_run(cfg, sampler_choice())


cli = hydra_command(
    "ddpm-evaluate",
    """Sample from a trained run and measure FID, KID, precision/recall and class coverage
against the test split, on the run's dataset's cached evaluator (built on first use) or, with
features=inception, on Inception-v3 features.""",
    "evaluate",
    main,
)
