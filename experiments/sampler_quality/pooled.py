"""FID of the two x_T sets (seeds 0 and 1000, 500 images each) pooled into 1000 images.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/sampler_quality/pooled.py
"""

from __future__ import annotations

import torch

from ddpm.evaluate.cache import load_evaluator
from ddpm.evaluate.metrics import evaluate_images

STORE = "/tmp/sampler_quality/ema"
TAGS = ("dpm_solver_pp_sde_spacing=logsnr_steps=50", "ddpm_spacing=linspace_steps=50")


def main() -> None:
    torch.set_num_threads(1)
    evaluator, reference = load_evaluator(None, "cpu", data_root="/work/shared/data")
    for tag in TAGS:
        parts = [torch.load(f"{STORE}/{tag}_n500_s{seed}.pt")["images"] for seed in (0, 1000)]
        images = torch.cat(parts).float() / 127.5 - 1.0
        m = evaluate_images(images, evaluator, reference, seed=0)
        print(f"{tag}: 1000 images, FID {m['fid']:.1f}, KID {m['kid']:.1f} +- {m['kid_std']:.1f}")


if __name__ == "__main__":
    main()
