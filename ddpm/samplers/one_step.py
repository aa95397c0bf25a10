"""MeanFlow's few-step sampler (Geng et al. 2025): jumps along the average velocity.

A network that predicts the average velocity u(z_t, r, t) over [r, t] (``process=meanflow``)
moves a state from time t to r exactly in one call, z_r = z_t - (t - r) u(z_t, r, t); so
``steps`` calls on equally spaced times 1 = t_0 > t_1 > ... > t_steps = 0 take pure noise to an
image, and ``steps=1`` is one-step generation. A process without average velocities has no such
call, and the sampler refuses its runs in one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError, is_int, require
from ddpm.samplers.base import Sampler


class OneStepSampler(Sampler):
    """``steps`` average-velocity jumps from t = 1 to t = 0, one network call each.

    The state is the process's own z_t, which at t = 1 (pure noise) and t = 0 (the image) is
    the variance-preserving state the other samplers start from and end on. ``clip_x0``
    clamps the image to [-1, 1]; ``guidance_scale`` guides u as the other samplers guide
    their outputs. ``timesteps`` lists the grid rows nearest the call times (what ``record``
    matches).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        steps: int,
        clip_x0: bool,
        guidance_scale: float,
    ) -> None:
        process = schedule.precond
        require(
            callable(getattr(process, "average_velocity", None)),
            "sampler",
            "one_step",
            "needs a process that learns average velocities (process=meanflow); this run "
            f"trains process={getattr(process, 'name', 'ddpm')}: pick a multi-call sampler",
        )
        require(is_int(steps, 1), "sampler.steps", steps, "an integer >= 1 (1, 2 or 4 calls)")
        self.process = process
        super().__init__(
            schedule,
            steps=steps,
            spacing="linspace",  # equally spaced in t, which is what the plan line says
            plan=None,
            clip_x0=clip_x0,
            dynamic_threshold=None,
            guidance_scale=guidance_scale,
        )

    def call_times(self) -> list[float]:
        """t_0 = 1 > t_1 > ... > t_steps = 0, equally spaced: call i jumps from t_i to t_i+1."""
        return torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64).tolist()

    def _plan(self, start_t: int) -> NoiseSchedule:
        """The grid rows nearest the call times (for ``timesteps`` and ``record``)."""
        times = self.process.times
        kept = {int((times - t).abs().argmin()) for t in self.call_times()[:-1]}
        return self.schedule.respace(sorted(kept))

    @property
    def nfe(self) -> int:
        return self.steps

    def starting_at(self, t: int) -> Sampler:
        raise UserError(
            "sampler='one_step': jumps from pure noise (t = 1) only; denoising starts partway: "
            "pick a multi-call sampler (sampler=euler)"
        )

    def on_plan(self, timesteps: Sequence[int]) -> Sampler:
        raise UserError("sampler='one_step': its times are fixed (equally spaced); no plan")

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
        """Images from noise (or from ``x_T``, at t = 1), and the first image's state after the
        calls nearest the grid rows in ``record``."""
        self.to(device)
        z = (
            x_T.to(device)
            if x_T is not None
            else torch.randn(tuple(shape), device=device, generator=generator)
        )
        if labels is not None:
            labels = labels.to(device)
            if labels.shape != (z.shape[0],):
                raise ValueError(f"labels of shape {tuple(labels.shape)}: one per image")
        times = self.call_times()
        grid = self.process.times
        rows = [int((grid - t).abs().argmin()) for t in times[:-1]]
        wanted = {min(range(len(rows)), key=lambda i: abs(rows[i] - t)): t for t in record}
        net = lambda x_in, level: self.predict(model, x_in, level, labels)  # noqa: E731
        trajectory: dict[int, Tensor] = {}
        calls = range(self.steps)
        for i in tqdm(calls, desc=type(self).__name__, disable=not progress, leave=False):
            t, r = times[i], times[i + 1]
            z = z - (t - r) * self.process.average_velocity(net, z, r, t)
            if i == self.steps - 1:
                z = self.handle_x0(z)
            if i in wanted:
                trajectory[wanted[i]] = z[0].detach().cpu()
        return z, trajectory
