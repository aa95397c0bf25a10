"""``python experiments/metric_scale/measure.py``: what the metrics read for known image sets.

Real MNIST train digits (the floor a perfect generator reaches at that sample count), damaged
digits, one digit class only (mode collapse) and pure noise, each against the cached MNIST-test
reference. Prints a markdown table; the numbers in experiments/metric_scale/README.md come
from it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from ddpm.data import mnist
from ddpm.errors import UserError
from ddpm.evaluate.cache import load_evaluator
from ddpm.evaluate.metrics import evaluate_images

COLUMNS = ("fid", "kid", "precision", "recall", "class_entropy_norm", "confident_share")


def image_sets(train: Tensor, labels: Tensor, seed: int) -> dict[str, Callable[[int], Tensor]]:
    """Named makers of n images in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=gen)

    def digits(n: int) -> Tensor:
        return train[order[:n]]

    def noisy(n: int) -> Tensor:
        return (digits(n) + 0.3 * torch.randn(digits(n).shape, generator=gen)).clamp(-1, 1)

    def blurred(n: int) -> Tensor:
        return gaussian_blur(digits(n), [9, 9], [1.2, 1.2])

    def ones(n: int) -> Tensor:
        return train[labels == 1][:n]

    def noise(n: int) -> Tensor:
        return torch.randn(n, 1, 28, 28, generator=gen).clamp(-1, 1)

    return {
        "MNIST train digits": digits,
        "train digits + N(0, 0.3^2) noise": noisy,
        "train digits, Gaussian blur sigma 1.2": blurred,
        "train digits of class 1 only": ones,
        "pure noise N(0,1) clamped to [-1,1]": noise,
    }


def main(argv: list[str] | None = None) -> None:
    prog = "python experiments/metric_scale/measure.py"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--data-root", default=os.environ.get("DDPM_DATA_ROOT", "data"))
    parser.add_argument("--cache-dir", default=None, help="evaluator cache (default: the usual)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        evaluator, reference = load_evaluator(args.cache_dir, data_root=args.data_root)
        train = mnist(args.data_root, train=True, download=False)
    except UserError as err:
        sys.exit(f"error: {err}")
    print("| images | n | " + " | ".join(COLUMNS) + " | seconds |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for name, make in image_sets(train.images, train.labels, args.seed).items():
        for n in args.counts:
            images = make(n)
            start = time.perf_counter()
            out = evaluate_images(images, evaluator, reference, seed=args.seed)
            took = time.perf_counter() - start
            cells = " | ".join(f"{out[c]:.4g}" for c in COLUMNS)
            print(f"| {name} | {len(images)} | {cells} | {took:.1f} |", flush=True)


if __name__ == "__main__":
    main()
