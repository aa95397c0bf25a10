"""``trainer``: how long and how to train, and how often to log, sample, evaluate and save.

The ``trainer`` group builds :class:`TrainerSettings`; its fields are the allowed keys (a key
not listed here is refused, see :mod:`ddpm.configs.run_config`) and ``__post_init__`` holds
every range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ddpm.diffusion.objective import LOSS_WEIGHTINGS
from ddpm.errors import fail, is_int, is_number, require
from ddpm.hardware.devices import PRECISIONS

# torch.compile modes: reduce-overhead replays the step's kernels as CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
LR_BATCH_RULES = ("none", "linear", "sqrt")
SEED_BATCH = 128  # the batch the optimizer's lr was tuned at (the study note's)


@dataclass(kw_only=True)
class TrainerSettings:
    """Each field's meaning and default: conf/trainer/default.yaml (the seed's recipe)."""

    batch_size: int
    epochs: int
    max_steps: int | None  # wins over epochs
    max_minutes: float | None  # stops at the first step past this training time
    grad_clip: float
    ema_decay: float | None  # e.g. 0.999: an EMA of the weights samples better
    label_dropout: float  # conditional models: share of labels replaced by "no label"
    loss_weighting: str  # none | min_snr (min-SNR-gamma, gamma 5)
    seed: int
    precision: str  # fp32 | bf16 | fp16 (autocast; fp16 on CUDA only)
    compile: bool | str  # true, or a torch.compile mode: reduce-overhead (CUDA graphs)
    channels_last: bool
    lr_batch_rule: str  # none | linear | sqrt: optimizer.lr scaled by batch_size / 128
    log_every: int
    sample_every: int
    checkpoint_every: int
    num_samples: int
    eval_every: int
    eval_samples: int
    keep_last: int | None
    resume: str | None

    def __post_init__(self) -> None:
        def at_least(key: str, low: int, nullable: bool = False) -> None:
            value = getattr(self, key)
            ok = (nullable and value is None) or is_int(value, low)
            require(ok, f"trainer.{key}", value, f"an integer >= {low}" + (", or null" * nullable))

        def positive(key: str, nullable: bool = False) -> None:
            value = getattr(self, key)
            ok = (nullable and value is None) or (is_number(value) and value > 0)
            require(ok, f"trainer.{key}", value, "a number > 0" + (", or null" * nullable))

        at_least("batch_size", 1)
        at_least("max_steps", 1, nullable=True)
        if self.max_steps is None:
            at_least("epochs", 1)
        positive("max_minutes", nullable=True)
        positive("grad_clip")
        at_least("seed", 0)
        for key in ("log_every", "num_samples"):
            at_least(key, 1)
        for key in ("sample_every", "checkpoint_every", "eval_every"):
            at_least(key, 0)
        at_least("keep_last", 1, nullable=True)
        at_least("eval_samples", 4)
        decay = self.ema_decay
        require(
            decay is None or (is_number(decay) and 0 < decay < 1),
            "trainer.ema_decay",
            decay,
            "a number in (0, 1), or null for no EMA",
        )
        dropout = self.label_dropout
        require(
            is_number(dropout) and 0 <= dropout < 1,
            "trainer.label_dropout",
            dropout,
            "a probability in [0, 1)",
        )
        for key, allowed in (("loss_weighting", LOSS_WEIGHTINGS), ("precision", PRECISIONS)):
            value = getattr(self, key)
            require(value in allowed, f"trainer.{key}", value, f"one of {', '.join(allowed)}")
        require(
            isinstance(self.channels_last, bool),
            "trainer.channels_last",
            self.channels_last,
            "true or false",
        )
        require(
            isinstance(self.compile, bool) or self.compile in COMPILE_MODES,
            "trainer.compile",
            self.compile,
            f"true, false or a mode: {', '.join(COMPILE_MODES)}",
        )
        rule = self.lr_batch_rule
        require(
            rule in LR_BATCH_RULES,
            "trainer.lr_batch_rule",
            rule,
            f"one of {', '.join(LR_BATCH_RULES)}",
        )
        if self.resume is not None and not isinstance(self.resume, str):
            fail("trainer.resume", self.resume, "auto, never, or a checkpoint path")

    def total_steps(self, num_items: int) -> int:
        """``max_steps`` when set, else ``epochs`` full passes over ``num_items`` images."""
        if self.max_steps is not None:
            return self.max_steps
        return self.epochs * math.ceil(num_items / self.batch_size)

    def lr_factor(self) -> float:
        """How much the optimizer's lr is scaled for this batch size: ``linear`` (Goyal et al.
        2017, lr proportional to batch) or ``sqrt`` (the rule that keeps Adam's update noise
        constant, Malladi et al. 2022), both from the seed's batch of 128; 1 for ``none``."""
        ratio = self.batch_size / SEED_BATCH
        return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_batch_rule]

    @property
    def budget_s(self) -> float:
        return self.max_minutes * 60 if self.max_minutes else math.inf
