"""The interface every noise process shares, and the continuous processes' common part.

Every Gaussian process x_t = alpha(t) x0 + sigma(t) eps is, divided by
sqrt(alpha^2 + sigma^2), a variance-preserving (VP) process with alpha_bar = alpha^2 /
(alpha^2 + sigma^2): the same half log-SNR lambda = log(alpha/sigma), the same x0. So a process
shows the samplers a :class:`~ddpm.diffusion.schedule.NoiseSchedule` of its noise levels
(``grid``), and every sampler, plan and denoiser written for the VP table runs on it unchanged:
the sampler's state is the VP-scaled x, and the process's preconditioning (EDM's notation,
Karras et al. 2022) turns it into a network call and an x0 estimate:

    x = scale * x_vp,   F = net(c_in * x, c_noise),   x0_hat = c_skip * x + c_out * F.

The network regresses F on (x0 - c_skip x) / c_out, which for flow matching is the velocity
eps - x0 and for EDM the paper's preconditioned target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ddpm.diffusion.objective import rank_part, weighted_mse, x0_weight
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_int, require

Net = Callable[[Tensor, Tensor], Tensor]  # (network input, noise-level input) -> output


class Process:
    """A forward noising process: how training noises data, and the table samplers read."""

    name: str
    grid: NoiseSchedule  # the process's noise levels as a VP table, noisiest last
    # Config keys outside `process` that only some processes read (ddpm.configs.unread): a
    # run refuses them on the command line under a process that does not list them.
    reads: tuple[str, ...] = ()
    # Whether the network takes a second noise-level input, the interval t - r
    # (``model.interval_input``): process=meanflow's average velocity; the others feed none.
    interval_input = False

    def loss(
        self,
        model: nn.Module,
        x0: Tensor,
        weighting: str = "none",
        labels: Tensor | None = None,
        label_dropout: float = 0.0,
        part: slice = slice(None),
    ) -> Tensor:
        """The training loss on a batch (``part``: this rank's images; see
        :func:`ddpm.diffusion.objective.diffusion_loss`)."""
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Refuses a network this process cannot train (one line)."""
        got = getattr(model, "interval_input", False)  # a network of another kind has none
        if self.interval_input:
            allowed = f"true: process={self.name}'s network takes the interval t - r as an input"
        else:
            allowed = f"false: only process=meanflow feeds the interval t - r, not {self.name}"
        require(got == self.interval_input, "model.interval_input", got, allowed)

    def check_sampler(self, sampler: Any) -> None:
        """Refuses a sampler that cannot sample this process's runs (one line); every sampler
        can, unless a subclass says otherwise."""

    def describe(self) -> str:
        """What trains, in the run's plan line (``flow (logit_normal times)``)."""
        return self.name

    def to(self, device: torch.device | str) -> Process:
        self.grid.to(device)
        return self


