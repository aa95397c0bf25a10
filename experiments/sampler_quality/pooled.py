"""FID of the two x_T sets (seeds 0 and 1000) pooled: 500 + 500 images, and the paired 700
(500 + the first 200 of seed 1000, all the 1000-step baseline has).

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/sampler_quality/pooled.py
"""

from __future__ import annotations

import torch

from ddpm.evaluate.cache import load_evaluator
from ddpm.evaluate.metrics import evaluate_images

STORE = "/tmp/sampler_quality/ema"
TAGS = ("dpm_solver_pp_sde_spacing=logsnr_steps=50", "ddpm_spacing=linspace_steps=50")
BASELINE = "ddpm_steps=None"


def main() -> None:
    torch.set_num_threads(1)
    evaluator, reference = load_evaluator(None, "cpu", data_root="/work/shared/data")

    def report(tag: str, parts: list[torch.Tensor]) -> None:
        images = torch.cat(parts).float() / 127.5 - 1.0
        m = evaluate_images(images, evaluator, reference, seed=0)
        print(
            f"{tag}: {len(images)} images, FID {m['fid']:.1f}, "
            f"KID {m['kid']:.1f} +- {m['kid_std']:.1f}"
        )

    def load(tag: str, count: int, seed: int) -> torch.Tensor:
        return torch.load(f"{STORE}/{tag}_n{count}_s{seed}.pt")["images"]

    for tag in TAGS:
        report(tag, [load(tag, 500, 0), load(tag, 500, 1000)])
    for tag in (BASELINE, *TAGS):
        report(tag, [load(tag, 500, 0), load(tag, 200 if tag == BASELINE else 500, 1000)[:200]])


if __name__ == "__main__":
    main()
