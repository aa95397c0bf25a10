"""A folder of your own images: ``root/<class>/*.png|jpg`` (labelled) or ``root/*.png|jpg``.

Each image is decoded with PIL, converted to RGB or grey (``channels``), resized so its
shorter side is ``image_size`` and centre-cropped to a square (torchvision's functional
transforms), then the whole folder is one tensor in [-1, 1]. There is no split: training and
the commands that read a test split (denoise, the evaluator's reference) use the same images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddpm.data.base import ImageDataset, check_common, check_memory, to_model_range
from ddpm.errors import UserError, fail, is_int, require

EXTENSIONS = (".png", ".jpg", ".jpeg")


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted (hidden files left out)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
    )


class ImageFolder:
    """Images from ``root``: what ``dataset=image_folder`` builds.

    Layout: class folders (``root/cat/1.png``, ``root/dog/7.jpg``; labels are the sorted
    folder names' indices) or a flat folder (no labels: every label 0, ``num_classes`` null).
    ``num_classes``, when set, must equal the number of class folders (conditional models
    read it). ``resize`` false takes the files as they are: each must already be
    ``image_size`` x ``image_size``.
    """

    name = "image_folder"
    channels, image_size, num_classes = 3, 32, None

    def __init__(
        self,
        *,
        root: str | Path | None,
        train: bool,
        channels: int,
        image_size: int,
        num_classes: int | None,
        resize: bool,
        max_gib: float,
    ) -> None:
        require(
            root is not None and str(root) != "",
            "dataset.root",
            root,
            "the folder of images (dataset.root=DIR)",
        )
        require(channels in (1, 3), "dataset.channels", channels, "3 (RGB) or 1 (grey)")
        require(is_int(image_size, 4), "dataset.image_size", image_size, "an integer >= 4")
        require(
            num_classes is None or is_int(num_classes, 1),
            "dataset.num_classes",
            num_classes,
            "null (no labels used) or the number of class folders",
        )
        require(isinstance(resize, bool), "dataset.resize", resize, "true or false")
        self.max_gib = check_common(max_gib)
        self.root, self.train = Path(str(root)).expanduser(), train
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.resize = resize

    def files(self) -> tuple[list[Path], list[int], list[str]]:
        """Every image file, its label and the class names ([] for a flat folder)."""
        root = self.root
        require(root.is_dir(), "dataset.root", str(root), "no such folder")
        flat = images_in(root)
        classes = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        classes = [c for c in classes if images_in(root / c)]
        if flat and classes:
            shown = f"{', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}"
            fail(
                "dataset.root",
                str(root),
                f"holds both images and class folders ({shown}); use one layout",
            )
        require(
            bool(flat or classes),
            "dataset.root",
            str(root),
            f"no images ({', '.join(EXTENSIONS)}) in it or in its sub-folders",
        )
        if flat:
            require(
                self.num_classes is None,
                "dataset.num_classes",
                self.num_classes,
                f"{root} is a flat folder (no class folders, no labels); use null",
            )
            return flat, [0] * len(flat), []
        require(
            self.num_classes is None or self.num_classes == len(classes),
            "dataset.num_classes",
            self.num_classes,
            f"{root} has {len(classes)} class folders ({', '.join(classes)})",
        )
        files, labels = [], []
        for index, name in enumerate(classes):
            found = images_in(root / name)
            files += found
            labels += [index] * len(found)
        return files, labels, classes

    def _read(self, path: Path) -> torch.Tensor:
        """One image as uint8 (C, S, S)."""
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            message = f"dataset file {str(path)!r}: not a readable image ({reason})"
            raise UserError(message) from None
        size = self.image_size
        if self.resize:
            img = center_crop(resize(img, size), [size, size])
        elif img.size != (size, size):
            raise UserError(
                f"dataset file {str(path)!r}: {img.size[0]}x{img.size[1]}, not "
                f"{size}x{size} (dataset.resize=false takes images as they are; mixed sizes "
                "need dataset.resize=true)"
            )
        return pil_to_tensor(img)

    def load(self) -> ImageDataset:
        files, labels, _ = self.files()
        shape = (self.channels, self.image_size, self.image_size)
        check_memory(len(files), shape, self.max_gib, str(self.root))
        pixels = torch.empty((len(files), *shape), dtype=torch.uint8)
        for i, path in enumerate(files):
            pixels[i] = self._read(path)
        return ImageDataset(to_model_range(pixels), torch.tensor(labels), self.name)
