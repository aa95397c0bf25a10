"""Multistep consistency sampling (Song et al. 2023, Algorithm 1): denoise to x0 in one call,
noise that estimate afresh to the next row of the plan, denoise again.

For a consistency model (an ECT student, ``ddpm.distill method=ect``) each call lands on the
data manifold, and the fresh noise lets a second or fourth call correct the first; DDIM's
deterministic step would instead re-use the first call's noise estimate. One call is the x0
estimate from pure noise, as for every sampler whose plan is just the top row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddpm.samplers.base import Sampler


class ConsistencySampler(Sampler):
    """x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s) z with fresh z ~ N(0, I); x0_hat at the last row."""

    @property
    def stochastic(self) -> bool:
        return len(self.table) > 1

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        if i == 0:
            return x0
        ab = self.table.alpha_bar_prev[i]  # the next row's
        noise = torch.randn(x_t.shape, device=x_t.device, generator=generator)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
