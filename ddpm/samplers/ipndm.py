"""iPNDM (Zhang & Chen 2023, the improved pseudo-numerical method of DEIS's paper): a
deterministic linear multistep solver, one network call per step.

In y = x/alpha and sigma = sigma_t/alpha_t the probability-flow ODE of every process is
dy/dsigma = eps_hat(y, sigma) = (y - x0_hat)/sigma (:mod:`ddpm.samplers.euler`). iPNDM steps it
with the Adams-Bashforth combinations of the last ``order`` slopes, using the equal-step
coefficients whatever the plan's spacing (which is what makes it stable at 5-10 calls), and
warms up from first order. At 10 calls on an EDM CIFAR-10 model it is among the best
training-free solvers (FID 2.77 against DPM-Solver++(3M)'s 3.00 in diff-sampler's table).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_int, require
from ddpm.samplers.base import Sampler, SamplerOptions
from ddpm.samplers.dpm_solver_pp import check_final_step

# Adams-Bashforth coefficients for equal steps, newest slope first.
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


class IPNDMSampler(Sampler):
    """iPNDM of ``order`` 1-4 (1 is Euler, i.e. DDIM with eta 0), deterministic.

    From row i to row i-1: y' = y + (sigma_{i-1} - sigma_i) sum_k c_k eps_k, the eps_k the
    slopes at this and the previous rows, then x' = alpha_{i-1} y'. At the last row,
    ``final_step=first_order`` returns the x0 estimate (an Euler step to sigma = 0) and
    ``full_order`` takes that step with the multistep combination too. Slopes live on the
    sampler and :meth:`reset` (called by ``sample``) clears them.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        order: int,
        final_step: str,
        **options: Unpack[SamplerOptions],
    ) -> None:
        require(is_int(order, 1) and order <= 4, "sampler.order", order, "1, 2, 3 or 4")
        check_final_step(final_step)
        super().__init__(schedule, **options)
        self.order, self.final_step = order, final_step
        self.slopes: list[Tensor] = []

    def reset(self) -> None:
        self.slopes = []

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        tab = self.table
        a, s = tab.sqrt_alpha_bar[i], tab.sqrt_one_minus_alpha_bar[i]
        y, sigma = x_t / a, s / a
        self.slopes = [(y - x0) / sigma, *self.slopes][: self.order]
        if i == 0:
            if self.final_step == "first_order":
                return x0
            a_next, sigma_next = torch.ones_like(a), torch.zeros_like(sigma)
        else:
            a_next = tab.sqrt_alpha_bar[i - 1]
            sigma_next = tab.sqrt_one_minus_alpha_bar[i - 1] / a_next
        coeffs = ADAMS_BASHFORTH[len(self.slopes)]
        slope = sum(c * d for c, d in zip(coeffs, self.slopes, strict=True))
        return a_next * (y + (sigma_next - sigma) * slope)