class ContinuousProcess(Process):
    """A process in continuous time t in (0, 1]: subclasses give alpha, sigma, the
    preconditioning and the training draw of t; this class gives the loss, the grid and the
    x0 estimates.

    The grid: ``levels`` times, increasing, that samplers plan over (plans pick rows of it, as
    they pick timesteps of a DDPM schedule).
    """

    reads: tuple[str, ...] = ("trainer.loss_weighting",)  # its weight on F (meanflow: its own)

    def __init__(self, levels: int) -> None:
        require(is_int(levels, 2), "process.levels", levels, "an integer >= 2")
        times = self.grid_times(levels).to(torch.float64)
        self.times = times  # float64, on the CPU
        self._rows: dict[torch.device, Tensor] = {}  # the samplers' tables, per device
        a, s = self.alpha(times), self.sigma(times)
        self.grid = NoiseSchedule(a**2 / (a**2 + s**2), precond=self)

    # --- what a process defines (t: float64 or float32 tensors of times) ------------------
    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def draw(self, size: int, device: torch.device) -> Tensor:
        """Training times for a batch, from the global RNG."""
        raise NotImplementedError

    def grid_times(self, levels: int) -> Tensor:
        """The ``levels`` increasing times samplers plan over."""
        raise NotImplementedError

    def time_of_sigma(self, sigma_vp: Tensor) -> Tensor:
        """The time whose sigma/alpha is ``sigma_vp`` (the adaptive ODE solver's inverse)."""
        raise NotImplementedError

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """c_in, c_skip, c_out and c_noise at times ``t``."""
        raise NotImplementedError

    def coupling(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """How a batch's noise is paired with its images: None = independently (the default;
        flow matching may pair by optimal transport)."""
        return None

    def check_sampler(self, sampler: Any) -> None:
        """A paired run refuses stochastic samplers: with each image's noise chosen, x_t given
        the image is no longer the Gaussian N(alpha x0, sigma^2) that an ancestral or SDE step
        draws from; only the probability-flow ODE (the learned velocity field) carries the
        data's marginals. Measured: one OT run read FID 45.4 with dpm_solver_pp_sde (50 calls)
        and 27.1 with dpm_solver_pp (20 calls; experiments/cpu_recipe, 2000 samples)."""
        require(
            self.coupling() is None or not sampler.stochastic,
            "sampler",
            type(sampler).__name__,
            "draws fresh noise, which a run with process.pairing=ot cannot take (its images are "
            "paired with chosen noise); pick a deterministic sampler: sampler=dpm_solver_pp, "
            "euler, unipc, or heun with sampler.churn=0",
        )

    def target(self, x0: Tensor, noise: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """What F regresses on: (x0 - c_skip x) / c_out (subclasses may say it more exactly)."""
        _, c_skip, c_out, _ = (_shaped(c, x.ndim) for c in self.coefficients(t))
        return (x0 - c_skip * x) / c_out

    # --- shared ---------------------------------------------------------------------------
    def noised(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps (one time per image)."""
        return _shaped(self.alpha(t), x0.ndim) * x0 + _shaped(self.sigma(t), x0.ndim) * noise

    def loss(
        self,
        model: nn.Module,
        x0: Tensor,
        weighting: str = "none",
        labels: Tensor | None = None,
        label_dropout: float = 0.0,
        part: slice = slice(None),
    ) -> Tensor:
        """Mean squared error of F, weighted per image (``none``: 1, which is flow matching's
        loss and EDM's lambda(sigma) = 1/c_out^2 weighting of the x0 error; ``min_snr`` and
        ``soft_min_snr``: :func:`~ddpm.diffusion.objective.x0_weight` in x0 units). Draws
        times, noise and label dropout for the whole batch first, in that order, so the split
        over ranks cannot change them."""
        size = x0.shape[0]
        t = self.draw(size, x0.device)
        x0, t, noise, labels = rank_part(model, x0, t, labels, label_dropout, part, self.coupling())
        x = self.noised(x0, t, noise)
        c_in, _, c_out, c_noise = self.coefficients(t)
        net_in = _shaped(c_in, x.ndim) * x
        output = model(net_in, c_noise) if labels is None else model(net_in, c_noise, labels)
        goal = self.target(x0, noise, x, t)
        return weighted_mse(output, goal, self.weight(t, c_out, weighting), size)

    def weight(self, t: Tensor, c_out: Tensor, weighting: str) -> Tensor:
        """Per-image loss weights on F's error (an x0 error is c_out times it)."""
        if weighting == "none":
            return torch.ones_like(t)
        snr = (self.alpha(t) / self.sigma(t)) ** 2
        return x0_weight(snr, weighting) * c_out**2

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        prediction = getattr(model, "prediction", "eps")  # the default, unless named
        require(
            prediction == "eps",
            "model.prediction",
            prediction,
            f"eps (the default): it chooses the target of process=ddpm only; process={self.name}"
            " fixes what its network predicts",
        )

    def x0(self, net: Net, x_vp: Tensor, t: Tensor) -> Tensor:
        """The x0 estimate at grid rows ``t`` (indices into :attr:`grid`)."""
        rows = self._rows.get(x_vp.device)
        if rows is None:  # float64 on the CPU, then float32 tables on the device, once
            rows = torch.stack(self._calling(self.times)).to(x_vp.device, torch.float32)
            self._rows[x_vp.device] = rows
        return self._denoise(net, x_vp, rows[:, t.to(x_vp.device)])

    def x0_at_sigma(self, net: Net, x_vp: Tensor, sigma: Tensor) -> Tensor:
        """The x0 estimate where sigma/alpha = ``sigma`` (CPU values; any level, not only
        the grid's)."""
        t = self.time_of_sigma(sigma.cpu().to(torch.float64))
        rows = torch.stack(self._calling(t)).to(x_vp.device, torch.float32)
        return self._denoise(net, x_vp, rows)

    def _calling(self, t: Tensor) -> tuple[Tensor, ...]:
        """scale (x = scale x_vp), c_in, c_skip, c_out and c_noise at times ``t``."""
        scale = (self.alpha(t) ** 2 + self.sigma(t) ** 2).sqrt()
        return (scale, *self.coefficients(t))

    @staticmethod
    def _denoise(net: Net, x_vp: Tensor, rows: Tensor) -> Tensor:
        nd = x_vp.ndim
        scale, c_in, c_skip, c_out = (_shaped(r.to(x_vp.dtype), nd) for r in rows[:4])
        x = scale * x_vp
        return c_skip * x + c_out * net(c_in * x, rows[4])


def _shaped(values: Tensor, ndim: int) -> Tensor:
    """Per-image values shaped to broadcast against a batch with ``ndim`` dimensions."""
    return values.reshape(-1, *([1] * (ndim - 1)))
