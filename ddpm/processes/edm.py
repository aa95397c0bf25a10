"""``process=edm``: Karras et al. 2022 ("Elucidating the design space"), variance exploding.

x = x0 + sigma eps, ln sigma ~ N(P_mean, P_std^2) in training, and the preconditioning
c_in = 1/sqrt(sigma^2 + sd^2), c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd/sqrt(sigma^2 +
sd^2) (sd = ``sigma_data``), so the network's input and target have unit variance at every
sigma and the paper's loss weight 1/c_out^2 is a plain MSE on F. The noise-level input is
EDM's c_noise = ln(sigma)/4 mapped affinely so that [sigma_min, sigma_max] spans [0, 1000], the
range a DDPM timestep spans, which the sinusoidal time embedding was sized for.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddpm.errors import is_number, require
from ddpm.processes.base import ContinuousProcess

NET_SCALE = 1000.0


class EDMProcess(ContinuousProcess):
    """Time is sigma itself (alpha = 1). ``levels``: the sampling grid, log-uniform in sigma
    from ``sigma_min`` to ``sigma_max`` (so ``spacing=linspace`` is uniform in log-SNR and
    ``spacing=karras`` is EDM's rho = 7 plan, snapped to the grid)."""

    name = "edm"

    def __init__(
        self,
        *,
        sigma_data: float,
        p_mean: float,
        p_std: float,
        sigma_min: float,
        sigma_max: float,
        levels: int,
    ) -> None:
        require(
            is_number(sigma_data) and sigma_data > 0,
            "process.sigma_data",
            sigma_data,
            "a number > 0 (the data's std; the paper's 0.5)",
        )
        require(is_number(p_mean), "process.p_mean", p_mean, "a number")
        require(is_number(p_std) and p_std > 0, "process.p_std", p_std, "a number > 0")
        require(
            is_number(sigma_min) and sigma_min > 0,
            "process.sigma_min",
            sigma_min,
            "a number > 0",
        )
        require(
            is_number(sigma_max) and sigma_max > sigma_min,
            "process.sigma_max",
            sigma_max,
            f"a number > process.sigma_min={sigma_min}",
        )
        self.sigma_data, self.p_mean, self.p_std = float(sigma_data), float(p_mean), float(p_std)
        self._log_min, self._log_max = math.log(sigma_min), math.log(sigma_max)
        super().__init__(levels)

    def describe(self) -> str:
        sd, m, s = self.sigma_data, self.p_mean, self.p_std
        return f"edm (sigma_data {sd:g}, ln sigma ~ N({m:g}, {s:g}^2))"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def draw(self, size: int, device: torch.device) -> Tensor:
        return (self.p_mean + self.p_std * torch.randn(size, device=device)).exp()

    def grid_times(self, levels: int) -> Tensor:
        return torch.linspace(self._log_min, self._log_max, levels, dtype=torch.float64).exp()

    def time_of_sigma(self, sigma_vp: Tensor) -> Tensor:
        return sigma_vp

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        sd2, total = self.sigma_data**2, t**2 + self.sigma_data**2
        c_noise = NET_SCALE * (t.log() - self._log_min) / (self._log_max - self._log_min)
        return total.rsqrt(), sd2 / total, t * self.sigma_data * total.rsqrt(), c_noise
