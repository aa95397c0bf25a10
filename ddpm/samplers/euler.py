"""Euler's method on the probability-flow ODE (Song et al. 2021; Karras et al. 2022, Alg. 1).

In y = x/alpha and sigma = sigma_t/alpha_t the ODE of every process is dy/dsigma = eps_hat
= (y - x0_hat)/sigma, and an Euler step there is exactly DDIM with eta = 0 (on the flow process
it is Euler in t on dx/dt = v_hat; on EDM, Euler in sigma). So this is that sampler under the
name the ODE literature uses, with no noise to set.
"""

from __future__ import annotations

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.ddim import DDIMSampler


class EulerSampler(DDIMSampler):
    """First-order, one network call per step, deterministic (DDIM's step with eta = 0)."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        steps: int | None,
        spacing: str,
        plan: str | None,
        clip_x0: bool,
        dynamic_threshold: float | None,
        guidance_scale: float,
    ) -> None:
        super().__init__(
            schedule,
            steps=steps,
            spacing=spacing,
            plan=plan,
            eta=0.0,
            clip_x0=clip_x0,
            dynamic_threshold=dynamic_threshold,
            guidance_scale=guidance_scale,
        )
