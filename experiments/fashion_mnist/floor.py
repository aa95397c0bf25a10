"""The Fashion-MNIST evaluator's scale at 1000 images: real train images (the floor a model
can reach) and pure noise, against the cached Fashion-MNIST-test reference.

    DDPM_DATA_ROOT=DIR python experiments/fashion_mnist/floor.py
"""

from __future__ import annotations

import os

import torch

from ddpm.configs.presets import preset
from ddpm.evaluate.cache import load_evaluator
from ddpm.evaluate.metrics import evaluate_images


def main() -> None:
    evaluator, reference = load_evaluator(build_missing=False, dataset="fashion_mnist")
    train = preset(
        "dataset", "fashion_mnist", root=os.environ.get("DDPM_DATA_ROOT", "data"), download=False
    ).load()
    gen = torch.Generator().manual_seed(0)
    real = train.images[torch.randperm(len(train), generator=gen)[:1000]]
    noise = torch.randn(1000, 1, 28, 28, generator=gen).clamp(-1, 1)
    for name, images in (("real train images", real), ("noise N(0,1) clamped", noise)):
        m = evaluate_images(images, evaluator, reference, seed=0)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if "share_" not in k)
        print(f"{name}: {shown}")


if __name__ == "__main__":
    main()
