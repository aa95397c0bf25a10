"""``trainer``: how long and how to train, and how often to log, sample, evaluate and save.

The ``trainer`` group builds :class:`TrainerSettings`; its fields are the allowed keys (a key
not listed here is refused, see :mod:`ddpm.configs.run_config`) and ``__post_init__`` holds
every range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ddpm.diffusion.objective import LOSS_WEIGHTINGS
from ddpm.errors import fail, is_int, is_number, plain, require
from ddpm.hardware.devices import PRECISIONS
from ddpm.training.lr_schedule import LR_SCHEDULES, lr_multiplier
from ddpm.training.posthoc_ema import SIGMA_REL_MAX

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
    posthoc_ema_stds: list[float] | None  # EDM2's post-hoc EMA: one power EMA per sigma_rel
    posthoc_ema_every: int  # steps between snapshots of those EMAs
    label_dropout: float  # conditional models: share of labels replaced by "no label"
    loss_weighting: str  # none | min_snr | soft_min_snr (ddpm.diffusion.objective.x0_weight)
    seed: int
    precision: str  # fp32 | bf16 | fp16 (autocast; fp16 on CUDA only)
    compile: bool | str  # true, or a torch.compile mode: reduce-overhead (CUDA graphs)
    channels_last: bool
    lr_batch_rule: str  # none | linear | sqrt: optimizer.lr scaled by batch_size / 128
    lr_schedule: str  # constant | inverse_sqrt | linear | cosine (ddpm.training.lr_schedule)
    lr_warmup_steps: int  # linear warm-up from 0 over this many steps (0 = none)
    lr_ref_steps: int  # inverse_sqrt: the step where the decay starts
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
        for key in ("sample_every", "checkpoint_every", "eval_every", "lr_warmup_steps"):
            at_least(key, 0)
        at_least("keep_last", 1, nullable=True)
        at_least("lr_ref_steps", 1)
        at_least("eval_samples", 4)
        decay = self.ema_decay
        require(
            decay is None or (is_number(decay) and 0 < decay < 1),
            "trainer.ema_decay",
            decay,
            "a number in (0, 1), or null for no EMA",
        )
        stds = plain(self.posthoc_ema_stds)
        require(
            stds is None
            or (
                isinstance(stds, list)
                and len(stds) > 0
                and all(is_number(v) and 0 < v <= SIGMA_REL_MAX for v in stds)
                and len(set(stds)) == len(stds)
            ),
            "trainer.posthoc_ema_stds",
            stds,
            f"a list of distinct relative EMA stds in (0, {SIGMA_REL_MAX:.4f}] "
            "(e.g. [0.05,0.1]), or null for no post-hoc EMA",
        )
        self.posthoc_ema_stds = None if stds is None else [float(v) for v in stds]
        at_least("posthoc_ema_every", 1)
        dropout = self.label_dropout
        require(
            is_number(dropout) and 0 <= dropout < 1,
            "trainer.label_dropout",
            dropout,
            "a probability in [0, 1)",
        )
        for key, allowed in (
            ("loss_weighting", LOSS_WEIGHTINGS),
            ("precision", PRECISIONS),
            ("lr_schedule", LR_SCHEDULES),
        ):
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

    def lr_at(self, step: int, total: int, train_time_s: float) -> float:
        """The factor on the optimizer's rate for ``step`` (1-based) of ``total``: the run's
        progress before the step is the larger of its share of steps done and of its time
        budget used (``train_time_s``), so the first step runs at the full rate."""
        progress = min(max((step - 1) / total, train_time_s / self.budget_s), 1.0)
        return lr_multiplier(
            self.lr_schedule, step, progress, self.lr_warmup_steps, self.lr_ref_steps
        )

    @property
    def budget_s(self) -> float:
        return self.max_minutes * 60 if self.max_minutes else math.inf
