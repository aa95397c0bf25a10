"""UniPC (Zhao et al. 2023): a unified predictor-corrector multistep solver in data (x0) space.

Like DPM-Solver++ it integrates the probability-flow ODE in lambda = log(alpha/sigma) (the
schedule's ``half_log_snr`` table) from x0 estimates, one network call per step. The predictor
(UniP) extrapolates from the last ``order`` estimates; the corrector (UniC) then re-does the
step that led to the current row with the estimate just computed there, which raises the
order by one at no extra call (the network ran at the predicted point anyway). ``variant``
picks B(h): ``bh1`` = h, ``bh2`` = expm1(h) (the paper's choice for guided and few-step
sampling).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_int, require
from ddpm.samplers.base import Sampler, SamplerOptions
from ddpm.samplers.dpm_solver_pp import check_final_step

VARIANTS = ("bh1", "bh2")


class UniPCSampler(Sampler):
    """UniPC of ``order`` 1-3 with its corrector, deterministic.

    A step from row s to row t (h = lambda_t - lambda_s) with estimates m_0 (at s), m_1, ...
    (older rows, at r_k = (lambda_k - lambda_s)/h) is
    x_t = (sigma_t/sigma_s) x_s + alpha_t (1 - e^-h) m_0 - alpha_t B(h) sum_k rho_k D_k,
    D_k = (m_k - m_0)/r_k, the rho_k solving the paper's order conditions (Vandermonde in r_k
    against the phi-function moments). The corrector adds the new row's D_t = m_t - m_0 to the
    same sum. ``final_step=first_order`` takes the step into the plan's last row at first
    order; at the last row the x0 estimate is returned (a first-order step to sigma = 0).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        order: int,
        variant: str,
        final_step: str,
        **options: Unpack[SamplerOptions],
    ) -> None:
        require(is_int(order, 1) and order <= 3, "sampler.order", order, "1, 2 or 3")
        require(variant in VARIANTS, "sampler.variant", variant, " or ".join(VARIANTS))
        check_final_step(final_step)
        super().__init__(schedule, **options)
        self.order, self.variant, self.final_step = order, variant, final_step
        self.reset()

    def reset(self) -> None:
        self.estimates: list[tuple[int, Tensor]] = []  # (row, x0 estimate), newest first
        self.last: tuple[Tensor, int, int] | None = None  # the last step's start x, row, order

    def _order(self, to_row: int) -> int:
        if to_row == 0 and self.final_step == "first_order":
            return 1
        return min(self.order, len(self.estimates))

    def _move(self, x: Tensor, s: int, t: int, order: int, m_t: Tensor | None) -> Tensor:
        """From ``x`` at row ``s`` to row ``t`` on the newest ``order`` estimates; with ``m_t``
        (the estimate at t) the corrector, else the predictor."""
        tab = self.table
        lam = tab.half_log_snr
        h = lam[t] - lam[s]
        phi1 = torch.expm1(-h)  # e^-h - 1
        b_h = -h if self.variant == "bh1" else phi1
        (_, m0), *older = self.estimates[:order]
        ratios = [(lam[row] - lam[s]) / h for row, _ in older]
        diffs = [(m - m0) / r for (_, m), r in zip(older, ratios, strict=True)]
        base = (tab.sqrt_one_minus_alpha_bar[t] / tab.sqrt_one_minus_alpha_bar[s]) * x
        base = base - tab.sqrt_alpha_bar[t] * phi1 * m0
        if m_t is not None:
            ratios, diffs = [*ratios, torch.ones_like(h)], [*diffs, m_t - m0]
        if not diffs:
            return base
        rhos = self._rhos(torch.stack(ratios).double().cpu(), float(-h), float(b_h))
        correction = sum(rho * d for rho, d in zip(rhos.tolist(), diffs, strict=True))
        return base - tab.sqrt_alpha_bar[t] * b_h * correction

    @staticmethod
    def _rhos(ratios: Tensor, hh: float, b_h: float) -> Tensor:
        """The weights of the differences: order conditions sum_k rho_k r_k^(j-1) = b_j,
        b_j = j! phi_{j+1}(hh) / B(h), for j = 1..len(ratios). A predictor of order 2 uses the
        paper's rho = 1/2; a corrector of order 1 (one difference, D_t) too."""
        n = len(ratios)
        if n == 1:
            return torch.tensor([0.5], dtype=torch.float64)
        phi = torch.expm1(torch.tensor(hh, dtype=torch.float64)) / hh - 1.0
        factorial, rows, b = 1.0, [], []
        for j in range(1, n + 1):
            rows.append(ratios ** (j - 1))
            b.append(phi * factorial / b_h)
            factorial *= j + 1
            phi = phi / hh - 1.0 / factorial
        return torch.linalg.solve(torch.stack(rows), torch.stack(b))

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        if self.last is not None:  # correct the step that led to this row with its estimate
            start, s, order = self.last
            x_t = self._move(start, s, i, order, x0)
        self.estimates = [(i, x0), *self.estimates][: self.order]
        if i == 0:
            return x0
        order = self._order(i - 1)
        self.last = (x_t, i, order)
        return self._move(x_t, i, i - 1, order, None)
