"""The learning rate over a run: a linear warm-up, then constant, EDM2's inverse square root,
or a decay to zero at the run's end.

A short run has no time to anneal by itself: the last steps at a high, constant rate leave the
weights noisy, which an EMA only partly hides. The decays follow the run's progress, the larger
of steps done / planned steps and training time / ``trainer.max_minutes``, so a run bounded by
its time budget anneals into that budget (its rate then depends on the machine's speed, as its
step count already does). The multiplier is a pure function of (step, progress): a resumed run
sets the same rates as the run it continues.
"""

from __future__ import annotations

import math

import torch

LR_SCHEDULES = ("constant", "inverse_sqrt", "linear", "cosine")


def lr_multiplier(
    schedule: str, step: int, progress: float, warmup_steps: int, ref_steps: int
) -> float:
    """The factor on ``optimizer.lr`` for ``step`` (1-based) at ``progress`` in [0, 1].

    ``constant``: 1. ``inverse_sqrt`` (Karras et al. 2024, EDM2): 1 / sqrt(max(step /
    ref_steps, 1)), flat until ``ref_steps`` and then falling with the square root.
    ``linear``: 1 - progress. ``cosine``: (1 + cos(pi progress)) / 2 (Loshchilov & Hutter 2017).
    Times ``min(step / warmup_steps, 1)`` when ``warmup_steps`` > 0.
    """
    if schedule == "constant":
        factor = 1.0
    elif schedule == "inverse_sqrt":
        factor = 1.0 / math.sqrt(max(step / ref_steps, 1.0))
    elif schedule == "linear":
        factor = 1.0 - progress
    elif schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"trainer.lr_schedule={schedule!r}: one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps > 0:
        factor *= min(step / warmup_steps, 1.0)
    return max(factor, 0.0)


def remember_base_lr(optimizer: torch.optim.Optimizer) -> None:
    """Keeps each group's configured rate as ``initial_lr`` (torch's own key for it, saved
    with the optimizer's state), the rate the multiplier scales."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Every group's rate: its ``initial_lr`` times ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
