"""The interface every sampler shares: a timestep plan, one ``step``, and one sampling loop.

A sampler reads the schedule's tables (respaced to its own timesteps when it skips steps) and
never re-derives them. ``step`` maps (x0 estimate, x_t, row i of the table) to the next state;
``sample`` runs the network and the steps from pure noise to an image, optionally conditioned
on class labels with classifier-free guidance (``guidance_scale``). ``sampler.plan=<file>``
replaces ``steps`` and ``spacing`` by a fitted plan (``python -m ddpm.plan``). ``starting_at(t)``
gives the same sampler on a plan that begins at timestep t instead of T-1, for starting the
reverse process from a partly noised image (``ddpm.denoise``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TypedDict

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddpm.diffusion.objective import to_x0
from ddpm.diffusion.plans import (
    check_spacing,
    check_steps,
    linspace_timesteps,
    read_plan,
    timestep_plan,
)
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError, is_number, require

AUTO = "auto"  # sampler.plan=auto: a plan fitted to the sampling network (ddpm.samplers.auto_plan)
# Pixels per network call on a CPU: 128 MNIST digits. On the 2-core CPU res_tiny's forward pass
# reached ~210 GFLOP/s at 32-128 images per call and ~110 at 500, where its activations leave
# the cache (ddpm.bench's sampling table); a training step of 128 reaches ~210.
CPU_CALL_PIXELS = 128 * 28 * 28


def network_call(model: nn.Module, x: Tensor, *per_image: Tensor) -> Tensor:
    """``model(x, *per_image)``, on a CPU in slices of at most :data:`CPU_CALL_PIXELS` pixels:
    the same outputs (per image) at the FLOP/s of a training batch. A GPU takes it whole."""
    rows = max(1, CPU_CALL_PIXELS // max(1, x[0].numel()))
    if x.device.type != "cpu" or len(x) <= rows:
        return model(x, *per_image)
    parts = [
        model(x[i : i + rows], *(a[i : i + rows] for a in per_image))
        for i in range(0, len(x), rows)
    ]
    return torch.cat(parts)


def x0_estimate(
    net: Callable[[Tensor, Tensor], Tensor],
    prediction: str | None,
    x: Tensor,
    table: NoiseSchedule,
    rows: Tensor,
) -> Tensor:
    """The network's raw x0 estimate for each image at its row of ``table`` (``rows``: one per
    image). A continuous process's grid calls ``net`` through its preconditioning; the DDPM
    schedule passes x and the integer timestep as they are and converts the ``prediction``
    (its model's target; a continuous process's is fixed, so None there)."""
    t = table.timesteps.to(x.device)[rows]
    if table.precond is not None:
        return table.precond.x0(net, x, t)
    return to_x0(prediction, net(x, t), x, rows, table)


def spaced_timesteps(num_timesteps: int, steps: int | None) -> list[int]:
    """The ``linspace`` plan, increasing: all timesteps, or ``steps`` evenly spread.

    ``round(linspace(0, T-1, steps))`` always contains T-1 (start from the noisiest step)
    and 0 (finish on the clean-data step). Other spacings:
    :func:`ddpm.diffusion.plans.timestep_plan`.
    """
    return linspace_timesteps(num_timesteps, steps)


class SamplerOptions(TypedDict):
    """The keys every sampler's config holds (conf/sampler/*.yaml), which :class:`Sampler`
    checks: a subclass names only its own keys and passes these on as ``**options``."""

    steps: int | None
    spacing: str
    plan: str | None
    clip_x0: bool
    dynamic_threshold: float | None
    guidance_scale: float


class Sampler:
    """Base class: subclasses implement :meth:`step`.

    ``guidance_scale`` w (conditional models, when labels are given): the network output is
    uncond + w (cond - uncond) (Ho & Salimans 2022); w=0 is the unconditional model, w=1 the
    plain conditional one, w>1 trades diversity for fidelity to the label.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        steps: int | None,
        spacing: str,
        plan: str | None,
        clip_x0: bool,
        dynamic_threshold: float | None,
        guidance_scale: float,
    ) -> None:
        # a fitted plan file: its timesteps, which then set the number of rows; ``auto``: the
        # plan is fitted for ``steps`` rows once the network is known (auto_plan.resolve)
        self.planned = None if plan in (None, AUTO) else read_plan(plan, schedule)
        self.plan_file = plan
        fixed = self.planned is None
        self.steps = check_steps(steps, len(schedule)) if fixed else len(self.planned)
        self.spacing = check_spacing(spacing)
        require(isinstance(clip_x0, bool), "sampler.clip_x0", clip_x0, "true or false")
        require(
            dynamic_threshold is None
            or (is_number(dynamic_threshold) and 0.5 <= dynamic_threshold < 1),
            "sampler.dynamic_threshold",
            dynamic_threshold,
            "null or a percentile in [0.5, 1) (Imagen: 0.995)",
        )
        require(
            is_number(guidance_scale) and guidance_scale >= 0,
            "sampler.guidance_scale",
            guidance_scale,
            "a number >= 0 (0 = unconditional, 1 = conditional, > 1 = guided)",
        )
        self.schedule = schedule
        self.clip_x0 = clip_x0
        self.dynamic_threshold = None if dynamic_threshold is None else float(dynamic_threshold)
        self.guidance_scale = float(guidance_scale)
        self.table = self._plan(len(schedule) - 1)

    def _plan(self, start_t: int) -> NoiseSchedule:
        """The table for timesteps 0..start_t planned to ``steps`` rows by ``spacing`` (or the
        plan file's timesteps: those below ``start_t``, then ``start_t`` itself).

        Row i of the result is original timestep ``kept[i]``; a full plan keeps the original
        table (so ``steps=T`` and ``steps=None`` are the same sampler, bit for bit).
        """
        if self.planned is None:
            kept = timestep_plan(self.schedule, self.steps, self.spacing, top=start_t)
        elif start_t == len(self.schedule) - 1:
            kept = self.planned
        else:
            kept = [t for t in self.planned if t < start_t] + [start_t]
        if len(kept) == len(self.schedule):
            return self.schedule
        return self.schedule.respace(kept)

    def starting_at(self, t: int) -> Sampler:
        """This sampler on a plan from timestep ``t`` down, spread over ``steps`` rows.

        The plan is ``timestep_plan(schedule, steps, spacing, top=t)``, whose first row is
        exactly timestep ``t`` (except ``leading``, which starts below it): pass ``x_T``
        distributed like x_t to :meth:`sample`.
        """
        if not 0 <= t < len(self.schedule):
            raise ValueError(f"start timestep {t}: allowed 0..{len(self.schedule) - 1}")
        other = copy.copy(self)
        other.table = self._plan(t)
        other.reset()
        return other

    def on_plan(self, timesteps: Sequence[int]) -> Sampler:
        """This sampler on the given timesteps (any order) instead of its own plan, as a plan
        file would set them: what the plan search tries."""
        other = copy.copy(self)
        other.planned = sorted(int(t) for t in timesteps)
        other.steps = len(other.planned)
        other.table = other._plan(len(self.schedule) - 1)
        other.reset()
        return other

    @property
    def stochastic(self) -> bool:
        """Draws fresh noise while it samples (two generators give two answers): what
        posterior samples need. The base's steps are deterministic."""
        return False

    @property
    def nfe(self) -> int:
        """Network calls per image for one :meth:`sample` (a guided call, scale not 0 or 1,
        runs the network once on a doubled batch)."""
        return len(self.table)

    @property
    def timesteps(self) -> list[int]:
        """Original timesteps, in the order they are visited (decreasing)."""
        return self.table.timesteps.flip(0).tolist()

    def to(self, device: torch.device | str) -> Sampler:
        self.table.to(device)
        self.schedule.to(device)
        return self

    def reset(self) -> None:
        """Clears per-trajectory state (multistep samplers keep previous estimates)."""

    def step(self, x0: Tensor, x_t: Tensor, i: int, generator: torch.Generator | None) -> Tensor:
        """One reverse step from row ``i`` of :attr:`table` to row ``i - 1`` (or to x0 at 0)."""
        raise NotImplementedError

    def predict(
        self, model: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor | None = None
    ) -> Tensor:
        """The network output at (x_t, t), guided toward ``labels`` when given.

        Guidance evaluates the conditional and unconditional predictions in one batched call;
        scale 1 and 0 need only one of them and return it unchanged.
        """
        if labels is None:
            return network_call(model, x_t, t)
        w = self.guidance_scale
        if w == 1.0:
            return network_call(model, x_t, t, labels)
        null = torch.full_like(labels, model.null_label)
        if w == 0.0:
            return network_call(model, x_t, t, null)
        both = network_call(
            model, torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null])
        )
        cond, uncond = both.chunk(2)
        return uncond + w * (cond - uncond)

    def predict_x0(
        self, model: nn.Module, x_t: Tensor, i: int, labels: Tensor | None = None
    ) -> Tensor:
        return self.x0_at(model, x_t, self.table, i, labels)

    def x0_at(
        self, model: nn.Module, x: Tensor, table: NoiseSchedule, i: int, labels: Tensor | None
    ) -> Tensor:
        """The (kept-in-range) x0 estimate at row ``i`` of ``table`` (the plan's or the whole
        schedule's), the network guided toward ``labels``."""
        rows = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        net = lambda x_in, level: self.predict(model, x_in, level, labels)  # noqa: E731
        prediction = model.prediction if table.precond is None else None  # DDPM's target
        return self.handle_x0(x0_estimate(net, prediction, x, table, rows))

    def handle_x0(self, x0: Tensor) -> Tensor:
        """The x0 estimate kept in the data range: Imagen's dynamic thresholding when
        ``dynamic_threshold`` is set (per image, s = max(1, that percentile of |x0|); clamp to
        [-s, s], divide by s), else the seed's clamp to [-1, 1] when ``clip_x0``."""
        if self.dynamic_threshold is not None:
            flat = x0.abs().flatten(1).float()
            s = torch.quantile(flat, self.dynamic_threshold, dim=1).clamp(min=1.0)
            s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
            return torch.maximum(torch.minimum(x0, s), -s) / s
        return x0.clamp(-1.0, 1.0) if self.clip_x0 else x0

    def advance(
        self,
        model: nn.Module,
        x: Tensor,
        i: int,
        labels: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        """From row ``i`` to row ``i - 1`` (or to the image at row 0); one network call here,
        samplers that call it more than once per row (Heun) override this."""
        return self.step(self.predict_x0(model, x, i, labels), x, i, generator)

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        shape: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        x_T: Tensor | None = None,
        record: Sequence[int] = (),
        progress: bool = False,
        labels: Tensor | None = None,
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Images from noise (or from ``x_T`` at the plan's first timestep), and the first
        image's state after each step in ``record``. ``labels`` (one class per image) makes a
        conditional model draw those classes.

        ``record`` holds original timesteps; each is matched to the nearest visited one.
        """
        if self.plan_file == AUTO and self.planned is None:
            raise UserError(
                "sampler.plan='auto': the plan is fitted to a trained network; sample through "
                "a command (ddpm.sample, ddpm.evaluate, a run's grids), or give a plan file"
            )
        self.to(device)
        self.reset()
        x = (
            x_T.to(device)
            if x_T is not None
            else torch.randn(tuple(shape), device=device, generator=generator)
        )
        if labels is not None:
            labels = labels.to(device)
            if labels.shape != (x.shape[0],):
                raise ValueError(f"labels of shape {tuple(labels.shape)}: one per image")
        visited = self.table.timesteps.tolist()
        wanted = {min(range(len(visited)), key=lambda i: abs(visited[i] - t)): t for t in record}
        trajectory: dict[int, Tensor] = {}
        rows = range(len(visited) - 1, -1, -1)
        for i in tqdm(rows, desc=type(self).__name__, disable=not progress, leave=False):
            x = self.advance(model, x, i, labels, generator)
            if i in wanted:
                trajectory[wanted[i]] = x[0].detach().cpu()
        return x, trajectory
