"""What every dataset shares: the tensor it loads into, the memory bound, the batch order."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm.errors import fail, is_int, is_number, plain, require


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


def check_memory(count: int, shape: Sequence[int], max_gib: float, where: str) -> None:
    """Refuses a split whose float32 tensor (count x C x H x W x 4 bytes) exceeds ``max_gib``:
    the data is held whole on the training device, so say so before allocating it."""
    need = count * math.prod(shape) * 4 / 2**30
    if need > max_gib:
        size = "x".join(map(str, shape))
        fail(
            "dataset.max_gib",
            max_gib,
            f"{where} holds {count} images of {size}, {need:.2f} GiB as float32, more than the "
            "bound; raise dataset.max_gib, lower dataset.image_size, or use fewer images",
        )


def check_common(max_gib: object) -> float:
    """The key every dataset shares: the memory bound in GiB."""
    require(is_number(max_gib) and max_gib > 0, "dataset.max_gib", max_gib, "a number > 0 (GiB)")
    return float(max_gib)


def check_ten_classes(classes: object, word: str, native: int, image_size: object) -> object:
    """The keys the 10-class image sets share: a subset of the classes, and a size at least
    the images' own (``native``; larger sizes pad). Returns ``classes`` as a plain list."""
    classes = plain(classes)
    require(
        classes is None
        or (isinstance(classes, list) and len(classes) > 0)
        and all(is_int(c, 0) and c <= 9 for c in classes),
        "dataset.classes",
        classes,
        f"null or a non-empty list of {word} 0..9",
    )
    require(
        is_int(image_size, native) and image_size % 2 == 0,
        "dataset.image_size",
        image_size,
        f"an even integer >= {native} (the images are {native}x{native}; larger sizes pad "
        f"with {'black' if native == 32 else 'background'})",
    )
    return classes


def load_dataset(node: object, **overrides: object) -> ImageDataset:
    """Builds a ``dataset`` config node and reads it (old configs build the data directly);
    a bad value or missing file is the dataset's own one-line error, not Hydra's report."""
    from ddpm.configs.presets import build

    built = build(node, **overrides)
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
