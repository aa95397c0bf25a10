"""Reverse-process samplers; each file holds one, all share :class:`~ddpm.samplers.base.Sampler`."""

from ddpm.samplers.base import Sampler, spaced_timesteps
from ddpm.samplers.ddpm import AncestralSampler

__all__ = ["AncestralSampler", "Sampler", "spaced_timesteps"]
