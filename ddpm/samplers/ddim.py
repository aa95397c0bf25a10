"""DDIM (Song et al. 2021): a non-Markovian reverse process that skips steps, eta sets its noise.

eta = 0 is the deterministic probability-flow-like path (same x_T, same image); eta = 1 draws
the same noise as the ancestral sampler on the same plan; 0 < eta < 1 lies between.
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor

from ddpm.diffusion.objective import to_eps
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_number, require
from ddpm.samplers.base import Sampler, SamplerOptions


class DDIMSampler(Sampler):
    """x_{s} = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat + sigma z, s the next row.

    sigma^2 = eta^2 (1 - ab_s)/(1 - ab_t) (1 - ab_t/ab_s), which is eta^2 times the respaced
    table's ``posterior_variance``. The plan comes from ``spacing`` (default linspace: T-1 first,
    t = 0 last); the last row's step returns the x0 estimate (ab_prev = 1 there). eps_hat is
    recomputed from the (clamped) x0_hat.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        eta: float,
        **options: Unpack[SamplerOptions],
    ) -> None:
        require(
            is_number(eta) and 0 <= eta <= 1,
            "sampler.eta",
            eta,
            "a number in [0, 1] (0 = deterministic, 1 = ancestral)",
        )
        super().__init__(schedule, **options)
        self.eta = float(eta)

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        if i == 0:
            return x0
        tab = self.table
        row = torch.full((x_t.shape[0],), i, device=x_t.device, dtype=torch.long)
        eps = to_eps(x0, x_t, row, tab)
        ab_prev = tab.alpha_bar_prev[i]
        var = self.eta**2 * tab.posterior_variance[i]
        x = ab_prev.sqrt() * x0 + (1.0 - ab_prev - var).clamp(min=0.0).sqrt() * eps
        if self.eta == 0.0:
            return x  # deterministic: draws nothing, so the generator is untouched
        noise = torch.randn(x_t.shape, device=x_t.device, generator=generator)
        return x + var.sqrt() * noise
