"""What a checkpoint holds: the weights, their EMA, the post-hoc EMA's power profiles, the
optimizer, the position in the run, the recent losses and every random stream, with
``state_dict``/``load_state_dict``.

Losses stay on the device while training runs (reading one waits for the GPU); the window
of not-yet-logged steps is read back at log, checkpoint and sampling boundaries, where a
non-finite loss stops the run before anything is written from the bad weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from ddpm.errors import UserError
from ddpm.runs import checkpoint
from ddpm.training.lr_schedule import remember_base_lr
from ddpm.training.posthoc_ema import PowerEMA, tracked


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: training stops before another checkpoint is written."""


def ema_update(decay: float) -> Callable[..., None]:
    """EMA with warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates.

    A fixed 0.999 would still weigh the first weights by 0.999^n (37% after 1000 steps), which
    ruins the EMA of a short CPU run; the warm-up reaches the full decay after ~9000 updates.
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n: Tensor) -> None:
        # on the device: reading n back would wait for the GPU every step
        d = ((1.0 + n) / (10.0 + n)).clamp(max=decay).to(averaged[0].dtype)
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


@dataclass
class LossWindow:
    """The losses of the steps since the last log row: ``(step, loss, images)`` each, the
    loss a device tensor until :meth:`read` turns it into a float."""

    steps: list[tuple[int, Tensor | float, int]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, step: int, loss: Tensor, images: int) -> None:
        self.steps.append((step, loss, images))

    def read(self, last_good: Path) -> None:
        """Floats for every pending loss (one device sync); stops at the first non-finite."""
        pending = [i for i, (_, v, _) in enumerate(self.steps) if isinstance(v, Tensor)]
        if not pending:
            return
        values = torch.stack([self.steps[i][1] for i in pending]).double().cpu().tolist()
        for i, value in zip(pending, values, strict=True):
            step, _, images = self.steps[i]
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"loss is {value} at step {step}: training stopped before another "
                    f"checkpoint was written; the last good checkpoint is {last_good} (try a "
                    "lower optimizer.lr or trainer.grad_clip)"
                )
            self.steps[i] = (step, value, images)

    def mean(self) -> float:
        """Mean loss per image over the window (call :meth:`read` first)."""
        images = sum(n for _, _, n in self.steps)
        return sum(float(v) * n for _, v, n in self.steps) / images

    @property
    def images(self) -> int:
        return sum(n for _, _, n in self.steps)

    def clear(self) -> None:
        self.steps, self.seconds = [], 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": [[s, float(v), n] for s, v, n in self.steps], "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "steps" not in state:  # checkpoints before per-step windows: the window's mean
            n = int(state.get("images", 0))
            state = {"steps": [[0, state["loss"] / n, n]] if n else [], "seconds": state["time"]}
        self.steps = [(int(s), float(v), int(n)) for s, v, n in state["steps"]]
        self.seconds = float(state["seconds"])


@dataclass
class TrainState:
    """Everything that changes as training goes; a checkpoint is its ``state_dict``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: AveragedModel | None = None
    step: int = 0
    epoch: int = 0
    images_seen: int = 0
    train_time_s: float = 0.0
    history: list[list[float]] = field(default_factory=list)  # [step, mean loss] per log row
    window: LossWindow = field(default_factory=LossWindow)
    posthoc_ema: list[PowerEMA] = field(default_factory=list)  # one per trainer.posthoc_ema_stds

    @classmethod
    def create(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ema_decay: float | None,
        posthoc_ema_stds: Sequence[float] | None = None,
    ) -> TrainState:
        ema = None
        if ema_decay:
            ema = AveragedModel(model, multi_avg_fn=ema_update(ema_decay), use_buffers=True)
        posthoc = [PowerEMA(std, tracked(model)) for std in posthoc_ema_stds or ()]
        return cls(model, optimizer, ema, posthoc_ema=posthoc)

    def update_posthoc_ema(self) -> None:
        """One step of every power EMA (the tensors are looked up each step: moving the
        model, e.g. to channels_last, replaces them)."""
        if self.posthoc_ema:
            current = list(tracked(self.model, self.posthoc_ema[0].names).values())
            for profile in self.posthoc_ema:
                profile.update(current)

    @property
    def shown(self) -> nn.Module:
        """What sampling and evaluation use: the EMA weights when kept."""
        return self.ema.module if self.ema is not None else self.model

    def read_losses(self, last_good: Path) -> None:
        """The window's losses as floats (see :meth:`LossWindow.read`); the wait for the
        device counts as training time, since the queued steps run during it."""
        started = time.perf_counter()
        self.window.read(last_good)
        waited = time.perf_counter() - started
        self.train_time_s += waited
        self.window.seconds += waited

    def progress(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "images_seen": self.images_seen,
            "train_time_s": self.train_time_s,
            "history": self.history,
            "window": self.window.state_dict(),
        }

    def state_dict(self) -> dict[str, Any]:
        ema = {}
        if self.ema is not None:
            ema = {"ema": self.ema.module.state_dict(), "ema_updates": int(self.ema.n_averaged)}
        if self.posthoc_ema:
            ema["posthoc_ema"] = [profile.state_dict() for profile in self.posthoc_ema]
        return {
            "model": self.model.state_dict(),
            **ema,
            "optimizer": self.optimizer.state_dict(),
            "progress": self.progress(),
            "rng": checkpoint.capture_rng(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Restores weights, optimizer, position and RNG streams, so the run continues as if
        never stopped."""
        checkpoint.load_weights(self.model, state["model"], path)
        if self.ema is not None:  # EMA switched on mid-run starts from the current weights
            checkpoint.load_weights(self.ema.module, state.get("ema") or state["model"], path)
            self.ema.n_averaged.fill_(state.get("ema_updates", 0))
        self.optimizer.load_state_dict(state["optimizer"])
        remember_base_lr(self.optimizer)  # checkpoints before lr schedules saved no initial_lr
        p = state["progress"]
        self.step, self.epoch = int(p["step"]), int(p["epoch"])
        self.images_seen, self.train_time_s = int(p["images_seen"]), float(p["train_time_s"])
        self.history = [list(row) for row in p["history"]]
        self.window.load_state_dict(p["window"])
        # A profile the checkpoint lacks (switched on mid-run) starts after the current step.
        saved = {float(s["sigma_rel"]): s for s in state.get("posthoc_ema", [])}
        for profile in self.posthoc_ema:
            if profile.sigma_rel in saved:
                profile.load_state_dict(saved[profile.sigma_rel])
            else:
                profile.restart(self.step)
        checkpoint.restore_rng(state["rng"])
