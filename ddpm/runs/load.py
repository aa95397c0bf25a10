"""Rebuild a trained run from its folder: config, network weights and noise schedule.

Every command that reads a finished run (``ddpm.sample``, ``ddpm.denoise``, later evaluation)
goes through :func:`load_trained`, so "what a run is" is defined once: the resolved config
saved inside its checkpoint, not whatever ``conf/`` says today. ``posthoc_ema=<sigma_rel>``
swaps in the weights :mod:`ddpm.training.posthoc_ema` rebuilds from the run's snapshots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddpm.configs.later_keys import completed
from ddpm.configs.presets import build
from ddpm.configs.run_config import build_process
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError, fail, is_number, require
from ddpm.hardware.devices import pick_device
from ddpm.runs import checkpoint as ckpt
from ddpm.samplers import auto_plan
from ddpm.samplers.base import Sampler
from ddpm.training import posthoc_ema as phema


def checkpoint_path(run_dir: str | Path | None, checkpoint: str | Path | None = None) -> Path:
    """``checkpoint`` when given, else ``<run_dir>/checkpoints/last.pt``; UserError if absent."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        require(path.is_file(), "checkpoint", str(path), "no such file")
        return path
    if run_dir is None:
        raise UserError("run_dir: required, the folder of a training run (run_dir=outputs/...)")
    run = Path(run_dir).expanduser()
    require(run.is_dir(), "run_dir", str(run), "no such directory")
    path = run / "checkpoints" / "last.pt"
    require(
        path.is_file(),
        "run_dir",
        str(run),
        "no checkpoints/last.pt in it (is it a finished run? or pass checkpoint=<file>)",
    )
    return path


def load_trained(
    run_dir: str | Path | None,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    ema: bool = True,
    posthoc_ema: float | None = None,
) -> tuple[DictConfig, nn.Module, NoiseSchedule]:
    """The run's config, its network (weights loaded, eval mode, on ``device``) and schedule.
    ``ema``: the EMA weights when the run kept them (else, or when False, the raw ones).
    ``posthoc_ema``: a sigma_rel, the weights rebuilt from the run's post-hoc EMA snapshots."""
    path = checkpoint_path(run_dir, checkpoint)
    posthoc = posthoc_choice(posthoc_ema, ema)
    cfg, model, schedule, _, _ = _rebuild(path, device, ema, posthoc, run_folder(run_dir, path))
    return cfg, model, schedule


def posthoc_choice(value: object, ema: bool = True) -> float | None:
    """The ``posthoc_ema`` key: null, or the relative std the snapshots are combined into."""
    if value is None:
        return None
    require(
        is_number(value) and 0 < value <= phema.SIGMA_REL_MAX,
        "posthoc_ema",
        value,
        f"a relative EMA std sigma_rel in (0, {phema.SIGMA_REL_MAX:.4f}] (e.g. 0.08), or null",
    )
    require(ema, "ema", ema, f"posthoc_ema={value:g} replaces the EMA and raw weights; keep true")
    return float(value)


def _rebuild(
    path: Path,
    device: torch.device | str,
    ema: bool = True,
    posthoc: float | None = None,
    run_dir: Path | None = None,
) -> tuple[DictConfig, nn.Module, NoiseSchedule, int | None, str | None]:
    """Reads a checkpoint once: config, network, schedule, the training step it was at and
    the tracker's run id.
    ``ema``: the EMA weights when the run kept them (else, or when False, the raw ones);
    ``posthoc``: a sigma_rel, instead the weights rebuilt from ``<run_dir>/ema_profiles`` at
    the checkpoint's step."""
    run_dir = run_dir if run_dir is not None else run_folder(None, path)
    if posthoc is not None:  # before the checkpoint is read: a run without snapshots
        phema.require_snapshots(run_dir, posthoc)
    state = ckpt.load(path, map_location=device)
    if not isinstance(state.get("config"), dict) or "model" not in state:
        fail("checkpoint", str(path), "holds no model weights and config")
    cfg = OmegaConf.create(state["config"])
    model = instantiate(completed("model", cfg.model))
    # The EMA weights when the run kept them: they are what its samples were drawn with.
    weights = (state.get("ema") if ema else None) or state["model"]
    step = state.get("step")
    step = step if isinstance(step, int) else None
    if posthoc is not None:  # integer buffers (none in this repo's networks) stay as saved
        weights = {**weights, **phema.reconstruct_run(run_dir, posthoc, step).weights}
    ckpt.load_weights(model, weights, path)
    model.to(device).eval()
    schedule = build_process(cfg).to(device).grid  # a run without `process` is a DDPM run
    return cfg, model, schedule, step, ckpt.run_id(state)


