"""Euler's method on the probability-flow ODE (Song et al. 2021; Karras et al. 2022, Alg. 1).

In y = x/alpha and sigma = sigma_t/alpha_t the ODE of every process is dy/dsigma = eps_hat
= (y - x0_hat)/sigma, and an Euler step there is exactly DDIM with eta = 0 (on the flow process
it is Euler in t on dx/dt = v_hat; on EDM, Euler in sigma). So this is that sampler under the
name the ODE literature uses, with no noise to set.
"""

from __future__ import annotations

from typing import Unpack

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import SamplerOptions
from ddpm.samplers.ddim import DDIMSampler


class EulerSampler(DDIMSampler):
    """First-order, one network call per step, deterministic (DDIM's step with eta = 0)."""

    def __init__(self, schedule: NoiseSchedule, **options: Unpack[SamplerOptions]) -> None:
        super().__init__(schedule, eta=0.0, **options)
