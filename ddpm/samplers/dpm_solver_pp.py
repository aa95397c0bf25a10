"""DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep ODE solver in data (x0) space.

It integrates the probability-flow ODE in lambda = log(alpha/sigma) (the schedule's
``half_log_snr`` table), reusing the previous step's x0 estimate for the second-order term, so
each step costs one network call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import Sampler


class DPMSolverPPSampler(Sampler):
    """DPM-Solver++(2M), deterministic; first order on the first and the final step.

    From row i (alpha_t, sigma_t, lambda_t) to row i-1 (alpha_s, sigma_s, lambda_s), with
    h = lambda_s - lambda_t: x_s = (sigma_s/sigma_t) x_t - alpha_s expm1(-h) D. D = x0_hat at
    first order (the DDIM step); D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev at second order, with
    r = h_prev / h. The plan is ``spaced_timesteps(T, steps)`` = round(linspace(0, T-1, steps)).
    The first step has no previous estimate; the final solver step, into t = 0, is first order
    (its lambda jump is the largest of the plan and r is small there, where the extrapolation
    overshoots); at t = 0 the x0 estimate is returned (a first-order step to sigma = 0).
    Previous estimates live on the sampler and :meth:`reset` (called by ``sample``) clears them.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int | None = 20,
        clip_x0: bool = True,
        guidance_scale: float = 1.0,
    ) -> None:
        super().__init__(schedule, steps=steps, clip_x0=clip_x0, guidance_scale=guidance_scale)
        self._prev: tuple[int, Tensor] | None = None

    def reset(self) -> None:
        self._prev = None

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        prev, self._prev = self._prev, (i, x0)
        if i == 0:
            return x0
        tab = self.table
        lam = tab.half_log_snr
        h = lam[i - 1] - lam[i]
        d = x0
        if i > 1 and prev is not None and prev[0] == i + 1:  # second order from the 2nd step
            r = (lam[i] - lam[i + 1]) / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * prev[1]
        ratio = tab.sqrt_one_minus_alpha_bar[i - 1] / tab.sqrt_one_minus_alpha_bar[i]
        return ratio * x_t - tab.sqrt_alpha_bar[i - 1] * torch.expm1(-h) * d
