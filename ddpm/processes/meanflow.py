"""``process=meanflow``: MeanFlow (Geng et al. 2025), few-step and one-step generation trained
from scratch on flow matching's path.

The path is flow's, z_t = (1 - t) x0 + t eps with velocity v = eps - x0, but the network
predicts the *average* velocity over an interval [r, t], r <= t,

    u(z_t, r, t) = 1/(t - r) * integral_r^t v(z_s, s) ds,   so   z_r = z_t - (t - r) u(z_t, r, t),

and one call maps noise at t = 1 to an image at r = 0 (``sampler=one_step``). Differentiating
(t - r) u = integral_r^t v in t gives the MeanFlow identity u = v - (t - r) du/dt, where du/dt
= v . d_z u + d_t u is the derivative along the path: the Jacobian-vector product of the network
in (z, r, t) with tangent (v, 0, 1). Training regresses u on the identity's right side, with the
conditional velocity for v and the whole target stopped from the gradient. At r = t the average
is the instantaneous velocity and the target is flow matching's, so the x0 estimate at a grid
time (what every multi-call sampler asks for) is flow's with r = t.

The network takes (s t, s (t - r)) as its noise level (``model.interval_input``, which
conf/process/meanflow.yaml switches on), s = ``time_scale``. Not flow's 1000: du/dt runs through
the sinusoidal embedding's features sin(f s t), so s multiplies the time derivative the target
is made of, and at 1000 a small U-Net's MeanFlow loss did not come down (5-20 after 150 steps
where s = 1 or 10 settled at 0.35-0.4).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.func import jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from ddpm.diffusion.objective import rank_part
from ddpm.errors import is_number, require
from ddpm.processes.base import Net, _shaped
from ddpm.processes.flow import FlowProcess


class MeanFlowProcess(FlowProcess):
    """Flow's path and grid; the network's output is the average velocity u(z_t, r, t).

    Training times: t and r are two draws of flow's time distribution (``time_sampling``,
    ``logit_mean``, ``logit_std``), sorted so r <= t; the first round(``ratio_r_neq_t`` x batch)
    images keep that r < t and the rest take r = t (plain flow matching, no JVP). The squared
    error ||u - sg(u_tgt)||^2 (summed over pixels) is weighted per image by the paper's adaptive
    w = sg(1 / (||u - u_tgt||^2 + ``adaptive_c``)^``adaptive_p``) (p = 0: unweighted).
    ``time_scale``: s in the network's noise-level input (s t, s (t - r)), in training and
    sampling alike.
    """

    name = "meanflow"
    reads = ("model.interval_input",)
    interval_input = True

    def __init__(
        self,
        *,
        time_sampling: str,
        logit_mean: float,
        logit_std: float,
        ratio_r_neq_t: float,
        adaptive_p: float,
        adaptive_c: float,
        time_scale: float,
        levels: int,
    ) -> None:
        require(
            is_number(ratio_r_neq_t) and 0 <= ratio_r_neq_t <= 1,
            "process.ratio_r_neq_t",
            ratio_r_neq_t,
            "a number in [0, 1] (the share of images with r < t; 0 = flow matching)",
        )
        require(
            is_number(adaptive_p) and adaptive_p >= 0,
            "process.adaptive_p",
            adaptive_p,
            "a number >= 0 (0 = the plain squared error)",
        )
        require(
            is_number(adaptive_c) and adaptive_c > 0,
            "process.adaptive_c",
            adaptive_c,
            "a number > 0",
        )
        require(
            is_number(time_scale) and time_scale > 0,
            "process.time_scale",
            time_scale,
            "a number > 0 (the network's time input is time_scale * t)",
        )
        self.time_scale = float(time_scale)
        self.ratio_r_neq_t = float(ratio_r_neq_t)
        self.adaptive_p, self.adaptive_c = float(adaptive_p), float(adaptive_c)
        super().__init__(
            time_sampling=time_sampling,
            logit_mean=logit_mean,
            logit_std=logit_std,
            shift=1.0,
            levels=levels,
            pairing="independent",
        )

    def describe(self) -> str:
        times = self.time_sampling
        if times == "logit_normal":
            times += f" {self.logit_mean:g}/{self.logit_std:g}"
        share = f"{100 * self.ratio_r_neq_t:g}% r < t"
        return (
            f"meanflow ({times} times, {share}, adaptive p {self.adaptive_p:g}, average velocity)"
        )

    # --- the network's inputs -------------------------------------------------------------
    def net_levels(self, t: Tensor, r: Tensor) -> Tensor:
        """The noise-level input for times ``t`` and ``r``: rows (s t, s (t - r)), in the times'
        precision (fp32 in training and sampling, whatever the autocast)."""
        return torch.stack([self.time_scale * t, self.time_scale * (t - r)], dim=1)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c_in, c_skip, c_out, _ = super().coefficients(t)
        return c_in, c_skip, c_out, self.time_scale * t

    def average_velocity(self, net: Net, z: Tensor, r: float, t: float) -> Tensor:
        """u(z, r, t) for a batch at one interval [r, t] (``sampler=one_step``'s call); ``net``
        takes (z, noise levels), as the samplers' guided call does."""
        full = torch.full((z.shape[0],), t, device=z.device, dtype=torch.float32)
        return net(z, self.net_levels(full, torch.full_like(full, r)))

    def x0(self, net: Net, x_vp: Tensor, t: Tensor) -> Tensor:
        return super().x0(_instantaneous(net), x_vp, t)

    def x0_at_sigma(self, net: Net, x_vp: Tensor, sigma: Tensor) -> Tensor:
        return super().x0_at_sigma(_instantaneous(net), x_vp, sigma)

    # --- training -------------------------------------------------------------------------
    def interval_count(self, size: int) -> int:
        """How many images of a batch of ``size`` train with r < t (the first ones)."""
        return round(self.ratio_r_neq_t * size)

    def draw_pair(self, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Training times t >= r for a batch, from the global RNG: r < t for the first
        :meth:`interval_count` images, r = t for the rest."""
        a, b = self.draw(size, device), self.draw(size, device)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        k = self.interval_count(size)
        return t, torch.cat([r[:k], t[k:]])

    def loss(
        self,
        model: nn.Module,
        x0: Tensor,
        weighting: str = "none",
        labels: Tensor | None = None,
        label_dropout: float = 0.0,
        part: slice = slice(None),
    ) -> Tensor:
        """The MeanFlow loss on a batch. Its value is the unweighted mean squared error per
        pixel of u against the target (the curve a run logs, comparable across ``adaptive_p``
        and with process=flow's at r = t); its gradient is the adaptively weighted loss's.
        Draws times, noise and label dropout for the whole batch first, so the split over ranks
        cannot change them."""
        require(
            weighting == "none",
            "trainer.loss_weighting",
            weighting,
            "none under process=meanflow (its loss weights itself: process.adaptive_p)",
        )
        size = x0.shape[0]
        t, r = self.draw_pair(size, x0.device)
        x0, times, noise, labels = rank_part(
            model, x0, torch.stack([t, r], dim=1), labels, label_dropout, part
        )
        t, r = times.unbind(1)
        z = self.noised(x0, t, noise)
        levels = self.net_levels(t, r)
        u = model(z, levels) if labels is None else model(z, levels, labels)
        rows = len(range(self.interval_count(size))[part])  # this part's images with r < t
        goal = self.mean_flow_target(model, z, r, t, noise - x0, labels, rows)
        squared = (u.to(goal.dtype) - goal).pow(2).flatten(1).sum(1)  # ||u - u_tgt||^2
        weights = (squared.detach() + self.adaptive_c).pow(-self.adaptive_p)
        weighted = (weights * squared).sum() / size
        mse = squared.detach().sum() / (size * z[0].numel())
        return mse + (weighted - weighted.detach())  # exactly mse, with weighted's gradient

    def mean_flow_target(
        self,
        model: nn.Module,
        z: Tensor,
        r: Tensor,
        t: Tensor,
        v: Tensor,
        labels: Tensor | None = None,
        rows: int | None = None,
    ) -> Tensor:
        """u_tgt = v - (t - r) du/dt at (z, r, t), without gradient. Training passes the
        conditional velocity eps - x0 for ``v``; the target is affine in ``v``, so its mean
        given z is this with the marginal velocity, which the exact u satisfies exactly (the
        MeanFlow identity). ``rows``: the first images with r < t (None: all)."""
        rows = len(z) if rows is None else rows
        dudt = self.total_derivative(model, z, r, t, v, labels, rows)
        return v.to(dudt.dtype) - _shaped(t - r, z.ndim).to(dudt.dtype) * dudt

    def total_derivative(
        self,
        model: nn.Module,
        z: Tensor,
        r: Tensor,
        t: Tensor,
        v: Tensor,
        labels: Tensor | None,
        rows: int,
    ) -> Tensor:
        """du/dt = v . d_z u + d_t u at (z, r, t), for the first ``rows`` images (the rest, r =
        t, get 0: (t - r) multiplies it), by ``torch.func.jvp`` with tangent (v, 0, 1).

        No gradient (the target is stopped), outside any autocast (in the inputs' precision,
        fp32 in training: the time input's derivative runs through sinusoids of s t), on
        the network itself rather than a DDP or compiled wrapper, and with the math attention
        kernel: the fused ones have no forward-mode derivative.
        """
        out = torch.zeros_like(z)
        if rows == 0:
            return out
        net = _unwrapped(model)
        kept = None if labels is None else labels[:rows]

        def u_of(z_: Tensor, r_: Tensor, t_: Tensor) -> Tensor:
            levels = self.net_levels(t_, r_)
            return net(z_, levels) if kept is None else net(z_, levels, kept)

        primals = (z[:rows], r[:rows], t[:rows])
        tangents = (v[:rows].to(z.dtype), torch.zeros_like(r[:rows]), torch.ones_like(t[:rows]))
        with (
            torch.no_grad(),
            torch.autocast(z.device.type, enabled=False),
            sdpa_kernel(SDPBackend.MATH),
            warnings.catch_warnings(),
        ):
            # torch's first forward-mode call loads its JVP decompositions with torch.jit.script,
            # which warns of its own deprecation: torch's business, not the run's
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")
            _, dudt = jvp(u_of, primals, tangents)
        out[:rows] = dudt.to(out.dtype)
        return out


def _instantaneous(net: Net) -> Net:
    """``net`` called at r = t (interval 0): the velocity that the multi-call samplers' x0
    estimate reads, as flow's network gives it."""
    return lambda x, c_noise: net(x, torch.stack([c_noise, torch.zeros_like(c_noise)], dim=1))


def _unwrapped(model: nn.Module) -> nn.Module:
    """The network under torch.compile's and DistributedDataParallel's wrappers: the JVP runs
    eagerly and needs no gradient averaging."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner
