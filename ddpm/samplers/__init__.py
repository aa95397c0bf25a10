"""Reverse-process samplers; each file holds one, all share :class:`~ddpm.samplers.base.Sampler`."""

from ddpm.samplers.adaptive import AdaptiveODESampler
from ddpm.samplers.base import Sampler, spaced_timesteps
from ddpm.samplers.ddim import DDIMSampler
from ddpm.samplers.ddpm import AncestralSampler
from ddpm.samplers.dpm_solver_pp import DPMSolverPPSampler
from ddpm.samplers.dpm_solver_pp_3m import DPMSolverPP3MSampler
from ddpm.samplers.dpm_solver_pp_sde import DPMSolverPPSDESampler
from ddpm.samplers.euler import EulerSampler
from ddpm.samplers.heun import HeunSampler
from ddpm.samplers.midpoint import MidpointSampler
from ddpm.samplers.one_step import OneStepSampler

__all__ = [
    "AdaptiveODESampler",
    "AncestralSampler",
    "DDIMSampler",
    "DPMSolverPP3MSampler",
    "DPMSolverPPSDESampler",
    "DPMSolverPPSampler",
    "EulerSampler",
    "HeunSampler",
    "MidpointSampler",
    "OneStepSampler",
    "Sampler",
    "spaced_timesteps",
]
