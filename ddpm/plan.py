"""``python -m ddpm.plan run_dir=<run> nfe=5 sampler=ipndm``: fit a timestep plan to a run.

Searches where a deterministic solver should call the network when it may call it ``nfe`` times
(:mod:`ddpm.samplers.plan_search`: dynamic programming on a fine reference trajectory, then the
solver's own coordinate descent), writes the plan to ``<run>/plans/<sampler>_nfe<nfe>.json``
(or ``out``) and prints its error against every fixed spacing, on x_T the search never saw.
Use it with any command that samples: ``sampler=ipndm sampler.plan=<that file>``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddpm.configs.presets import build
from ddpm.diffusion.plans import write_plan
from ddpm.errors import fail, is_int, require
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.runs.load import load_for_sampling, output_dir
from ddpm.samplers import auto_plan
from ddpm.samplers.base import Sampler

log = logging.getLogger("ddpm")


def rows_for(cfg: DictConfig, schedule: Any, nfe: int, name: str) -> Sampler:
    """The chosen solver on as many rows as make exactly ``nfe`` network calls."""
    for rows in range(1, nfe + 1):
        sampler = build(cfg.sampler, schedule=schedule, steps=rows, plan=None)
        if sampler.nfe == nfe:
            return sampler
    fail("nfe", nfe, f"sampler={name} cannot make exactly {nfe} network calls")


def plan(cfg: DictConfig, name: str = "sampler") -> dict[str, Any]:
    """Fits, saves and reports the plan; returns what it printed."""
    require(
        is_int(cfg.reference_steps, 2), "reference_steps", cfg.reference_steps, "an integer >= 2"
    )
    steps = cfg.reference_steps
    ok = is_int(cfg.nfe, 1) and cfg.nfe <= steps
    require(ok, "nfe", cfg.nfe, f"an integer in 1..reference_steps={steps}")
    for key in ("num", "num_check"):
        require(is_int(cfg[key], 1), key, cfg[key], "an integer >= 1")
    require(is_int(cfg.refine, 0), "refine", cfg.refine, "an integer >= 0 (passes)")
    for key in ("steps", "plan"):  # nfe sets the rows; the plan is what this command finds
        if key in cfg.sampler:
            cfg.sampler[key] = None
    job = load_for_sampling(cfg)
    if job.sampler.stochastic or job.sampler.nfe is None:
        fail(
            "sampler",
            name,
            "stochastic or adaptive; a plan is fitted to a deterministic solver (ddim with "
            "eta=0, dpm_solver_pp, dpm_solver_pp_3m, ipndm, unipc, euler, midpoint, heun "
            "with churn=0)",
        )
    require(steps <= len(job.schedule), "reference_steps", steps, f"at most {len(job.schedule)}")
    sampler = rows_for(cfg, job.schedule, cfg.nfe, name).to(job.device)
    # <run>/plans/<sampler>_nfe<n>[_<checkpoint stem>].json, or ``out``
    default = output_dir(
        None, cfg.run_dir, job.checkpoint, "plans", job.tagged(f"{name}_nfe{cfg.nfe}")
    )
    out = Path(cfg.out).expanduser() if cfg.out else default.with_name(default.name + ".json")

    found = auto_plan.fit(
        job.model,
        sampler,
        num=cfg.num,
        num_check=cfg.num_check,
        reference_steps=steps,
        refine=cfg.refine,
        seed=cfg.seed,
        device=job.device,
        progress=True,
    )
    timesteps, errors, took = found.timesteps, found.errors, found.seconds
    about = {
        "sampler": name,
        "nfe": cfg.nfe,
        "rms_error": errors,  # per pixel, against the reference images, held-out x_T
        "checkpoint": str(job.checkpoint),
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "seconds": took,
    }
    write_plan(out, job.schedule, timesteps, **about)
    log.info("plan for %s at %d calls: timesteps %s -> %s", name, cfg.nfe, timesteps[::-1], out)
    log.info(
        "RMS error per pixel against %d-row DPM-Solver++(2M), %d held-out x_T:",
        steps,
        cfg.num_check,
    )
    for key, value in sorted(errors.items(), key=lambda kv: kv[1]):
        log.info("  %-10s %.4f", key, value)
    log.info("searched in %.1f s", took)
    return {"out": str(out), "timesteps": timesteps, **about}


def main(cfg: DictConfig) -> None:
    plan(cfg, sampler_choice())


cli = hydra_command("ddpm-plan", __doc__, "plan", main)

if __name__ == "__main__":
    cli()