def output_dir(
    out_dir: str | Path | None,
    run_dir: str | Path | None,
    checkpoint: Path,
    kind: str,
    name: str,
) -> Path:
    """``out_dir`` when set, else ``<run>/<kind>/<name>[_<checkpoint stem>]``.

    The run is ``run_dir``, or the folder above the checkpoint's ``checkpoints/``; the stem is
    added for any checkpoint other than ``last.pt`` so two checkpoints never share a folder.
    """
    if out_dir is not None:
        return Path(out_dir).expanduser()
    root = run_folder(run_dir, checkpoint)
    suffix = "" if checkpoint.name == "last.pt" else f"_{checkpoint.stem}"
    return root / kind / f"{name}{suffix}"


def run_folder(run_dir: str | Path | None, checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: ``run_dir``, or the folder above its ``checkpoints/``."""
    if run_dir is not None:
        return Path(run_dir).expanduser()
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


@dataclass
class SamplingJob:
    """A trained run rebuilt for a command that samples from it (sample, denoise, evaluate)."""

    config: DictConfig  # the run's own resolved training config
    model: nn.Module
    schedule: NoiseSchedule
    sampler: Sampler  # the command's sampler, on the run's schedule
    checkpoint: Path
    device: torch.device
    step: int | None  # the training step the checkpoint was written at
    run_id: str | None  # the tracker's id of the run (W&B's), for numbers measured later
    ema: bool = True  # the run's EMA weights were asked for (``ema=false``: the raw ones)
    posthoc_ema: float | None = None  # a sigma_rel: weights rebuilt from the run's snapshots

    def setting(self, sampler_name: str) -> str:
        """``<sampler>_<rows>``, plus ``_plan-<file stem>`` on a fitted plan: the stem of an
        output name, so two plans of one length never share a file or folder."""
        name = f"{sampler_name}_{len(self.sampler.timesteps)}"
        plan = getattr(self.sampler, "plan_file", None)
        return name if plan is None else f"{name}_plan-{Path(plan).stem}"

    def tagged(self, name: str) -> str:
        """An output name; ``_raw`` marks outputs of the raw weights and ``_phema<sigma_rel>``
        those of post-hoc EMA weights, so they never share a file or folder with the EMA's."""
        if self.posthoc_ema is not None:
            return f"{name}_phema{self.posthoc_ema:g}"
        return name if self.ema else f"{name}_raw"


def load_for_sampling(cfg: DictConfig) -> SamplingJob:
    """Reads ``run_dir``/``checkpoint``/``device``/``sampler`` of a command's config."""

    device = pick_device(cfg.device)
    path = checkpoint_path(cfg.run_dir, cfg.checkpoint)
    use_ema = cfg.get("ema", True)
    require(isinstance(use_ema, bool), "ema", use_ema, "true (the run's EMA weights) or false")
    posthoc = posthoc_choice(cfg.get("posthoc_ema"), use_ema)
    run = run_folder(cfg.run_dir, path)
    run_cfg, model, schedule, step, run_id = _rebuild(path, device, use_ema, posthoc, run)
    sampler = build(cfg.sampler, schedule=schedule)
    if schedule.precond is not None:  # a continuous process's run (DDPM's grid has none)
        schedule.precond.check_sampler(sampler)
    # sampler.plan=auto: fitted to these weights on first use, cached beside the run's plans
    sampler = auto_plan.resolve(sampler, model, run / "plans", device)
    return SamplingJob(
        run_cfg, model, schedule, sampler, path, device, step, run_id, use_ema, posthoc
    )


def data_root(run_cfg: DictConfig, given: str | None) -> str | None:
    """Where a command reads a run's data: ``given`` (its ``dataset.root``) when set; else the
    run's own root while it exists here; else ``$DDPM_DATA_ROOT`` (a run copied from another
    machine, or written with ``root: data``); else the run's root, whose missing files the
    dataset then names in one line."""
    if given is not None:
        return str(given)
    saved = (run_cfg.get("dataset") or {}).get("root")
    if saved is not None and Path(str(saved)).expanduser().is_dir():
        return str(saved)
    return os.environ.get("DDPM_DATA_ROOT", None if saved is None else str(saved))
