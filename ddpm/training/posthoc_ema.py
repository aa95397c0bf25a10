"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", EDM2 section 3): choose the EMA length after training.

While training, :class:`PowerEMA` keeps one power-function EMA per relative std
``sigma_rel``: ``avg_t = beta_t avg_{t-1} + (1 - beta_t) theta_t`` with
``beta_t = (1 - 1/t)^(gamma + 1)``, ``t`` counting its updates, so its first update copies the
weights. Every ``trainer.posthoc_ema_every`` steps each profile is written as a snapshot,
``<run>/ema_profiles/<sigma_rel>_<step>.pt``. Afterwards :func:`reconstruct` combines the
snapshots linearly into the EMA of any other ``sigma_rel`` (and any step up to the last one).

Why the combination works: a snapshot at step ``T`` of an EMA started after step ``s`` is a
weighted sum of the weights ``theta_tau`` after each step, with
``w_tau = (1 - beta_n) prod_{k > n} beta_k = (n^(g+1) - (n-1)^(g+1)) / L^(g+1)`` for
``n = tau - s`` in ``1..L``, ``L = T - s`` (the product telescopes). Any linear combination of
snapshots weighs the steps by the same combination of their ``w``; the least-squares
coefficients that bring it closest to the target's ``w`` give the target's EMA, exactly when
the target's profile lies in the snapshots' span (a stored profile at a stored step, say).

The paper solves the same least squares on the continuous profiles
``p(tau) = (g+1) tau^g / T^(g+1)``, whose inner products have a closed form. The discrete
weights are exactly ``p`` integrated over each step, ``w_n = int_{n-1}^{n} p``, so the
paper's integrals approximate the sums here, to a relative ``O(1/T)`` that is largest for
profiles started late or sampled early. Here the fit is on the sums themselves, over every
step, in chunks (a QR of the stacked chunks, which never squares the condition number as the
Gram matrix would). ``sigma_rel`` is the std of the continuous profile relative to its length:
``sigma_rel^2 = (g+1) / ((g+2)^2 (g+3))``, solved for ``g`` numerically.

Snapshots are fp32: the coefficients of nearby profiles are large and of both signs, so
fp16's rounding (5e-4) would come back amplified in the sum; at MNIST sizes (3 MB per
snapshot of ``model=small``) the disk is cheap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddpm.errors import UserError, fail, is_number, require

log = logging.getLogger("ddpm")

FOLDER = "ema_profiles"  # inside the run dir
# The largest sigma_rel: gamma = 0, a plain running mean; a smaller gamma would weigh the
# first steps most.
SIGMA_REL_MAX = math.sqrt(1 / 12)
RCOND = 1e-10  # singular values of the fit below this share of the largest are dropped
CHUNK = 1 << 16  # training steps per block of the least squares


