"""MNIST and Fashion-MNIST: 28x28 grey images in IDX files, read through torchvision.

Both live in torchvision's layout, ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``,
as the four original files, uncompressed or gzipped (``.gz``: unpacked there on first use,
which is how Debian's ``dataset-fashion-mnist`` ships them).
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm.configs.presets import preset
from ddpm.data.base import (
    ImageDataset,
    check_common,
    check_memory,
    check_ten_classes,
    to_model_range,
)
from ddpm.errors import UserError, fail, require

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


class Mnist:
    """MNIST through torchvision: what ``dataset=mnist`` builds.

    The constructor checks the settings (cheap, so a bad config fails before anything is
    read or created); :meth:`load` reads the split once into a tensor, downloading into
    ``root`` when the files are missing and ``download`` is true. ``classes`` keeps only
    those classes (labels unchanged), e.g. a quick two-class model. ``image_size`` above 28
    pads each image with background on every side (32: the usual 2 pixels), so a net built
    for 32x32 trains on it unchanged; ``channels`` and ``num_classes`` are what the files
    hold (1, 10) and are keys so the model can follow them.
    """

    name, folder, torchvision_class = "mnist", "MNIST", "MNIST"
    channels, image_size, num_classes = 1, 28, 10
    hint, class_word = "", "digits"

    def __init__(
        self,
        *,
        root: str | Path,
        train: bool,
        download: bool,
        classes: Sequence[int] | None,
        channels: int,
        image_size: int,
        num_classes: int,
        max_gib: float,
    ) -> None:
        classes = check_ten_classes(classes, self.class_word, 28, image_size)
        require(channels == 1, "dataset.channels", channels, f"1 ({self.name} is grey)")
        require(num_classes == 10, "dataset.num_classes", num_classes, f"10 ({self.name})")
        self.max_gib = check_common(max_gib)
        self.root, self.train, self.download = Path(root).expanduser(), train, download
        self.classes, self.image_size = classes, image_size

    @property
    def raw(self) -> Path:
        return self.root / self.folder / "raw"

    def _unpack_gzipped(self) -> None:
        """Unpacks ``<file>.gz`` beside a missing ``<file>`` (local, no network)."""
        for name in MNIST_FILES:
            plain_file, packed = self.raw / name, self.raw / f"{name}.gz"
            if not plain_file.is_file() and packed.is_file():
                tmp = plain_file.with_suffix(".part")
                try:
                    with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (OSError, EOFError) as err:
                    tmp.unlink(missing_ok=True)
                    message = f"dataset file {str(packed)!r}: cannot unpack ({err})"
                    raise UserError(message) from None
                tmp.replace(plain_file)

    def load(self) -> ImageDataset:
        import torchvision.datasets

        created = [p for p in (self.root, self.raw.parent, self.raw) if not p.exists()]
        try:
            if self.raw.is_dir():
                self._unpack_gzipped()
            cls = getattr(torchvision.datasets, self.torchvision_class)
            ds = cls(str(self.root), train=self.train, download=self.download)
        except UserError:
            raise
        except Exception as err:  # torchvision raises RuntimeError/URLError/OSError offline
            for folder in reversed(created):  # leave no empty data/MNIST/raw behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            fail(
                "dataset.root",
                str(self.root),
                f"{self.folder} is missing or unreadable in {self.raw} ({reason}); put "
                f"{', '.join(MNIST_FILES)} there (uncompressed or .gz){self.hint}, or point "
                f"dataset.root (env DDPM_DATA_ROOT) at the folder that holds {self.folder}/raw",
            )
        images, labels = ds.data, ds.targets.clone()
        if self.classes is not None:
            keep = torch.isin(labels, torch.tensor(self.classes))
            images, labels = images[keep], labels[keep]
        size = self.image_size
        check_memory(len(images), (1, size, size), self.max_gib, str(self.raw))
        x = to_model_range(images).unsqueeze(1)
        if size > 28:
            pad = (size - 28) // 2
            x = F.pad(x, (pad, pad, pad, pad), value=-1.0)
        return ImageDataset(x, labels, self.name)


class FashionMnist(Mnist):
    """Fashion-MNIST (Zalando): ten kinds of clothing, 28x28 grey, MNIST's file format and
    split sizes (60k train, 10k test). Labels: 0 T-shirt/top, 1 trouser, 2 pullover,
    3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot."""

    name, folder, torchvision_class = "fashion_mnist", "FashionMNIST", "FashionMNIST"
    class_word = "classes"
    hint = (
        f" (Debian: apt-get install dataset-fashion-mnist puts the .gz files in "
        f"{FASHION_DEBIAN}; link or copy them into that folder)"
    )


def mnist(
    root: str | Path = "data",
    train: bool = True,
    download: bool = True,
    classes: Sequence[int] | None = None,
) -> ImageDataset:
    """MNIST as one tensor (what checkpoints written before :class:`Mnist` name)."""
    return preset(
        "dataset", "mnist", root=root, train=train, download=download, classes=classes
    ).load()
