"""Datasets as tensors in memory: the only module that knows file formats.

The whole training set is one float tensor in [-1, 1]; batches are index slices of it, so
there is no per-image Python work and no worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ddpm.errors import UserError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class ImageDataset:
    """Images scaled to [-1, 1], shape (N, C, H, W), with their integer labels."""

    images: Tensor
    labels: Tensor
    name: str

    def __len__(self) -> int:
        return len(self.images)


def to_model_range(pixels: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    return pixels.to(torch.float32).div(255.0).mul(2.0).sub(1.0)


def mnist(
    root: str | Path = "data",
    train: bool = True,
    download: bool = True,
    classes: Sequence[int] | None = None,
) -> ImageDataset:
    """MNIST through torchvision, read once into a tensor; downloads into ``root`` if missing.

    ``classes`` keeps only those digits (labels unchanged), e.g. a quick two-class model.
    """
    if classes is not None and (
        not classes
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 9 for c in classes)
    ):
        raise UserError(f"dataset.classes={list(classes)!r}: null or a non-empty list of 0..9")
    from torchvision.datasets import MNIST

    root = Path(root).expanduser()
    raw = root / "MNIST" / "raw"
    try:
        ds = MNIST(str(root), train=train, download=download)
    except Exception as err:  # torchvision raises RuntimeError/URLError/OSError offline
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"dataset.root={str(root)!r}: MNIST is missing or unreadable in {raw} ({reason}); "
            f"put {', '.join(MNIST_FILES)} there (uncompressed), or point dataset.root "
            f"(env DDPM_DATA_ROOT) at the folder that holds MNIST/raw"
        ) from None
    images, labels = ds.data, ds.targets.clone()
    if classes is not None:
        keep = torch.isin(labels, torch.tensor(list(classes)))
        images, labels = images[keep], labels[keep]
    return ImageDataset(images=to_model_range(images).unsqueeze(1), labels=labels, name="mnist")


def batch_stream(
    num_items: int, batch_size: int, seed: int, start_step: int = 0
) -> Iterator[tuple[int, Tensor]]:
    """Endless (epoch, indices) batches; epoch e's order is a permutation seeded by (seed, e).

    Each epoch's order depends only on (seed, epoch), so a stream can start at any step
    (``start_step`` batches already consumed) and continue exactly where another left off.
    The last batch of an epoch may be smaller.
    """
    per_epoch = math.ceil(num_items / batch_size)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(num_items, generator=gen)
        for idx in order.split(batch_size)[skip:]:
            yield epoch, idx
        epoch, skip = epoch + 1, 0