def sigma_rel_of(gamma: float) -> float:
    """The relative std of the power profile of exponent ``gamma`` (EDM2 eq. 3)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def gamma_of(sigma_rel: float) -> float:
    """The exponent whose profile has relative std ``sigma_rel`` (bisection on gamma >= 0,
    where :func:`sigma_rel_of` falls monotonically from :data:`SIGMA_REL_MAX` to 0)."""
    require(
        is_number(sigma_rel) and 0 < sigma_rel <= SIGMA_REL_MAX,
        "sigma_rel",
        sigma_rel,
        f"a number in (0, {SIGMA_REL_MAX:.4f}]",
    )
    low, high = 0.0, 1.0
    while sigma_rel_of(high) > sigma_rel:
        low, high = high, 2 * high
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if sigma_rel_of(mid) > sigma_rel else (low, mid)
        if high - low <= 1e-14 * high:
            break
    return (low + high) / 2


def averaging_weights(gamma: float, start: int, step: int, steps: Tensor) -> Tensor:
    """The weight the power EMA started after step ``start`` gives, at step ``step``, to the
    weights after each of ``steps`` (float64; 0 outside ``start+1..step``)."""
    return _weights([(gamma, start, step)], steps.to(torch.float64))[:, 0]


def _weights(columns: Sequence[tuple[float, int, int]], steps: Tensor) -> Tensor:
    """:func:`averaging_weights` of each ``(gamma, start, step)`` as the columns of one
    matrix. ``w = (1 - beta_n) n^a / L^a`` with ``a = gamma + 1``: the first factor depends on
    the profile's exponent and start only, so it is computed once per pair and every
    snapshot of that pair is a rescaled copy (in logs: ``n^a`` overflows for long runs)."""
    out = torch.zeros(len(steps), len(columns), dtype=torch.float64)
    pairs: dict[tuple[float, int], list[int]] = {}
    for i, (gamma, start, step) in enumerate(columns):
        if step >= steps[0]:  # a profile that ended before these steps weighs them 0
            pairs.setdefault((gamma, start), []).append(i)
    for (gamma, start), index in pairs.items():
        n = (steps - start).clamp(min=1.0)
        a = gamma + 1
        # log(1 - beta_n) + a log n; 1 - beta_n = -expm1(a log(1 - 1/n)), exact at n = 1
        log_c = torch.log(-torch.expm1(a * torch.log1p(-1.0 / n))) + a * n.log()
        ends = torch.tensor([columns[i][2] for i in index], dtype=torch.float64)
        w = torch.exp(log_c[:, None] - a * (ends - start).log()[None, :])
        inside = (steps[:, None] > start) & (steps[:, None] <= ends[None, :])
        out[:, index] = torch.where(inside, w, 0.0)
    return out


def tracked(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """What the profiles average: the parameters and floating-point buffers, by state-dict
    name (integer buffers are counters, taken from the checkpoint as they are). ``names``:
    those found before, looked up again without building the state dict."""
    named = {k: t.detach() for k, t in [*model.named_parameters(), *model.named_buffers()]}
    if names is not None:
        return {k: named[k] for k in names}
    keys = set(model.state_dict())
    return {k: t for k, t in named.items() if k in keys and t.is_floating_point()}


class PowerEMA:
    """One power-function EMA of ``tensors`` (all on one device), for one ``sigma_rel``."""

    def __init__(self, sigma_rel: float, tensors: dict[str, Tensor], start: int = 0) -> None:
        """``start``: the training step before its first update (0 = from the first step)."""
        self.sigma_rel, self.gamma = float(sigma_rel), gamma_of(sigma_rel)
        self.names = list(tensors)
        self.average = [t.detach().clone() for t in tensors.values()]
        self.start, self.updates = start, 0

    @torch.no_grad()
    def update(self, current: Sequence[Tensor]) -> None:
        """One step: ``beta`` is computed on the host from the update count, so the step
        never reads the device back; the first update copies (``beta_1 = 0``)."""
        self.updates += 1
        beta = (1.0 - 1.0 / self.updates) ** (self.gamma + 1)
        torch._foreach_lerp_(self.average, list(current), 1.0 - beta)

    @property
    def step(self) -> int:
        return self.start + self.updates

    def weights(self) -> dict[str, Tensor]:
        """The average, by name, as fp32 CPU tensors (a snapshot's weights)."""
        return {
            k: v.detach().float().cpu().clone()
            for k, v in zip(self.names, self.average, strict=True)
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "sigma_rel": self.sigma_rel,
            "start": self.start,
            "updates": self.updates,
            "average": dict(zip(self.names, self.average, strict=True)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, tensor in zip(self.names, self.average, strict=True):
                tensor.copy_(state["average"][name])
        self.start, self.updates = int(state["start"]), int(state["updates"])

    def restart(self, start: int) -> None:
        """Begins afresh after step ``start`` (a profile switched on mid-run)."""
        self.start, self.updates = start, 0


def file_name(sigma_rel: float, step: int) -> str:
    return f"{sigma_rel:g}_{step:07d}.pt"


def save_snapshot(ema: PowerEMA, folder: Path) -> Path:
    """Writes ``<folder>/<sigma_rel>_<step>.pt``: the average and what its profile is."""
    from ddpm.runs import checkpoint

    state = {
        "sigma_rel": ema.sigma_rel,
        "gamma": ema.gamma,
        "start": ema.start,
        "step": ema.step,
        "weights": ema.weights(),
    }
    return checkpoint.save(state, folder / file_name(ema.sigma_rel, ema.step))


@dataclass
class Snapshot:
    """One stored profile: the power EMA of exponent ``gamma`` started after ``start``, as it
    was at ``step``."""

    gamma: float
    start: int
    step: int
    weights: dict[str, Tensor]
    sigma_rel: float = math.nan
    path: Path | None = None


def read_snapshots(folder: Path) -> list[Snapshot]:
    """Every snapshot in ``folder``, by step. The weights are memory-mapped: only the ones
    that count are read, one at a time."""
    snapshots = []
    for path in sorted(Path(folder).glob("*.pt")):
        try:
            s = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file: one line naming it
            raise UserError(f"{path}: not a readable post-hoc EMA snapshot ({err})") from None
        snapshots.append(
            Snapshot(
                float(s["gamma"]),
                int(s["start"]),
                int(s["step"]),
                s["weights"],
                float(s["sigma_rel"]),
                path,
            )
        )
    return sorted(snapshots, key=lambda s: (s.step, s.gamma))


def fit(
    profiles: Sequence[tuple[float, int, int]], target: tuple[float, int, int]
) -> tuple[Tensor, float]:
    """Least-squares coefficients ``x`` with ``sum_i x_i w_i ~ w_target`` over every training
    step, and the relative error of that fit, ``|sum x_i w_i - w_target| / |w_target|``.

    ``profiles`` and ``target`` are ``(gamma, start, step)``. The columns ``[w_1..w_N,
    w_target]`` are reduced chunk by chunk to one triangular factor (a QR of the factor so
    far stacked on the next chunk), so memory stays at a chunk of steps whatever the run's
    length; the small solve drops directions below :data:`RCOND` of the largest, where the
    snapshots hardly differ.
    """
    columns = [*profiles, target]
    first = min(start for _, start, _ in columns) + 1
    last = max(step for _, _, step in columns)
    factor = torch.zeros(0, len(columns), dtype=torch.float64)
    for low in range(first, last + 1, CHUNK):
        steps = torch.arange(low, min(low + CHUNK, last + 1), dtype=torch.float64)
        block = _weights(columns, steps)
        factor = torch.linalg.qr(torch.cat([factor, block]), mode="r").R
    n = len(profiles)
    r, y = factor[:n, :n], factor[:n, n]
    x = torch.linalg.lstsq(r, y.unsqueeze(1), rcond=RCOND, driver="gelsd").solution[:, 0]
    residual = torch.cat([r @ x - y, factor[n:, n]]).norm()
    return x, float(residual / factor[:, n].norm())


@dataclass
class Reconstruction:
    """What :func:`reconstruct` built and how well the snapshots could express it."""

    weights: dict[str, Tensor]
    sigma_rel: float
    step: int
    fit_error: float  # relative error of the fitted averaging profile
    snapshots: int


def reconstruct(
    snapshots: Iterable[Snapshot], sigma_rel: float, step: int | None = None
) -> Reconstruction:
    """The power EMA of ``sigma_rel`` at ``step`` (default: the last snapshot's) from the
    snapshots up to that step; the target starts where the earliest of them does."""
    gamma = gamma_of(sigma_rel)
    usable = [s for s in snapshots if step is None or s.step <= step]
    if not usable:
        raise UserError(f"no post-hoc EMA snapshot at or before step {step}")
    step = max(s.step for s in usable) if step is None else step
    start = min(s.start for s in usable)
    x, error = fit([(s.gamma, s.start, s.step) for s in usable], (gamma, start, step))
    total: dict[str, Tensor] = {}
    for coefficient, snapshot in zip(x.tolist(), usable, strict=True):
        for name, value in snapshot.weights.items():
            term = coefficient * value.to(torch.float64)
            total[name] = total[name] + term if name in total else term
    dtypes = {k: v.dtype for k, v in usable[-1].weights.items()}
    weights = {k: v.to(dtypes[k]) for k, v in total.items()}
    return Reconstruction(weights, float(sigma_rel), step, error, len(usable))


def require_snapshots(run_dir: Path, sigma_rel: float) -> Path:
    """``<run_dir>/ema_profiles`` when it holds snapshots, else the one-line error naming the
    ``posthoc_ema`` key and what the run needs."""
    folder = Path(run_dir) / FOLDER
    if not any(folder.glob("*.pt")):
        fail(
            "posthoc_ema",
            sigma_rel,
            f"{folder} holds no snapshots; the run must be trained with "
            "trainer.posthoc_ema_stds=[...] (e.g. [0.05,0.1]) to write them",
        )
    return folder


def reconstruct_run(run_dir: Path, sigma_rel: float, step: int | None = None) -> Reconstruction:
    """:func:`reconstruct` from ``<run_dir>/ema_profiles``; ``step`` past the last snapshot
    falls back to the last one (a run stopped between snapshots). Errors name the
    ``posthoc_ema`` key."""
    folder = require_snapshots(run_dir, sigma_rel)
    snapshots = read_snapshots(folder)
    if step is not None and step > snapshots[-1].step:
        log.info(
            "posthoc_ema: the checkpoint is at step %d, the last snapshot at %d: using that",
            step,
            snapshots[-1].step,
        )
        step = snapshots[-1].step
    if step is not None and step < snapshots[0].step:
        fail("posthoc_ema", sigma_rel, f"{folder} has no snapshot at or before step {step}")
    result = reconstruct(snapshots, sigma_rel, step)
    log.info(
        "posthoc_ema=%g: step %d rebuilt from %d snapshots (averaging profile off by %.2g)",
        sigma_rel,
        result.step,
        result.snapshots,
        result.fit_error,
    )
    if result.fit_error > 0.05:
        log.warning(
            "posthoc_ema=%g: the snapshots miss its averaging profile by %.0f%%; train "
            "with closer trainer.posthoc_ema_stds or a smaller trainer.posthoc_ema_every",
            sigma_rel,
            100 * result.fit_error,
        )
    return result


def clear_snapshots(run_dir: str | Path) -> int:
    """Removes the snapshots an earlier run left in ``run_dir`` (a fresh start there replaces
    that run, whose snapshots would otherwise mix into this one's rebuilds); how many."""
    stale = sorted((Path(run_dir) / FOLDER).glob("*.pt"))
    for path in stale:
        path.unlink()
    return len(stale)
