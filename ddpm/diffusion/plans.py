"""Timestep plans: which of the schedule's T timesteps a sampler calls the network at.

Every sampler gets its plan from :func:`timestep_plan`, computed from the schedule's own tables
(log-SNR and sigma come from ``NoiseSchedule``), so a plan never re-derives alpha_bar. A plan is
a strictly increasing list of unique integer timesteps; the sampler visits it backwards and its
last row (the smallest timestep) is where it returns the x0 estimate. With few steps the plan,
not the solver, decides most of the error: where the steps sit on the noise axis matters more
than how each step is taken (Lu et al. 2022, Karras et al. 2022, Lin et al. 2023).

- ``linspace``: round(linspace(0, top, n)) (the seed's plan): top first, 0 last.
- ``leading``: 0, T/n, 2T/n, ... (DDIM's even skip): 0 last, but starts T/n below the top.
- ``trailing``: top, top - T/n, ... (Lin et al. 2023): top first, ends at T/n - 1, so no call
  is spent at t = 0 where x_t is already the image.
- ``quadratic``: top (k/(n-1))^2 (DDIM's quadratic skip): dense near the data.
- ``logsnr``: uniform in lambda = log(alpha/sigma) between the top and t = 0 (DPM-Solver).
- ``karras``: sigma = exp(-lambda) spaced with rho = 7 between the top and t = 0 (EDM).
  Both cap the noisy end of their range at sigma = 80 (EDM's sigma_max) and start at the top.

Continuous targets are mapped to the nearest timestep in lambda; where two land on the same
integer the later ones move up one step, so the plan keeps exactly ``steps`` timesteps.

A plan can also be a file (``sampler.plan=<file>``, written by ``python -m ddpm.plan``): its
timesteps, and the fingerprint of the noise levels it was fitted on, so a plan is never used on
another schedule or process grid.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError, is_int, require

SPACINGS = ("linspace", "leading", "trailing", "quadratic", "logsnr", "karras")
KARRAS_RHO = 7.0
# The noisy end of the logsnr and karras ranges: EDM's sigma_max = 80 (lambda = -log 80). Past it
# x_t shows no signal; cosine's clipped last betas reach sigma ~ 2e4, and a range out there puts
# most of a short plan's steps on t = 990..999 where they change nothing.
SIGMA_MAX = 80.0


def check_spacing(spacing: object) -> str:
    """``spacing`` itself, or a one-line UserError naming the allowed values."""
    require(spacing in SPACINGS, "sampler.spacing", spacing, f"one of {', '.join(SPACINGS)}")
    return str(spacing)


def check_steps(steps: object, timesteps: int) -> int | None:
    """``steps`` itself (None = every timestep), or a one-line UserError."""
    ok = steps is None or (is_int(steps, 1) and steps <= timesteps)
    require(ok, "sampler.steps", steps, f"null or 1..schedule.timesteps={timesteps}")
    return steps  # type: ignore[return-value]


def half_log_snr(schedule: NoiseSchedule) -> Tensor:
    """lambda_t = log(alpha_t / sigma_t) in float64 (the table's float32 ties near t = T)."""
    ab = schedule._alpha_bar64.cpu()
    return 0.5 * (ab.log() - (-ab).log1p())


def linspace_timesteps(count: int, steps: int | None) -> list[int]:
    """round(linspace(0, count-1, steps)), increasing: the seed's plan, needing no schedule.

    It always contains count-1 (start from the noisiest step) and 0 (finish on the clean-data
    step); ``steps`` None, or at least ``count``, keeps them all.
    """
    if steps is None or steps >= count:
        return list(range(count))
    if steps < 1:
        raise ValueError(f"sampler.steps={steps}: must be >= 1")
    if steps == 1:
        return [count - 1]
    spaced = torch.linspace(0, count - 1, steps, dtype=torch.float64).round().long()
    return sorted(set(spaced.tolist()))


def _distinct(values: Tensor, top: int) -> list[int]:
    """Rounded increasing ``values`` made strictly increasing within [0, top], same length.

    Ties move up one step at a time from the low end, then anything pushed past ``top`` moves
    back down from the high end; both endpoints survive when they were 0 and ``top``.
    """
    ts = values.round().long().clamp(0, top).tolist()
    for k in range(1, len(ts)):
        ts[k] = max(ts[k], ts[k - 1] + 1)
    ts[-1] = min(ts[-1], top)
    for k in range(len(ts) - 2, -1, -1):
        ts[k] = min(ts[k], ts[k + 1] - 1)
    return ts


def _nearest_in_lambda(lam: Tensor, targets: Tensor) -> Tensor:
    """For each target lambda, the timestep whose lambda is closest (lam decreases in t)."""
    return (lam[None, :] - targets[:, None]).abs().argmin(dim=1).to(torch.float64)


def timestep_plan(
    schedule: NoiseSchedule, steps: int | None, spacing: str = "linspace", top: int | None = None
) -> list[int]:
    """The increasing timesteps in [0, ``top``] (default T-1) a ``steps``-call plan visits.

    ``steps`` None, or at least ``top + 1``, keeps every timestep (any spacing).
    """
    check_spacing(spacing)
    top = len(schedule) - 1 if top is None else top
    if not 0 <= top < len(schedule):
        raise ValueError(f"top timestep {top}: allowed 0..{len(schedule) - 1}")
    count = top + 1
    if steps is None or steps >= count:
        return list(range(count))
    if steps < 1:
        raise ValueError(f"steps={steps}: must be >= 1")
    k = torch.arange(steps, dtype=torch.float64)
    if spacing == "leading":
        return [i * (count // steps) for i in range(steps)]
    if spacing == "trailing":
        return sorted(round(count - i * count / steps) - 1 for i in range(steps))
    if steps == 1:
        return [top]
    frac = k / (steps - 1)  # 0 .. 1
    if spacing == "linspace":
        return linspace_timesteps(count, steps)
    if spacing == "quadratic":
        return _distinct(top * frac**2, top)
    lam = half_log_snr(schedule)[:count]
    lo, hi = max(float(lam[top]), -math.log(SIGMA_MAX)), float(lam[0])
    if spacing == "logsnr":
        targets = hi + frac * (lo - hi)
    else:  # karras: sigma = exp(-lambda), rho-spaced from sigma_max down to sigma_min
        s_max, s_min = (-lo) / KARRAS_RHO, (-hi) / KARRAS_RHO  # log(sigma^(1/rho))
        root_max, root_min = torch.exp(torch.tensor(s_max)), torch.exp(torch.tensor(s_min))
        sigma = (root_min + frac * (root_max - root_min)) ** KARRAS_RHO
        targets = -sigma.log()
    nearest = _nearest_in_lambda(lam, targets)
    nearest[-1] = top  # the plan starts at the top even where sigma_max capped its range
    return _distinct(nearest, top)


def fingerprint(schedule: NoiseSchedule) -> str:
    """A short hash of the noise levels (alpha_bar, float32 bytes): equal for the same schedule
    or process grid, different for any other."""
    return hashlib.sha256(schedule.alpha_bar.cpu().numpy().tobytes()).hexdigest()[:16]


def write_plan(path: Path, schedule: NoiseSchedule, timesteps: list[int], **about: Any) -> None:
    """Saves an increasing plan for ``schedule`` (and ``about``: how it was found) as JSON,
    written whole or not at all."""
    rows = sorted(int(t) for t in timesteps)
    record = {"timesteps": rows, "levels": len(schedule), "fingerprint": fingerprint(schedule)}
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({**record, **about}, indent=1) + "\n")
    part.replace(path)


def read_plan(path: str | Path, schedule: NoiseSchedule) -> list[int]:
    """The increasing timesteps of a plan file, or one UserError naming the file and what is
    wrong (missing, not a plan, fitted on another schedule, rows out of range)."""
    where = f"sampler.plan={path}"
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{where}: no such file (python -m ddpm.plan writes one)")
    try:
        record = json.loads(file.read_text())
        rows, mark = record["timesteps"], record["fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{where}: not a plan file (JSON with timesteps and fingerprint)") from None
    count = len(schedule)
    if mark != fingerprint(schedule):
        raise UserError(
            f"{where}: fitted on another noise schedule (levels {record.get('levels')}, "
            f"fingerprint {mark}); this run's is {count} levels, {fingerprint(schedule)}"
        )
    ok = (
        isinstance(rows, list)
        and len(rows) > 0
        and all(is_int(r, 0) and r < count for r in rows)
        and rows == sorted(set(rows))
    )
    if not ok:
        raise UserError(f"{where}: timesteps must be increasing integers in 0..{count - 1}")
    return rows
