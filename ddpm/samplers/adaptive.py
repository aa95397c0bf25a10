"""An adaptive ODE solver from torchdiffeq (dopri5 by default) on the probability-flow ODE.

In y = x/alpha and u = log(sigma/alpha) the ODE of every process is dy/du = y - x0_hat(y, u):
smooth in u over the whole range, so an adaptive Runge-Kutta solver takes few steps where the
path is straight. It integrates from the plan's top level to its lowest, then returns the x0
estimate there (one more call). The network is called between grid levels: a continuous
process (flow, EDM) maps sigma to its own time exactly; the DDPM process gets a fractional
timestep, interpolated in log sigma between its integer ones (the network's sinusoidal time
embedding takes any real t). Each solve counts its network calls: :attr:`nfe`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ddpm.diffusion.objective import x0_from
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_number, require
from ddpm.samplers.base import Sampler

METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")


class AdaptiveODESampler(Sampler):
    """``method``: a torchdiffeq adaptive solver; ``rtol``/``atol``: its tolerances (looser =
    fewer calls). :attr:`nfe` is the mean network calls per image of the solves so far
    (None before the first)."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        method: str,
        rtol: float,
        atol: float,
        clip_x0: bool,
        dynamic_threshold: float | None,
        guidance_scale: float,
    ) -> None:
        require(method in METHODS, "sampler.method", method, f"one of {', '.join(METHODS)}")
        for key, value in (("rtol", rtol), ("atol", atol)):
            require(is_number(value) and value > 0, f"sampler.{key}", value, "a number > 0")
        steps = min(2, len(schedule))  # the plan is its two ends: the solver picks the rest
        super().__init__(
            schedule,
            steps=steps,
            spacing="linspace",
            plan=None,
            clip_x0=clip_x0,
            dynamic_threshold=dynamic_threshold,
            guidance_scale=guidance_scale,
        )
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self._calls: list[int] = []

    @property
    def nfe(self) -> float | None:  # type: ignore[override]
        return sum(self._calls) / len(self._calls) if self._calls else None

    def starting_at(self, t: int) -> AdaptiveODESampler:
        other = super().starting_at(t)
        assert isinstance(other, AdaptiveODESampler)
        other._calls = []  # its own count, not this sampler's
        return other

    def _sigma(self, i: int) -> float:
        """sigma/alpha at plan row ``i``, from the table's SNR."""
        return float(self.table.snr[i].cpu().double().rsqrt())

    def x0_at_sigma(
        self, model: nn.Module, x_vp: Tensor, sigma: Tensor, labels: Tensor | None
    ) -> Tensor:
        """The x0 estimate at the level sigma/alpha = ``sigma`` (a 0-d tensor)."""
        sch = self.schedule
        sigma = sigma.cpu().to(torch.float64)  # float64 stays on the CPU (MPS has none)
        if sch.precond is not None:
            net = lambda x_in, c_noise: self.predict(model, x_in, c_noise, labels)  # noqa: E731
            return self.handle_x0(sch.precond.x0_at_sigma(net, x_vp, sigma.expand(len(x_vp))))
        log_sigma = -sch.half_log_snr.cpu().to(torch.float64)  # increasing in t
        t = _interp(sigma.log(), log_sigma).to(x_vp.device, torch.float32).expand(len(x_vp))
        a = (1.0 + sigma**2).rsqrt()
        a, s = a.to(x_vp.dtype).to(x_vp.device), (sigma * a).to(x_vp.dtype).to(x_vp.device)
        out = self.predict(model, x_vp, t, labels)
        return self.handle_x0(x0_from(model.prediction, out, x_vp, a, s))

    def advance(
        self,
        model: nn.Module,
        x: Tensor,
        i: int,
        labels: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        if i == 0:
            self._calls.append(self._solve_calls + 1)
            return self.predict_x0(model, x, 0, labels)
        from torchdiffeq import odeint

        self._solve_calls = 0
        top, bottom = self._sigma(i), self._sigma(0)

        def slope(u: Tensor, y: Tensor) -> Tensor:
            self._solve_calls += 1
            sigma = u.detach().cpu().to(torch.float64).exp()
            x_vp = y * float((1.0 + sigma**2).rsqrt())
            return y - self.x0_at_sigma(model, x_vp, sigma, labels)

        y0 = x * math.sqrt(1.0 + top**2)
        span = torch.tensor([math.log(top), math.log(bottom)], device=x.device, dtype=x.dtype)
        y = odeint(slope, y0, span, rtol=self.rtol, atol=self.atol, method=self.method)[-1]
        return y / math.sqrt(1.0 + bottom**2)

    def reset(self) -> None:
        self._solve_calls = 0


def _interp(value: Tensor, table: Tensor) -> Tensor:
    """The fractional index where increasing ``table`` reaches ``value`` (clamped to its ends)."""
    table = table.to(value.device)
    value = value.clamp(float(table[0]), float(table[-1]))
    hi = int(torch.searchsorted(table, value.reshape(1)).clamp(1, len(table) - 1))
    lo_v, hi_v = table[hi - 1], table[hi]
    return (hi - 1) + (value - lo_v) / (hi_v - lo_v).clamp(min=1e-12)
