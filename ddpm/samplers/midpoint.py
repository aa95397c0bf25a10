"""The explicit midpoint method on the probability-flow ODE, in y = x/alpha and sigma.

From sigma_t to sigma_s: an Euler half step to sigma_m = sqrt(sigma_t sigma_s) (the middle in
log sigma, i.e. in log-SNR, as DPM-Solver-2 takes it), then the whole step with the slope found
there. Second order like Heun, two network calls per step, but the second call sits between
the rows instead of at the next one. The network only knows the grid's levels, so sigma_m is
snapped to the nearest grid row (in log sigma) and the half step goes exactly there.
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor, nn

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import SamplerOptions
from ddpm.samplers.heun import HeunSampler


class MidpointSampler(HeunSampler):
    """Midpoint steps between plan rows; the last row returns its x0 estimate. Steps that
    start above sigma = 80, or whose middle snaps onto an end row, are Euler steps (one
    call), as in :class:`~ddpm.samplers.heun.HeunSampler`."""

    def __init__(self, schedule: NoiseSchedule, **options: Unpack[SamplerOptions]) -> None:
        super().__init__(schedule, churn=0.0, **options)

    def _middle(self, i: int) -> int | None:
        """The grid row nearest sigma_m for the step from row i, or None (an Euler step)."""
        if self._euler_only(i):
            return None
        pos, nxt = self._position(i), self._position(i - 1)
        lam = self.schedule.half_log_snr.cpu().double()
        mid = nxt + int((lam[nxt : pos + 1] - 0.5 * (lam[pos] + lam[nxt])).abs().argmin())
        return mid if nxt < mid < pos else None

    @property
    def nfe(self) -> int:
        rows = len(self.table)
        return rows + sum(self._middle(i) is not None for i in range(1, rows))

    def advance(
        self,
        model: nn.Module,
        x: Tensor,
        i: int,
        labels: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        pos = self._position(i)
        if i == 0:
            return self._x0(model, x, pos, labels)
        nxt, mid = self._position(i - 1), self._middle(i)
        eps = self._eps(model, x, pos, labels)
        if mid is not None:  # the half step, then the slope there
            eps = self._eps(model, self._ode_step(x, pos, mid, eps), mid, labels)
        return self._ode_step(x, pos, nxt, eps)
