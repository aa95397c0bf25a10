"""``process=flow``: rectified flow / conditional flow matching (Liu et al. 2023; Lipman et al.
2023), with SD3's logit-normal times and time shift (Esser et al. 2024).

x_t = (1 - t) x0 + t eps on the straight line from data (t = 0) to noise (t = 1); the network
takes c_noise = 1000 t (the range a DDPM timestep spans, which the sinusoidal time embedding
was sized for) and predicts the velocity v = eps - x0, so x0_hat = x_t - t v_hat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ddpm.errors import is_number, require
from ddpm.processes.base import ContinuousProcess

TIME_SAMPLINGS = ("uniform", "logit_normal")
PAIRINGS = ("independent", "ot")
NET_SCALE = 1000.0


class FlowProcess(ContinuousProcess):
    """Straight paths, velocity target.

    ``time_sampling``: ``uniform`` t ~ U(0, 1), or ``logit_normal`` t = sigmoid(m + s n)
    (``logit_mean`` m, ``logit_std`` s; SD3's best: 0 and 1), which spends training on the
    middle times. ``shift`` (SD3's time shift, 1 = none): t -> shift t / (1 + (shift - 1) t)
    for training draws and the sampling grid alike; > 1 moves both toward noise. ``levels``:
    the sampling grid's times, t_k = shift((k + 1) / (levels + 1)), so the grid stops short of
    t = 0 (x_t is the image) and t = 1 (no signal: alpha = 0). ``pairing``: ``independent``
    noise per image, or ``ot``: the batch's noise reordered to the minimum total squared
    distance to its images (mini-batch optimal transport, Tong et al. 2024; Pooladian et al.
    2023), which straightens the paths the network learns.
    """

    name = "flow"

    def __init__(
        self,
        *,
        time_sampling: str,
        logit_mean: float,
        logit_std: float,
        shift: float,
        levels: int,
        pairing: str,
    ) -> None:
        require(
            time_sampling in TIME_SAMPLINGS,
            "process.time_sampling",
            time_sampling,
            f"one of {', '.join(TIME_SAMPLINGS)}",
        )
        require(is_number(logit_mean), "process.logit_mean", logit_mean, "a number")
        require(
            is_number(logit_std) and logit_std > 0, "process.logit_std", logit_std, "a number > 0"
        )
        require(is_number(shift) and shift > 0, "process.shift", shift, "a number > 0 (1 = none)")
        require(pairing in PAIRINGS, "process.pairing", pairing, f"one of {', '.join(PAIRINGS)}")
        self.pairing = pairing
        self.time_sampling = time_sampling
        self.logit_mean, self.logit_std, self.shift = float(logit_mean), float(logit_std), shift
        super().__init__(levels)

    def describe(self) -> str:
        times = self.time_sampling
        if times == "logit_normal":
            times += f" {self.logit_mean:g}/{self.logit_std:g}"
        shift = f", shift {self.shift:g}" if self.shift != 1 else ""
        ot = ", OT pairs" if self.pairing == "ot" else ""
        return f"flow ({times} times{shift}{ot}, velocity target)"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def shifted(self, t: Tensor) -> Tensor:
        return t if self.shift == 1 else self.shift * t / (1.0 + (self.shift - 1.0) * t)

    def draw(self, size: int, device: torch.device) -> Tensor:
        if self.time_sampling == "uniform":
            u = torch.rand(size, device=device)
        else:
            u = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(size, device=device))
        return self.shifted(u)

    def grid_times(self, levels: int) -> Tensor:
        k = torch.arange(1, levels + 1, dtype=torch.float64)
        return self.shifted(k / (levels + 1))

    def time_of_sigma(self, sigma_vp: Tensor) -> Tensor:
        return sigma_vp / (1.0 + sigma_vp)  # sigma/alpha = t / (1 - t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        one = torch.ones_like(t)
        return one, one, -t, NET_SCALE * t

    def target(self, x0: Tensor, noise: Tensor, x: Tensor, t: Tensor) -> Tensor:
        return noise - x0

    def coupling(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        return ot_pairs if self.pairing == "ot" else None


def ot_pairs(x0: Tensor, noise: Tensor) -> Tensor:
    """``noise`` reordered so that sum_i |x0_i - noise_i|^2 is the least any order gives (an
    exact assignment, Hungarian-type, on the CPU: a batch of 128 takes about a millisecond)."""
    cost = torch.cdist(x0.flatten(1).float(), noise.flatten(1).float()).pow(2)
    _, columns = linear_sum_assignment(cost.cpu().numpy())
    return noise[torch.as_tensor(columns, device=noise.device)]
