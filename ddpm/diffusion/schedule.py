"""Noise schedules: one table object per schedule, computed once.

Every quantity the forward process, the losses and the samplers need (alpha_bar, the
posterior coefficients, ...) lives in :class:`NoiseSchedule`. Samplers read these tables and
never re-derive them. Tables are computed in float64 and stored in float32, so two schedules
built from the same alpha_bar agree to the last float32 bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from ddpm.errors import is_int, is_number, require


class Preconditioner(Protocol):
    """What a continuous process (:mod:`ddpm.processes`) adds to its sampling grid: the x0
    estimate of a network at grid rows ``t`` from the VP-scaled state (see
    :class:`ddpm.processes.base.ContinuousProcess`)."""

    def x0(self, net: Callable[[Tensor, Tensor], Tensor], x_vp: Tensor, t: Tensor) -> Tensor: ...

    def x0_at_sigma(
        self, net: Callable[[Tensor, Tensor], Tensor], x_vp: Tensor, sigma: Tensor
    ) -> Tensor: ...


class NoiseSchedule:
    """The tables of a discrete DDPM forward process with ``T`` steps, indexed by t in [0, T).

    Built from ``alpha_bar`` (the cumulative signal fraction); ``alpha_bar_prev[0] = 1``.
    Every schedule function below returns one of these, so samplers never see which it was.
    """

    def __init__(
        self,
        alpha_bar: Tensor,
        timesteps: Sequence[int] | None = None,
        precond: Preconditioner | None = None,
    ) -> None:
        ab = alpha_bar.to(torch.float64)
        if ab.ndim != 1 or len(ab) == 0:
            raise ValueError("alpha_bar must be a non-empty 1-D tensor")
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        betas = 1.0 - ab / ab_prev
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)

        def f32(x: Tensor) -> Tensor:
            return x.to(torch.float32)

        self.num_timesteps = len(ab)
        self._alpha_bar64 = ab  # kept exact for respacing
        # The original timestep index of each row (differs from arange only when respaced).
        self.timesteps = torch.as_tensor(
            list(timesteps) if timesteps is not None else range(len(ab)), dtype=torch.long
        )
        self.betas = f32(betas)
        self.alphas = f32(1.0 - betas)
        self.alpha_bar = f32(ab)
        self.alpha_bar_prev = f32(ab_prev)
        self.sqrt_alpha_bar = f32(ab.sqrt())
        self.sqrt_one_minus_alpha_bar = f32((1.0 - ab).sqrt())
        self.posterior_variance = f32(post_var)
        self.posterior_mean_coef1 = f32(ab_prev.sqrt() * betas / (1.0 - ab))
        self.posterior_mean_coef2 = f32((1.0 - betas).sqrt() * (1.0 - ab_prev) / (1.0 - ab))
        self.snr = f32(ab / (1.0 - ab))
        # DPM-Solver's lambda_t = log(alpha_t / sigma_t), half the log-SNR; +inf where ab = 1.
        self.half_log_snr = f32(0.5 * (ab.log() - (-ab).log1p()))
        # A continuous process's grid: how the network is called at each row (None = the
        # discrete DDPM process: the network takes the integer timestep and x_t as it is).
        self.precond = precond

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        return cls(torch.cumprod(1.0 - betas.to(torch.float64), dim=0))

    def respace(self, timesteps: Sequence[int]) -> NoiseSchedule:
        """The schedule seen by a sampler that visits only ``timesteps`` (increasing).

        Its betas are ``1 - alpha_bar[t_i] / alpha_bar[t_{i-1}]``, so the marginals at the kept
        steps are unchanged (Nichol & Dhariwal 2021, section 4).
        """
        idx = torch.as_tensor(list(timesteps), dtype=torch.long)
        if len(idx) == 0 or bool((idx[1:] <= idx[:-1]).any()):
            raise ValueError("respaced timesteps must be non-empty and strictly increasing")
        return NoiseSchedule(
            self._alpha_bar64[idx.to(self._alpha_bar64.device)].cpu(),
            timesteps=self.timesteps.cpu()[idx].tolist(),
            precond=self.precond,
        )

    def to(self, device: torch.device | str) -> NoiseSchedule:
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        return self

    def __len__(self) -> int:
        return self.num_timesteps

    @staticmethod
    def gather(table: Tensor, t: Tensor, ndim: int) -> Tensor:
        """``table[t]`` shaped to broadcast against a batch with ``ndim`` dimensions."""
        return table[t].reshape(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        a = self.gather(self.sqrt_alpha_bar, t, x0.ndim)
        s = self.gather(self.sqrt_one_minus_alpha_bar, t, x0.ndim)
        return a * x0 + s * noise


def _check_timesteps(timesteps: int) -> None:
    require(is_int(timesteps, 1), "schedule.timesteps", timesteps, "an integer >= 1")


def _check_max_beta(max_beta: float) -> None:
    """Below 1: a beta of 1 would zero alpha_bar, and every x0 estimate divides by it."""
    require(
        is_number(max_beta) and 0 < max_beta < 1,
        "schedule.max_beta",
        max_beta,
        "a number in (0, 1)",
    )


def linear(*, timesteps: int, beta_start: float, beta_end: float) -> NoiseSchedule:
    """Ho et al. 2020: betas evenly spaced from ``beta_start`` to ``beta_end``."""
    _check_timesteps(timesteps)
    for key, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        require(is_number(value), f"schedule.{key}", value, "a number in (0, 1)")
    require(
        0 < beta_start < beta_end < 1,
        "schedule.beta_start",
        beta_start,
        f"0 < beta_start < beta_end={beta_end} < 1",
    )
    return NoiseSchedule.from_betas(
        torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    )


def cosine(*, timesteps: int, s: float, max_beta: float) -> NoiseSchedule:
    """Nichol & Dhariwal 2021: alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), betas clipped."""
    _check_timesteps(timesteps)
    require(is_number(s) and s >= 0, "schedule.s", s, "a number >= 0")
    _check_max_beta(max_beta)
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return NoiseSchedule.from_betas(betas)


def sigmoid(
    *, timesteps: int, start: float, end: float, tau: float, max_beta: float
) -> NoiseSchedule:
    """Jabri et al. 2022 / Chen 2023: alpha_bar follows a falling sigmoid over u = t/T in [0, 1].

    alpha_bar(u) = (S(end/tau) - S((start + u (end - start))/tau)) / (S(end/tau) - S(start/tau))
    with S the logistic function, so alpha_bar(0) = 1 and alpha_bar(1) = 0; betas are clipped at
    ``max_beta`` like the cosine schedule's. ``tau`` > 1 flattens the curve (more mid-noise steps).
    """
    _check_timesteps(timesteps)
    require(
        is_number(start) and is_number(end) and start < end,
        "schedule.start",
        start,
        f"a number less than schedule.end={end!r}",
    )
    require(is_number(tau) and tau > 0, "schedule.tau", tau, "a number > 0")
    _check_max_beta(max_beta)
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    lo, hi = (torch.sigmoid(torch.tensor(v / tau, dtype=torch.float64)) for v in (start, end))
    f = (hi - torch.sigmoid((start + u * (end - start)) / tau)) / (hi - lo)
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return NoiseSchedule.from_betas(betas)
