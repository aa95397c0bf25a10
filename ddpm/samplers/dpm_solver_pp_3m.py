"""DPM-Solver++(3M) (Lu et al. 2022): the multistep solver at third order."""

from __future__ import annotations

from typing import Unpack

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import SamplerOptions
from ddpm.samplers.dpm_solver_pp import DPMSolverPPSampler


class DPMSolverPP3MSampler(DPMSolverPPSampler):
    """DPM-Solver++ with ``order=3``: the two previous x0 estimates give a second-difference
    term. Its own class (and yaml) so a config names it; the step is the 2M sampler's. On the
    log-SNR plan by default: at 20 calls it is within 2% on the Gaussian oracle, -24% on
    linspace."""

    def __init__(
        self, schedule: NoiseSchedule, *, final_step: str, **options: Unpack[SamplerOptions]
    ) -> None:
        super().__init__(schedule, order=3, final_step=final_step, **options)
