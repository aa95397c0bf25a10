"""Pictures a run leaves behind: digit grids, the denoising strip, the loss curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402, F401 - for modules that draw
from torch import Tensor  # noqa: E402
from torchvision.utils import save_image  # noqa: E402


def progress_steps(num_timesteps: int) -> list[int]:
    """The seed's strip, t = 999, 800, 600, 400, 200, 100, 50, 0, scaled to any T."""
    fractions = (0.8, 0.6, 0.4, 0.2, 0.1, 0.05)
    return [num_timesteps - 1, *(round(f * num_timesteps) for f in fractions), 0]


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] model range -> [0, 1] pixels."""
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def save_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """An nrow-wide grid of images in model range, as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_unit(images.detach().cpu()), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def save_progress(trajectory: Mapping[int, Tensor], path: str | Path) -> Path:
    """One digit's reverse process, left (noise) to right (image), each panel titled by t."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = sorted(trajectory, reverse=True)
    fig, axes = plt.subplots(1, len(steps), figsize=(1.3 * len(steps), 1.6), squeeze=False)
    for ax, t in zip(axes[0], steps, strict=True):
        img = to_unit(trajectory[t]).permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(f"t={t}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss(steps: Sequence[int], losses: Sequence[float], path: str | Path) -> Path:
    """Training loss against step (log scale: the interesting part is the long tail)."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(steps), list(losses), lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
