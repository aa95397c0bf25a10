"""SDE-DPM-Solver++(2M) (Lu et al. 2022): the multistep solver on the reverse SDE.

Each step injects fresh noise, like ancestral sampling, so errors of the network's x0 estimate
are partly washed out instead of carried along a deterministic path; the second-order term
reuses the previous x0 estimate, so each step still costs one network call.
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import SamplerOptions
from ddpm.samplers.dpm_solver_pp import DPMSolverPPSampler


class DPMSolverPPSDESampler(DPMSolverPPSampler):
    """x_s = (sigma_s/sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) D + sigma_s sqrt(1 - e^{-2h}) z.

    h = lambda_s - lambda_t; D = x0_hat at first order, which makes the step exactly the
    ancestral (posterior beta-tilde) step on the same plan; D = x0_hat + (x0_hat - x0_prev)/(2 r0)
    at second order (r0 = h_prev/h). ``final_step`` as in
    :class:`~ddpm.samplers.dpm_solver_pp.DPMSolverPPSampler`. Defaults, 50 calls on the log-SNR
    plan: the best 50-call setting measured on the shared checkpoint (FID +12% against 1000-step
    ancestral on 700 paired images, ancestral-50 +18%; experiments/sampler_quality).
    """

    def __init__(
        self, schedule: NoiseSchedule, *, final_step: str, **options: Unpack[SamplerOptions]
    ) -> None:
        super().__init__(schedule, order=2, final_step=final_step, **options)

    @property
    def stochastic(self) -> bool:
        return True

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        self._remember(i, x0, 2)
        if i == 0:
            return x0
        tab = self.table
        h = self._lam(i - 1) - self._lam(i)
        d = x0
        if self._order_at(i, 2) == 2:
            r0 = (self._lam(i) - self._lam(i + 1)) / h
            d = x0 + ((0.5 / r0) * (x0 - self._history[-2][1])).to(x0.dtype)
        keep = torch.exp(-h)  # e^{-h}
        fresh = -torch.expm1(-2.0 * h)  # 1 - e^{-2h}
        sigma_s, sigma_t = tab.sqrt_one_minus_alpha_bar[i - 1], tab.sqrt_one_minus_alpha_bar[i]
        coef_x = (sigma_s / sigma_t * keep).to(x_t.dtype)
        coef_d = (tab.sqrt_alpha_bar[i - 1] * fresh).to(x_t.dtype)
        coef_z = (sigma_s * fresh.sqrt()).to(x_t.dtype)
        noise = torch.randn(x_t.shape, device=x_t.device, generator=generator)
        return coef_x * x_t + coef_d * d + coef_z * noise
