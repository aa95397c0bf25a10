"""DPM-Solver++(3M) (Lu et al. 2022): the multistep solver at third order."""

from __future__ import annotations

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.dpm_solver_pp import DPMSolverPPSampler


class DPMSolverPP3MSampler(DPMSolverPPSampler):
    """DPM-Solver++ with ``order=3``: the two previous x0 estimates give a second-difference
    term. Its own class (and yaml) so a config names it; the step is the 2M sampler's. On the
    log-SNR plan by default: at 20 calls it is within 2% on the Gaussian oracle, -24% on
    linspace."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        steps: int | None,
        spacing: str,
        plan: str | None,
        final_step: str,
        clip_x0: bool,
        dynamic_threshold: float | None,
        guidance_scale: float,
    ) -> None:
        super().__init__(
            schedule,
            steps=steps,
            spacing=spacing,
            plan=plan,
            order=3,
            final_step=final_step,
            clip_x0=clip_x0,
            dynamic_threshold=dynamic_threshold,
            guidance_scale=guidance_scale,
        )
