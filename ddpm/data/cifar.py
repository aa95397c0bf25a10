"""CIFAR-10: 32x32 colour images in ten classes, read through torchvision.

torchvision's layout: ``<root>/cifar-10-batches-py/`` holding ``data_batch_1`` ..
``data_batch_5``, ``test_batch`` and ``batches.meta`` (the python pickles of the official
``cifar-10-python.tar.gz``). Downloaded there when missing and ``download`` is true.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm.data.base import (
    ImageDataset,
    check_common,
    check_memory,
    check_ten_classes,
    to_model_range,
)
from ddpm.errors import UserError, fail, require

FOLDER = "cifar-10-batches-py"
FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
FILES += ("test_batch", "batches.meta")


def _torchvision_cifar10(checksums: bool) -> type:
    """torchvision's CIFAR10, or (``checksums`` false) the same reader that only checks the
    files exist, for files written elsewhere than the official archive (tests, re-packs)."""
    from torchvision.datasets import CIFAR10

    if checksums:
        return CIFAR10

    class Unchecked(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return Unchecked


class Cifar10:
    """CIFAR-10 (50k train, 10k test): what ``dataset=cifar10`` builds.

    ``channels`` 3 or 1 (1: the ITU-R 601 luma of each image, for grey models);
    ``image_size`` 32, or larger to pad with black on every side. ``checksums`` checks each
    file's MD5 against the official archive's (false: any file in the format loads).
    ``classes`` keeps only those classes (labels unchanged): 0 airplane, 1 automobile,
    2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck.
    """

    name = "cifar10"
    channels, image_size, num_classes = 3, 32, 10

    def __init__(
        self,
        *,
        root: str | Path,
        train: bool,
        download: bool,
        classes: list[int] | None,
        channels: int,
        image_size: int,
        num_classes: int,
        checksums: bool,
        max_gib: float,
    ) -> None:
        classes = check_ten_classes(classes, "classes", 32, image_size)
        require(channels in (1, 3), "dataset.channels", channels, "3 (RGB) or 1 (grey)")
        require(num_classes == 10, "dataset.num_classes", num_classes, "10 (cifar10)")
        require(isinstance(checksums, bool), "dataset.checksums", checksums, "true or false")
        self.max_gib = check_common(max_gib)
        self.root, self.train, self.download = Path(root).expanduser(), train, download
        self.classes, self.channels, self.image_size = classes, channels, image_size
        self.checksums = checksums

    def load(self) -> ImageDataset:
        folder = self.root / FOLDER
        existed = self.root.exists()
        try:
            ds = _torchvision_cifar10(self.checksums)(
                str(self.root), train=self.train, download=self.download
            )
        except Exception as err:  # noqa: BLE001 - offline download, bad pickle, md5: one line
            if not existed and self.root.is_dir() and not any(self.root.iterdir()):
                self.root.rmdir()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            fail(
                "dataset.root",
                str(self.root),
                f"CIFAR-10 is missing or unreadable in {folder} ({reason}); unpack "
                f"cifar-10-python.tar.gz there ({', '.join(FILES)}), or point dataset.root "
                f"(env DDPM_DATA_ROOT) at the folder that holds {FOLDER}",
            )
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
        labels = torch.tensor(ds.targets, dtype=torch.long)
        if len(labels) != len(images) or (len(labels) and int(labels.max()) > 9):
            raise UserError(f"dataset file in {folder}: labels do not match the images (0..9)")
        if self.classes is not None:
            keep = torch.isin(labels, torch.tensor(self.classes))
            images, labels = images[keep], labels[keep]
        size = self.image_size
        check_memory(len(images), (self.channels, size, size), self.max_gib, str(folder))
        x = to_model_range(images)
        if self.channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x * weights).sum(1, keepdim=True)
        if size > 32:
            pad = (size - 32) // 2
            x = F.pad(x, (pad, pad, pad, pad), value=-1.0)
        return ImageDataset(x.contiguous(), labels, self.name)
