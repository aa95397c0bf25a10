"""What the network predicts (eps, x0 or v), the conversions between them, and the loss.

A model declares its target in ``model.prediction``; samplers turn any output into an x0
estimate with :func:`to_x0` and so never care which target a run used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.diffusion.schedule import NoiseSchedule

PREDICTIONS = ("eps", "x0", "v")
LOSS_WEIGHTINGS = ("none", "min_snr", "soft_min_snr")
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023's gamma, for every process


def _coefs(schedule: NoiseSchedule, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
    a = schedule.gather(schedule.sqrt_alpha_bar, t, ndim)
    s = schedule.gather(schedule.sqrt_one_minus_alpha_bar, t, ndim)
    return a, s


def target(
    prediction: str, x0: Tensor, noise: Tensor, t: Tensor, schedule: NoiseSchedule
) -> Tensor:
    """The regression target for ``prediction`` (v = sqrt(ab) eps - sqrt(1-ab) x0)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        a, s = _coefs(schedule, t, x0.ndim)
        return a * noise - s * x0
    raise ValueError(f"model.prediction={prediction!r}: allowed {', '.join(PREDICTIONS)}")


def to_x0(
    prediction: str, output: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule
) -> Tensor:
    """The x0 estimate implied by a network output at (x_t, t)."""
    if prediction == "x0":
        return output
    a, s = _coefs(schedule, t, x_t.ndim)
    return x0_from(prediction, output, x_t, a, s)


def x0_from(prediction: str, output: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """The x0 estimate from an output at signal scale ``a`` = sqrt(ab), noise ``s``."""
    if prediction == "x0":
        return output
    if prediction == "eps":
        return (x_t - s * output) / a
    if prediction == "v":
        return a * x_t - s * output
    raise ValueError(f"model.prediction={prediction!r}: allowed {', '.join(PREDICTIONS)}")


def to_eps(x0: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The noise consistent with an x0 estimate at (x_t, t)."""
    a, s = _coefs(schedule, t, x_t.ndim)
    return (x_t - a * x0) / s


def x0_weight(snr: Tensor, weighting: str, gamma: float = MIN_SNR_GAMMA) -> Tensor:
    """A weighting's per-sample weight on the x0 error at signal-to-noise ratio ``snr``.

    ``min_snr`` (Hang et al. 2023): min(SNR, gamma). ``soft_min_snr`` (Crowson et al. 2024):
    the smooth minimum SNR gamma / (SNR + gamma) (1 / (1/SNR + 1/gamma)), which tends to
    min_snr far from SNR = gamma and has no kink. (``none``, the process's own loss, is the
    callers'.)
    """
    if weighting == "min_snr":
        return snr.clamp(max=gamma)
    if weighting == "soft_min_snr":
        return snr * gamma / (snr + gamma)
    raise ValueError(f"trainer.loss_weighting={weighting!r}: one of {', '.join(LOSS_WEIGHTINGS)}")


def loss_weight(
    prediction: str,
    weighting: str,
    t: Tensor,
    schedule: NoiseSchedule,
    gamma: float = MIN_SNR_GAMMA,
) -> Tensor:
    """Per-sample loss weights on the ``prediction`` error (:func:`x0_weight` in x0 units)."""
    if weighting == "none":
        return torch.ones_like(t, dtype=torch.float32)
    snr = schedule.snr[t]
    clipped = x0_weight(snr, weighting, gamma)
    # An eps (v) error is an x0 error scaled by 1/snr (1/(snr+1)); undo that scale.
    return {"x0": clipped, "eps": clipped / snr, "v": clipped / (snr + 1)}[prediction]


def drop_labels(labels: Tensor, p: float, null_label: int) -> Tensor:
    """Each label replaced by ``null_label`` with probability ``p`` (classifier-free guidance
    training: the same network learns the unconditional prediction)."""
    if p <= 0:
        return labels
    dropped = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(dropped, torch.full_like(labels, null_label), labels)


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: Tensor,
    weighting: str = "none",
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
    part: slice = slice(None),
) -> Tensor:
    """The DDPM training loss on a batch: t ~ U[0, T), eps ~ N(0, I), MSE to the target.

    ``labels`` (conditional models) are dropped to the null label at rate ``label_dropout``.
    ``part`` selects the images this process computes (data-parallel ranks): every rank draws
    t, noise and dropout for the whole batch from the same RNG stream, so the split cannot
    change them, and returns its part's sum over the whole batch's size; the ranks' gradient
    average (times the number of ranks) is then exactly the whole batch's mean.
    """
    size = x0.shape[0]
    t = torch.randint(0, len(schedule), (size,), device=x0.device)
    x0, t, noise, labels = rank_part(model, x0, t, labels, label_dropout, part)
    x_t = schedule.q_sample(x0, t, noise)
    output = model(x_t, t) if labels is None else model(x_t, t, labels)
    goal = target(model.prediction, x0, noise, t, schedule)
    if weighting == "none" and part == slice(None):
        return F.mse_loss(output, goal)
    weights = loss_weight(model.prediction, weighting, t, schedule)
    return weighted_mse(output, goal, weights, size)


def rank_part(
    model: nn.Module,
    x0: Tensor,
    levels: Tensor,
    labels: Tensor | None,
    label_dropout: float,
    part: slice,
    couple: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Noise and label dropout drawn for the whole batch (after its noise levels, by the
    caller), then this rank's ``part`` of images, levels, noise and labels: every loss draws
    in this order, so the split over ranks cannot change a draw. ``couple(x0, noise)``
    reorders the whole batch's noise over its images (flow matching's OT pairing) first."""
    noise = torch.randn_like(x0)
    if couple is not None:
        noise = couple(x0, noise)
    if labels is not None:
        labels = drop_labels(labels, label_dropout, model.null_label)[part]
    return x0[part], levels[part], noise[part], labels


def weighted_mse(output: Tensor, goal: Tensor, weights: Tensor, size: int) -> Tensor:
    """Each image's mean squared error times its weight, summed over this rank's part and
    divided by the whole batch's ``size`` (so the ranks' parts add up to the batch mean)."""
    per_sample = (output - goal).pow(2).flatten(1).mean(1)
    return (weights * per_sample).sum() / size
