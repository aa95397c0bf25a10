"""Reverse-process samplers; each file holds one, all share :class:`~ddpm.samplers.base.Sampler`."""

from ddpm.samplers.base import Sampler, spaced_timesteps
from ddpm.samplers.ddim import DDIMSampler
from ddpm.samplers.ddpm import AncestralSampler
from ddpm.samplers.dpm_solver_pp import DPMSolverPPSampler
from ddpm.samplers.dpm_solver_pp_3m import DPMSolverPP3MSampler
from ddpm.samplers.dpm_solver_pp_sde import DPMSolverPPSDESampler
from ddpm.samplers.heun import HeunSampler

__all__ = [
    "AncestralSampler",
    "DDIMSampler",
    "DPMSolverPP3MSampler",
    "DPMSolverPPSDESampler",
    "DPMSolverPPSampler",
    "HeunSampler",
    "Sampler",
    "spaced_timesteps",
]
