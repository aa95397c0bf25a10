"""Rebuild a trained run from its folder: config, network weights and noise schedule.

Every command that reads a finished run (``ddpm.sample``, ``ddpm.denoise``, later evaluation)
goes through :func:`load_trained`, so "what a run is" is defined once: the resolved config
saved inside its checkpoint, not whatever ``conf/`` says today.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddpm.configs.presets import build
from ddpm.configs.run_config import build_process
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError, fail, require
from ddpm.hardware.devices import pick_device
from ddpm.runs import checkpoint as ckpt
from ddpm.samplers import auto_plan
from ddpm.samplers.base import Sampler


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
) -> tuple[DictConfig, nn.Module, NoiseSchedule]:
    """The run's config, its network (weights loaded, eval mode, on ``device``) and schedule.
    ``ema``: the EMA weights when the run kept them (else, or when False, the raw ones)."""
    cfg, model, schedule, _, _ = _rebuild(checkpoint_path(run_dir, checkpoint), device, ema)
    return cfg, model, schedule


def _rebuild(
    path: Path, device: torch.device | str, ema: bool = True
) -> tuple[DictConfig, nn.Module, NoiseSchedule, int | None, str | None]:
    """Reads a checkpoint once: config, network, schedule, the training step it was at and
    the tracker's run id.
    ``ema``: the EMA weights when the run kept them (else, or when False, the raw ones)."""
    state = ckpt.load(path, map_location=device)
    if not isinstance(state.get("config"), dict) or "model" not in state:
        fail("checkpoint", str(path), "holds no model weights and config")
    cfg = OmegaConf.create(state["config"])
    model = instantiate(cfg.model)
    # The EMA weights when the run kept them: they are what its samples were drawn with.
    ckpt.load_weights(model, (state.get("ema") if ema else None) or state["model"], path)
    model.to(device).eval()
    schedule = build_process(cfg).to(device).grid  # a run without `process` is a DDPM run
    step = state.get("step")
    return cfg, model, schedule, step if isinstance(step, int) else None, ckpt.run_id(state)


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

    def setting(self, sampler_name: str) -> str:
        """``<sampler>_<rows>``, plus ``_plan-<file stem>`` on a fitted plan: the stem of an
        output name, so two plans of one length never share a file or folder."""
        name = f"{sampler_name}_{len(self.sampler.timesteps)}"
        plan = getattr(self.sampler, "plan_file", None)
        return name if plan is None else f"{name}_plan-{Path(plan).stem}"

    def tagged(self, name: str) -> str:
        """An output name; ``_raw`` marks outputs of the raw weights, so they never share a
        file or folder with the EMA's."""
        return name if self.ema else f"{name}_raw"


def load_for_sampling(cfg: DictConfig) -> SamplingJob:
    """Reads ``run_dir``/``checkpoint``/``device``/``sampler`` of a command's config."""

    device = pick_device(cfg.device)
    path = checkpoint_path(cfg.run_dir, cfg.checkpoint)
    use_ema = cfg.get("ema", True)
    require(isinstance(use_ema, bool), "ema", use_ema, "true (the run's EMA weights) or false")
    run_cfg, model, schedule, step, run_id = _rebuild(path, device, use_ema)
    sampler = build(cfg.sampler, schedule=schedule)
    # sampler.plan=auto: fitted to these weights on first use, cached beside the run's plans
    sampler = auto_plan.resolve(sampler, model, run_folder(cfg.run_dir, path) / "plans", device)
    return SamplingJob(run_cfg, model, schedule, sampler, path, device, step, run_id, use_ema)


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
