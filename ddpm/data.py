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

from ddpm.errors import UserError, is_int, plain, require

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


class Mnist:
    """MNIST through torchvision: what the ``dataset`` group builds.

    The constructor checks the settings (cheap, so a bad config fails before anything is
    read or created); :meth:`load` reads the split once into a tensor, downloading into
    ``root`` when the files are missing and ``download`` is true. ``classes`` keeps only
    those digits (labels unchanged), e.g. a quick two-class model.
    """

    channels, image_size, num_classes = 1, 28, 10

    def __init__(
        self,
        root: str | Path = "data",
        train: bool = True,
        download: bool = True,
        classes: Sequence[int] | None = None,
    ) -> None:
        classes = plain(classes)
        require(
            classes is None
            or (isinstance(classes, list) and len(classes) > 0)
            and all(is_int(c, 0) and c <= 9 for c in classes),
            "dataset.classes",
            classes,
            "null or a non-empty list of digits 0..9",
        )
        self.root, self.train, self.download = Path(root).expanduser(), train, download
        self.classes = classes

    def load(self) -> ImageDataset:
        from torchvision.datasets import MNIST

        raw = self.root / "MNIST" / "raw"
        created = [p for p in (self.root, raw.parent, raw) if not p.exists()]
        try:
            ds = MNIST(str(self.root), train=self.train, download=self.download)
        except Exception as err:  # torchvision raises RuntimeError/URLError/OSError offline
            for folder in reversed(created):  # leave no empty data/MNIST/raw behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"dataset.root={str(self.root)!r}: MNIST is missing or unreadable in {raw} "
                f"({reason}); put {', '.join(MNIST_FILES)} there (uncompressed), or point "
                "dataset.root (env DDPM_DATA_ROOT) at the folder that holds MNIST/raw"
            ) from None
        images, labels = ds.data, ds.targets.clone()
        if self.classes is not None:
            keep = torch.isin(labels, torch.tensor(self.classes))
            images, labels = images[keep], labels[keep]
        return ImageDataset(to_model_range(images).unsqueeze(1), labels, "mnist")


def mnist(
    root: str | Path = "data",
    train: bool = True,
    download: bool = True,
    classes: Sequence[int] | None = None,
) -> ImageDataset:
    """MNIST as one tensor (what checkpoints written before :class:`Mnist` name)."""
    return Mnist(root, train, download, classes).load()


def load_dataset(node: object, **overrides: object) -> ImageDataset:
    """Builds a ``dataset`` config node and reads it (old configs build the data directly)."""
    from hydra.utils import instantiate

    built = instantiate(node, **overrides)
    return built.load() if hasattr(built, "load") else built


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
