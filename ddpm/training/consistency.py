"""Easy consistency tuning (ECT; Geng et al. 2024): a trained diffusion or flow run tuned into a
consistency model, f(x_t, t) = x0 along each probability-flow path, with no ODE pairs.

The consistency function is the run's own x0 estimate (:func:`~ddpm.samplers.base.x0_estimate`
through the process's preconditioning), so every process tunes the same way. Each step draws an
image x0, a noise eps and a level t; r < t is a lower level on the same noise, and the student's
estimate at (x_t, t) is pulled toward its own detached estimate at (x_r, r):

    loss = w(t, r) d(f(x_t, t), sg f(x_r, r)),  x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s) eps,

with d the pseudo-Huber distance and w = 1 / (sigma_t - sigma_r) (sigma = sqrt(1-ab)/sqrt(ab),
EDM's noise level of a row). The gap shrinks in stages: sigma_r = sigma_t (1 - n(sigma_t) /
q^stage), n(s) = 1 + k sigmoid(-b s). At stage 0 r falls below the grid, the target is x0
itself (f(x, 0) = x) and the loss is the diffusion loss the run was trained with, in x0 units;
each later stage halves (q = 2) the gap, moving from diffusion to consistency training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ddpm.diffusion.objective import drop_labels
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_int, is_number, require
from ddpm.processes import Process
from ddpm.samplers.base import x0_estimate


def pseudo_huber(diff: Tensor, c: float) -> Tensor:
    """sqrt(|diff|^2 + c^2) - c per image: squared-error-like below c, absolute above it.
    Written as |diff|^2 / (sqrt(|diff|^2 + c^2) + c), which does not cancel in float32."""
    squared = diff.flatten(1).pow(2).sum(1)
    return squared / ((squared + c * c).sqrt() + c)


class ConsistencyTuning(Process):
    """The ECT student's loss on real images; ``steps_done()`` is the number of updates so
    far (the optimizer's, so a resumed run is at the same stage)."""

    name = "ect"

    def __init__(
        self,
        grid: NoiseSchedule,
        prediction: str | None,
        total_steps: int,
        steps_done: Callable[[], int],
        *,
        stages: int,
        q: float,
        k: float,
        b: float,
        p_mean: float,
        p_std: float,
        huber_c: float,
    ) -> None:
        # the keys of conf/distill_method/ect.yaml, which sit under `method`
        require(is_int(stages, 1), "method.stages", stages, "an integer >= 1")
        require(is_number(q) and q > 1, "method.q", q, "a number > 1 (the gap's shrink factor)")
        require(is_number(p_std) and p_std > 0, "method.p_std", p_std, "a number > 0")
        for key, value in (("k", k), ("b", b), ("huber_c", huber_c)):
            require(is_number(value) and value >= 0, f"method.{key}", value, "a number >= 0")
        require(is_number(p_mean), "method.p_mean", p_mean, "a number")
        self.grid, self.prediction = grid, prediction
        self.total, self.steps_done = total_steps, steps_done
        self.stages, self.q, self.k, self.b = stages, float(q), float(k), float(b)
        self.p_mean, self.p_std, self.huber_c = float(p_mean), float(p_std), float(huber_c)
        ab = grid.alpha_bar.double().cpu()
        self.sigmas = ((1 - ab) / ab).sqrt()  # increasing with the row

    def stage(self) -> int:
        """0 at the start, ``stages - 1`` over the run's last part."""
        return min(self.steps_done() * self.stages // max(self.total, 1), self.stages - 1)

    def levels(self, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Rows t (>= 1) and r (< t; -1 = below the grid, where the target is x0 itself):
        log sigma_t ~ N(p_mean, p_std^2) snapped to the nearest row, sigma_r by the stage."""
        top = len(self.sigmas) - 1
        sigma_t = (self.p_mean + self.p_std * torch.randn(size, dtype=torch.float64)).exp()
        t = torch.searchsorted(self.sigmas, sigma_t).clamp(1, top)
        s_t = self.sigmas[t]
        shrink = (1 + self.k * torch.sigmoid(-self.b * s_t)) / self.q ** self.stage()
        s_r = s_t * (1 - shrink)
        r = torch.searchsorted(self.sigmas, s_r, right=True) - 1  # the row at or below s_r
        r = torch.minimum(r, t - 1)
        return t.to(device), r.to(device)

    def loss(
        self,
        model: nn.Module,
        x0: Tensor,
        weighting: str = "none",
        labels: Tensor | None = None,
        label_dropout: float = 0.0,
        part: slice = slice(None),
    ) -> Tensor:
        size = x0.shape[0]
        t, r = self.levels(size, x0.device)
        noise = torch.randn_like(x0)
        if labels is not None:
            labels = drop_labels(labels, label_dropout, model.null_label)[part]
        x0, t, r, noise = x0[part], t[part], r[part], noise[part]
        net = model if labels is None else (lambda x_in, level: model(x_in, level, labels))
        estimate = x0_estimate(net, self.prediction, self.grid.q_sample(x0, t, noise), self.grid, t)
        below = r < 0
        with torch.no_grad():
            rows = r.clamp(min=0)
            target = x0_estimate(net, self.prediction, self.grid.q_sample(x0, rows, noise),
                                 self.grid, rows)  # fmt: skip
            target = torch.where(below.view(-1, *[1] * (x0.ndim - 1)), x0, target)
        sig = self.sigmas.to(x0.device, torch.float64)
        gap = sig[t] - torch.where(below, torch.zeros_like(sig[t]), sig[r])
        c = self.huber_c * math.sqrt(x0[0].numel())
        per_image = pseudo_huber(estimate - target, c) / gap.to(x0.dtype)
        return per_image.sum() / size
