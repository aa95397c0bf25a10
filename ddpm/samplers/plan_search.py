"""Fitting a timestep plan to one trained network: which rows a few-call solver should visit.

At 5-10 network calls the plan decides most of the error (``ddpm.diffusion.plans``), and the best
fixed spacing differs per model. The search follows the dynamic-programming idea of Chen et al.
2024 (GITS):

1. **Reference**: a fine deterministic trajectory (DPM-Solver++(2M), ``reference_steps`` rows
   on the log-SNR plan) from ``num`` x_T; its rows are the candidates, and at each the state and
   the network's x0 estimate are kept.
2. **Dynamic programming**: the cost of jumping from one candidate to a later one is the squared
   distance between a DDIM step from the reference state there (closed form from the x0 estimate
   already computed: no network call) and the reference state where it lands; the plan of
   ``nfe`` calls that starts at the top and minimises the summed cost, plus the distance of its
   last x0 estimate to the reference image, is found exactly.
3. **Refinement** (``refine`` passes): each row in turn moves to a neighbouring candidate when
   the *solver's own* final images get closer to the reference images; this is what adapts the
   plan to multistep solvers whose error is not a sum of single steps.

The error reported is the root mean squared difference per pixel between the solver's images
and the reference images, on ``num_check`` held-out x_T that the search never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddpm.diffusion.plans import SPACINGS, timestep_plan
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import Sampler


@dataclass
class Reference:
    """A fine trajectory: candidate timesteps (decreasing), the batch's state and x0 estimate
    at each, and the images it ends on."""

    timesteps: list[int]
    states: Tensor  # (R, B, C, H, W)
    x0: Tensor  # (R, B, C, H, W)
    images: Tensor  # (B, C, H, W)


def reference_sampler(schedule: NoiseSchedule, steps: int, like: Sampler) -> Sampler:
    """DPM-Solver++(2M) from its yaml on ``steps`` log-SNR rows, with ``like``'s x0 handling
    and guidance."""
    from ddpm.configs.presets import preset

    return preset(
        "sampler",
        "dpm_solver_pp",
        schedule=schedule,
        steps=steps,
        spacing="logsnr",
        plan=None,
        clip_x0=like.clip_x0,
        dynamic_threshold=like.dynamic_threshold,
        guidance_scale=like.guidance_scale,
    )


@torch.no_grad()
def reference(model: nn.Module, teacher: Sampler, x_T: Tensor) -> Reference:
    """Runs ``teacher`` from ``x_T``, keeping every row's state and x0 estimate."""
    teacher.to(x_T.device)
    teacher.reset()
    states, x0s, x = [], [], x_T
    for i in range(len(teacher.table) - 1, -1, -1):
        x0 = teacher.predict_x0(model, x, i)
        states.append(x)
        x0s.append(x0)
        x = teacher.step(x0, x, i, None)
    return Reference(teacher.timesteps, torch.stack(states), torch.stack(x0s), x)


def _squared(a: Tensor, b: Tensor) -> Tensor:
    """Mean over the batch of the summed squared difference (last dims: one image)."""
    return (a - b).pow(2).flatten(-3).sum(-1).mean(-1)


def jump_costs(ref: Reference, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """``cost[a, b]`` (a before b on the trajectory): the error of one DDIM step from candidate a
    to b; ``end[a]``: the error of stopping at a with its x0 estimate."""
    rows = torch.tensor(ref.timesteps)
    sa = schedule.sqrt_alpha_bar.cpu()[rows].to(ref.states)
    so = schedule.sqrt_one_minus_alpha_bar.cpu()[rows].to(ref.states)
    count = len(rows)
    cost = torch.full((count, count), float("inf"), dtype=torch.float64)
    shape = (-1, 1, 1, 1, 1)
    for a in range(count - 1):
        eps = (ref.states[a] - sa[a] * ref.x0[a]) / so[a]
        land = sa[a + 1 :].reshape(shape) * ref.x0[a] + so[a + 1 :].reshape(shape) * eps
        cost[a, a + 1 :] = _squared(land, ref.states[a + 1 :]).double()
    end = _squared(ref.x0, ref.images).double()
    return cost, end


def best_path(cost: Tensor, end: Tensor, calls: int) -> list[int]:
    """Candidate indices (increasing: noisiest first, starting at 0) of the ``calls``-call path
    with the least summed ``cost`` plus ``end`` at its last call (exact dynamic programming)."""
    count = len(end)
    if not 1 <= calls <= count:
        raise ValueError(f"calls={calls}: allowed 1..{count} (the reference's rows)")
    total = torch.full((count,), float("inf"), dtype=torch.float64)
    total[0] = 0.0
    came: list[Tensor] = []
    for _ in range(calls - 1):
        options = total[:, None] + cost  # from a (rows) to b (columns)
        total, prev = options.min(dim=0)
        came.append(prev)
    last = int((total + end).argmin())
    path = [last]
    for prev in reversed(came):
        path.append(int(prev[path[-1]]))
    return path[::-1]


@torch.no_grad()
def plan_error(model: nn.Module, sampler: Sampler, x_T: Tensor, images: Tensor) -> float:
    """RMS difference per pixel between ``sampler``'s images from ``x_T`` and ``images``."""
    out, _ = sampler.sample(model, x_T.shape, device=x_T.device, x_T=x_T)
    return float((out - images).pow(2).mean().sqrt())


def fixed_plans(sampler: Sampler, rows: int) -> dict[str, list[int]]:
    """Every fixed spacing's ``rows``-row plan on ``sampler``'s schedule."""
    return {name: timestep_plan(sampler.schedule, rows, name) for name in SPACINGS}


@torch.no_grad()
def refine(
    model: nn.Module,
    sampler: Sampler,
    ref: Reference,
    path: list[int],
    passes: int,
) -> tuple[list[int], float]:
    """Coordinate descent over the path's rows (all but the first), in candidate steps of 4, 2
    and 1, on the solver's own error against the reference images; the path and its error."""
    x_T = ref.states[0]

    def error(p: list[int]) -> float:
        return plan_error(model, sampler.on_plan([ref.timesteps[k] for k in p]), x_T, ref.images)

    best = error(path)
    for _ in range(passes):
        moved = False
        for width in (4, 2, 1):
            for k in range(1, len(path)):
                for shift in (-width, width):
                    trial = list(path)
                    trial[k] += shift
                    low = trial[k - 1]  # k >= 1: the first row stays at the top
                    high = trial[k + 1] if k + 1 < len(trial) else len(ref.timesteps)
                    if not low < trial[k] < high:
                        continue
                    value = error(trial)
                    if value < best:
                        path, best, moved = trial, value, True
        if not moved:
            break
    return path, best
