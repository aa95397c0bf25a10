"""Per-call cost of the default against the ancestral step, timed back to back in one process.

1000-step ancestral sampling is 20x the calls of 50-step ancestral, so the default's cost ratio
against it is 20 x (ancestral-50 time / default time); interleaving the two cancels most of the
shared CPU's load changes.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/sampler_quality/speed.py
"""

from __future__ import annotations

import time

import torch
from measure import build

from ddpm.configs.presets import preset


def main() -> None:
    torch.set_num_threads(1)
    model, schedule = build("ema")
    samplers = {
        "ancestral-50": preset("sampler", "ddpm", schedule=schedule, steps=50),
        "default (dpm_solver_pp_sde 50 logsnr)": preset(
            "sampler", "dpm_solver_pp_sde", schedule=schedule
        ),
    }
    seconds = dict.fromkeys(samplers, 0.0)
    with torch.no_grad():
        for rep in range(3):
            for name, sampler in samplers.items():
                gen = torch.Generator().manual_seed(rep)
                start = time.perf_counter()
                sampler.sample(model, (100, 1, 28, 28), generator=gen)
                seconds[name] += time.perf_counter() - start
    for name, s in seconds.items():
        print(f"{name}: {300 / s:.2f} images/s")
    ratio = 20 * seconds["ancestral-50"] / seconds["default (dpm_solver_pp_sde 50 logsnr)"]
    print(f"1000-step ancestral costs {ratio:.1f}x the default")


if __name__ == "__main__":
    main()
