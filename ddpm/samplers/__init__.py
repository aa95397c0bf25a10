"""Reverse-process samplers; each file holds one, all share :class:`~ddpm.samplers.base.Sampler`."""

from ddpm.samplers.base import Sampler, spaced_timesteps
from ddpm.samplers.ddim import DDIMSampler
from ddpm.samplers.ddpm import AncestralSampler
from ddpm.samplers.dpm_solver_pp import DPMSolverPPSampler

__all__ = ["AncestralSampler", "DDIMSampler", "DPMSolverPPSampler", "Sampler", "spaced_timesteps"]
