"""The seed's ancestral sampler (Ho et al. 2020), on all T steps or respaced to fewer."""

from __future__ import annotations

import torch
from torch import Tensor

from ddpm.samplers.base import Sampler


class AncestralSampler(Sampler):
    """x_{t-1} ~ q(x_{t-1} | x_t, x0_hat): the posterior mean plus its standard deviation.

    With the clamp on (the seed's choice) x0_hat is kept in the data range [-1, 1].
    """

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        if i == 0:
            return x0  # the last step returns the (clamped) x0 estimate itself
        tab = self.table
        mean = tab.posterior_mean_coef1[i] * x0 + tab.posterior_mean_coef2[i] * x_t
        noise = torch.randn(x_t.shape, device=x_t.device, generator=generator)
        return mean + tab.posterior_variance[i].sqrt() * noise
