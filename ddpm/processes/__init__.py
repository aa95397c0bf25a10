"""Noise processes (the ``process`` config group): DDPM, flow matching, EDM and MeanFlow side
by side.

A process says how data is noised, how training draws noise levels, what the network is given
and what it regresses on; every process shows the samplers the same view of itself (a
variance-preserving table, :attr:`~ddpm.processes.base.Process.grid`), so every sampler, plan
and metric runs on every process.
"""

from ddpm.processes.base import ContinuousProcess, Process
from ddpm.processes.ddpm import DDPMProcess
from ddpm.processes.edm import EDMProcess
from ddpm.processes.flow import FlowProcess
from ddpm.processes.meanflow import MeanFlowProcess

__all__ = [
    "ContinuousProcess",
    "DDPMProcess",
    "EDMProcess",
    "FlowProcess",
    "MeanFlowProcess",
    "Process",
]
