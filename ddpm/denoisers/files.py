"""A user's own image files in and out of the model's range: what ``ddpm.denoise input=...``
reads and writes.

Every file is read and checked before anything is written: an unreadable file, an empty
folder, or (``resize=false``) an image of another size than the model's is one ``UserError``.
Images are converted to the run's channels (grey or RGB), resized to the model's square size
(bilinear; ``resize=true``) and, after denoising, back to their own size and mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ddpm.data.folder import EXTENSIONS, images_in
from ddpm.errors import fail, require


@dataclass
class Picture:
    """One input file: where it came from, its own size and mode, and the model's view of it."""

    path: Path
    size: tuple[int, int]  # (width, height), as PIL says
    mode: str  # the file's PIL mode ("L", "RGB", ...)
    image: Tensor  # (C, S, S) in [-1, 1] at the model's size S


def input_files(path: str | Path) -> list[Path]:
    """The image file, or the images in the folder (sorted; not its sub-folders)."""
    p = Path(path).expanduser()
    require(p.exists(), "input", str(path), "no such file or folder")
    if p.is_file():
        return [p]
    found = images_in(p)
    require(bool(found), "input", str(path), f"a folder with no images ({', '.join(EXTENSIONS)})")
    return found


def read_pictures(path: str | Path, channels: int, size: int, resize: bool) -> list[Picture]:
    """Every image under ``path`` in the model's channels and size (see the module)."""
    pictures = []
    for file in input_files(path):
        try:
            with Image.open(file) as opened:
                opened.load()
                original = opened.copy()
        except (UnidentifiedImageError, OSError) as err:
            fail("input", str(file), f"not a readable image ({type(err).__name__})")
        pixels = original.convert("L" if channels == 1 else "RGB")
        if pixels.size != (size, size):
            require(
                resize,
                "resize",
                False,
                f"{file.name} is {pixels.size[0]}x{pixels.size[1]}, the model takes {size}x{size}"
                " (resize=true resizes to it and back)",
            )
        array = np.asarray(pixels, dtype=np.float32).reshape(pixels.size[1], pixels.size[0], -1)
        image = torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0
        if image.shape[1:] != (size, size):
            image = F.interpolate(image[None], size=(size, size), mode="bilinear")[0]
        pictures.append(Picture(file, original.size, original.mode, image))
    return pictures


def write_picture(image: Tensor, picture: Picture, out: Path) -> Path:
    """``image`` (C, S, S) in [-1, 1] as a PNG of the input's own size and mode."""
    width, height = picture.size
    if image.shape[1:] != (height, width):
        image = F.interpolate(image[None].float(), size=(height, width), mode="bilinear")[0]
    pixels = ((image.clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    result = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    mode = picture.mode if picture.mode in ("L", "RGB", "RGBA", "LA") else result.mode
    path = out / f"{picture.path.stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.convert(mode).save(path)
    return path
