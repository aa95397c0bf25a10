"""What a config may say, checked before anything is built, downloaded or trained.

Each rule raises :class:`~ddpm.errors.UserError` with one line naming the key, its value
and what is allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ddpm.diffusion.objective import LOSS_WEIGHTINGS, PREDICTIONS
from ddpm.errors import UserError


def _fail(key: str, value: object, allowed: str) -> None:
    raise UserError(f"{key}={value!r}: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Checks the composed config; raises UserError on the first problem found."""
    m, s, t = cfg.model, cfg.schedule, cfg.trainer
    channels = list(m.channels)
    if not channels or any(int(c) < 1 for c in channels):
        _fail("model.channels", channels, "a non-empty list of positive widths")
    for c in channels:
        if c % m.norm_groups:
            _fail(
                "model.channels",
                channels,
                f"every width divisible by model.norm_groups={m.norm_groups}",
            )
    if m.time_dim < 4 or m.time_dim % 2:
        _fail("model.time_dim", m.time_dim, "an even integer >= 4")
    if m.image_size % 2 ** (len(channels) - 1):
        _fail(
            "model.image_size",
            m.image_size,
            f"divisible by 2^(levels-1)={2 ** (len(channels) - 1)} for {len(channels)} widths",
        )
    if m.get("prediction", "eps") not in PREDICTIONS:
        _fail("model.prediction", m.prediction, f"one of {', '.join(PREDICTIONS)}")
    if s.timesteps < 1:
        _fail("schedule.timesteps", s.timesteps, "an integer >= 1")
    if "beta_start" in s and not 0 < s.beta_start < s.beta_end < 1:
        _fail("schedule.beta_start", s.beta_start, f"0 < beta_start < beta_end={s.beta_end} < 1")
    if t.batch_size < 1:
        _fail("trainer.batch_size", t.batch_size, "an integer >= 1")
    if t.max_steps is None and t.epochs < 1:
        _fail("trainer.epochs", t.epochs, "an integer >= 1 (or set trainer.max_steps)")
    if t.max_steps is not None and t.max_steps < 1:
        _fail("trainer.max_steps", t.max_steps, "an integer >= 1, or null to use trainer.epochs")
    if t.log_every < 1:
        _fail("trainer.log_every", t.log_every, "an integer >= 1")
    if t.num_samples < 1:
        _fail("trainer.num_samples", t.num_samples, "an integer >= 1")
    if t.loss_weighting not in LOSS_WEIGHTINGS:
        _fail("trainer.loss_weighting", t.loss_weighting, f"one of {', '.join(LOSS_WEIGHTINGS)}")
    if cfg.optimizer.lr <= 0:
        _fail("optimizer.lr", cfg.optimizer.lr, "a number > 0")
    steps = cfg.sampler.get("steps")
    if steps is not None and not 1 <= steps <= s.timesteps:
        _fail("sampler.steps", steps, f"null or 1..schedule.timesteps={s.timesteps}")
