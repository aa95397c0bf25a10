"""``sampler.plan=auto``: the plan fitted to the network that samples, found once and cached.

The first use on a set of weights runs the plan search (:mod:`ddpm.samplers.plan_search`, with
``python -m ddpm.plan``'s settings from ``conf/plan.yaml``: the same plan that command writes)
and saves it beside the run's other plans, ``<run>/plans/auto_<solver>_nfe<n>_<key>.json``;
every later use reads that file. The key hashes the weights, the solver's settings and the
search settings, so other weights, another sampler or call count fit anew.

The search fits a deterministic solver. A stochastic sampler (SDE-DPM-Solver++) runs on the
plan fitted for UniPC at its call count: on both checkpoints experiments/few_calls measured,
the SDE on UniPC's fitted 10-call plan beat it on every fixed plan and on iPNDM's fitted one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddpm.diffusion.plans import read_plan, write_plan
from ddpm.errors import UserError
from ddpm.samplers import plan_search as search
from ddpm.samplers.base import AUTO, Sampler

log = logging.getLogger("ddpm")
STOCHASTIC_PLAN_SOLVER = "unipc"  # whose fitted plan a stochastic sampler runs on (see above)
SEARCH_KEYS = ("num", "num_check", "reference_steps", "refine", "seed")


@dataclass
class Fit:
    """A fitted plan: increasing timesteps, RMS error per pixel of it and of every fixed plan
    on held-out x_T, and the search's seconds."""

    timesteps: list[int]
    errors: dict[str, float]
    seconds: float


def fit(
    model: nn.Module,
    sampler: Sampler,
    *,
    num: int,
    num_check: int,
    reference_steps: int,
    refine: int,
    seed: int,
    device: torch.device | str,
    progress: bool = False,
) -> Fit:
    """The plan of ``len(sampler.table)`` rows for ``sampler`` on ``model``: dynamic
    programming on a ``reference_steps``-row reference trajectory of ``num`` x_T, then
    ``refine`` passes of the solver's own coordinate descent; errors on ``num_check`` more."""
    schedule = sampler.to(device).schedule
    shape = (model.in_channels, model.image_size, model.image_size)
    gen = torch.Generator(device).manual_seed(seed)
    x_T = torch.randn((num + num_check, *shape), generator=gen, device=device)
    start = time.perf_counter()
    with tqdm(total=4, desc="plan search", disable=not progress, leave=False) as bar:
        teacher = search.reference_sampler(schedule, reference_steps, sampler)
        fitted_on = search.reference(model, teacher, x_T[:num])
        bar.update()
        held = search.reference(model, teacher, x_T[num:])
        bar.update()
        cost, end = search.jump_costs(fitted_on, schedule)
        path = search.best_path(cost, end, len(sampler.table))
        bar.update()
        path, _ = search.refine(model, sampler, fitted_on, path, refine)
        bar.update()
    timesteps = sorted(fitted_on.timesteps[k] for k in path)
    took = time.perf_counter() - start
    tried = {"fitted": timesteps, **search.fixed_plans(sampler, len(sampler.table))}
    errors = {
        name: search.plan_error(model, sampler.on_plan(rows), held.states[0], held.images)
        for name, rows in tried.items()
    }
    return Fit(timesteps, errors, took)


@functools.cache
def search_settings() -> dict[str, Any]:
    """``conf/plan.yaml``'s search keys: their one home, which ``ddpm.plan`` reads too."""
    from omegaconf import OmegaConf

    from ddpm.configs.presets import CONF_DIR

    node = OmegaConf.load(CONF_DIR / "plan.yaml")
    return {key: node[key] for key in SEARCH_KEYS}


def weights_digest(model: nn.Module) -> str:
    """A hash of the network's weights: the same checkpoint gives the same digest anywhere."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(_bytes(tensor))
    return h.hexdigest()


def _bytes(tensor: Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def plan_solver(sampler: Sampler) -> Sampler:
    """The deterministic solver whose plan ``sampler`` runs on: itself, or for a stochastic
    sampler UniPC with as many rows (:data:`STOCHASTIC_PLAN_SOLVER`)."""
    if sampler.nfe is None:
        raise UserError(
            "sampler.plan='auto': fits a plan for a fixed number of calls; the adaptive "
            "sampler chooses its own steps (drop sampler.plan)"
        )
    if not sampler.stochastic:
        return sampler
    from ddpm.configs.presets import preset

    return preset(
        "sampler", STOCHASTIC_PLAN_SOLVER, schedule=sampler.schedule, steps=len(sampler.table)
    )


def settings_of(sampler: Sampler) -> dict[str, Any]:
    """A sampler's plain settings (order, final_step, clip_x0, ...): part of the cache key."""
    plain = (bool, int, float, str, type(None))
    return {k: v for k, v in sorted(vars(sampler).items()) if isinstance(v, plain)}


def resolve(
    sampler: Sampler,
    model: nn.Module,
    plans_dir: Path,
    device: torch.device | str,
    progress: bool = True,
) -> Sampler:
    """``sampler`` on its fitted plan when ``sampler.plan=auto`` (fitted on first use and
    cached in ``plans_dir``), else ``sampler`` itself."""
    if sampler.plan_file != AUTO:
        return sampler
    solver = plan_solver(sampler)
    settings = dict(search_settings())
    settings["reference_steps"] = min(settings["reference_steps"], len(sampler.schedule))
    name = type(solver).__module__.rsplit(".", 1)[-1]
    identity = {
        "weights": weights_digest(model),
        "solver": [name, settings_of(solver)],
        "search": settings,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(plans_dir) / f"auto_{name}_nfe{solver.nfe:g}_{key}.json"
    if path.is_file():
        log.info("sampler.plan=auto: the plan fitted to these weights, %s", path)
        return sampler.on_plan(read_plan(path, sampler.schedule))
    log.info(
        "sampler.plan=auto: fitting a %g-call plan for %s to these weights (first use; "
        "ddpm.plan's search, conf/plan.yaml)",
        solver.nfe,
        name,
    )
    found = fit(model, solver, device=device, progress=progress, **settings)
    write_plan(
        path,
        sampler.schedule,
        found.timesteps,
        sampler=name,
        nfe=solver.nfe,
        rms_error=found.errors,
        settings=settings,
        seconds=found.seconds,
        identity=identity,
    )
    log.info(
        "sampler.plan=auto: timesteps %s in %.1f s (RMS error %.4f; best fixed plan %.4f) -> %s",
        found.timesteps[::-1],
        found.seconds,
        found.errors["fitted"],
        min(v for k, v in found.errors.items() if k != "fitted"),
        path,
    )
    return sampler.on_plan(found.timesteps)
