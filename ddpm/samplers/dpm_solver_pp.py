"""DPM-Solver++ multistep (Lu et al. 2022): a deterministic ODE solver in data (x0) space.

It integrates the probability-flow ODE in lambda = log(alpha/sigma) (the schedule's
``half_log_snr`` table), reusing the previous steps' x0 estimates for the higher-order terms,
so each step costs one network call. ``order`` 2 is DPM-Solver++(2M) (this file's sampler);
``order`` 3 is 3M (:class:`~ddpm.samplers.dpm_solver_pp_3m.DPMSolverPP3MSampler`).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import require
from ddpm.samplers.base import Sampler, SamplerOptions

FINAL_STEPS = ("first_order", "full_order")


def check_final_step(final_step: str) -> None:
    """The multistep solvers' ``final_step`` key (DPM-Solver++, iPNDM, UniPC)."""
    require(
        final_step in FINAL_STEPS,
        "sampler.final_step",
        final_step,
        f"one of {', '.join(FINAL_STEPS)}",
    )


class DPMSolverPPSampler(Sampler):
    """DPM-Solver++(2M) (or 3M with ``order=3``), deterministic.

    From row i (alpha_t, sigma_t, lambda_t) to row i-1 (alpha_s, sigma_s, lambda_s), with
    h = lambda_s - lambda_t and phi1 = expm1(-h):
    x_s = (sigma_s/sigma_t) x_t - alpha_s phi1 D0 + alpha_s phi2 D1 - alpha_s phi3 D2, where
    D0 = x0_hat. Order 2 uses D1 = -phi1/(2 r0) (x0_hat - x0_prev) folded into the first term
    (Lu et al.'s midpoint form: D = (1 + 1/(2r0)) x0_hat - 1/(2r0) x0_prev, r0 = h_prev/h).
    Order 3 adds the second previous estimate (phi2 = phi1/h + 1, phi3 = (phi1 + h)/h^2 - 1/2).
    Early steps lack previous estimates and run at the order they have.

    ``final_step``: ``first_order`` (default) takes the last solver step, into the plan's last
    row, at first order (and, for 3M, the one before it at most second order): its lambda jump
    is the largest of a linspace plan and r0 is small there, where the extrapolation
    overshoots. ``full_order`` keeps the solver's order to the end. At the last row the x0
    estimate is returned (a first-order step to sigma = 0). Previous estimates live on the
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
        ok = order in (1, 2, 3) and not isinstance(order, bool)
        require(ok, "sampler.order", order, "1, 2 or 3")
        check_final_step(final_step)
        super().__init__(schedule, **options)
        self.order = order
        self.final_step = final_step
        self._history: list[tuple[int, Tensor]] = []  # (row, x0 estimate), newest last

    def reset(self) -> None:
        self._history = []

    def _order_at(self, i: int, max_order: int) -> int:
        """The order of the step from row i: what the contiguous history allows, capped."""
        have = 1
        for back, (row, _) in enumerate(reversed(self._history[:-1]), start=1):
            if row != i + back:
                break
            have += 1
        order = min(max_order, have)
        if self.final_step == "first_order":
            order = min(order, i)  # row 1 -> 1st order, row 2 -> at most 2nd
        return order

    def _remember(self, i: int, x0: Tensor, keep: int) -> None:
        self._history = [*self._history[-(keep - 1) :], (i, x0)] if keep > 1 else [(i, x0)]

    def _lam(self, i: int) -> Tensor:
        return self.table.half_log_snr[i].double()

    def _data_term(self, i: int, h: Tensor, order: int) -> Tensor:
        """-alpha_s (phi1 D0 - phi2 D1 + phi3 D2): the solver's x0 part, from history."""
        x0 = self._history[-1][1]
        phi1 = torch.expm1(-h)
        if order == 1:
            return -phi1 * x0
        prev1 = self._history[-2][1]
        r0 = (self._lam(i) - self._lam(i + 1)) / h
        if order == 2:
            return -phi1 * ((1.0 + 0.5 / r0) * x0 - (0.5 / r0) * prev1)
        prev2 = self._history[-3][1]
        r1 = (self._lam(i + 1) - self._lam(i + 2)) / h
        d1_0, d1_1 = (x0 - prev1) / r0, (prev1 - prev2) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi2 = phi1 / h + 1.0
        phi3 = (phi1 + h) / h**2 - 0.5
        return -phi1 * x0 + phi2 * d1 - phi3 * d2

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        self._remember(i, x0, self.order)
        if i == 0:
            return x0
        tab = self.table
        h = self._lam(i - 1) - self._lam(i)
        order = self._order_at(i, self.order)
        ratio = tab.sqrt_one_minus_alpha_bar[i - 1] / tab.sqrt_one_minus_alpha_bar[i]
        data = self._data_term(i, h, order).to(x_t.dtype)
        return ratio * x_t + tab.sqrt_alpha_bar[i - 1] * data
