"""The seed's ancestral sampler (Ho et al. 2020), on all T steps or respaced to fewer."""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import require
from ddpm.samplers.base import Sampler, SamplerOptions

VARIANCES = ("beta_tilde", "beta")


class AncestralSampler(Sampler):
    """x_{t-1} ~ N(posterior mean(x_t, x0_hat), variance): one network call per plan row.

    ``variance``: ``beta_tilde`` is the posterior variance of q(x_{t-1} | x_t, x0) (the seed's
    choice, exact when x0_hat is right); ``beta`` is the larger forward-step variance, Ho et al.'s
    other choice, which adds noise that can hide an under-trained network's errors. On a
    respaced plan both are the respaced table's (its betas join the kept steps). With the clamp
    on (the seed's choice) x0_hat is kept in the data range [-1, 1].
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        variance: str,
        **options: Unpack[SamplerOptions],
    ) -> None:
        require(
            variance in VARIANCES, "sampler.variance", variance, f"one of {', '.join(VARIANCES)}"
        )
        super().__init__(schedule, **options)
        self.variance = variance

    @property
    def stochastic(self) -> bool:
        return True

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        if i == 0:
            return x0  # the last step returns the (clamped) x0 estimate itself
        tab = self.table
        mean = tab.posterior_mean_coef1[i] * x0 + tab.posterior_mean_coef2[i] * x_t
        var = tab.posterior_variance[i] if self.variance == "beta_tilde" else tab.betas[i]
        noise = torch.randn(x_t.shape, device=x_t.device, generator=generator)
        return mean + var.sqrt() * noise
