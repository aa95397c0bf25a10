"""Fixtures compose the real config (conf/) and override it small."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DATA_ROOT = Path(os.environ.get("DDPM_DATA_ROOT", REPO.parent / "shared" / "data"))
HAVE_MNIST = (DATA_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"no MNIST under {DATA_ROOT}")

# A run that finishes in seconds on a CPU: tiny widths, short schedule, few samples.
TINY = [
    "model.channels=[16,32]",
    "schedule.timesteps=20",
    "trainer.batch_size=16",
    "trainer.max_steps=4",
    "trainer.log_every=1",
    "trainer.num_samples=4",
    "trainer.device=cpu",
    f"dataset.root={DATA_ROOT}",
    "dataset.download=false",
    "logger=none",
]
# The same with an offline W&B run (what the tracking tests read back).
TINY_WANDB = [*TINY[:-1], "logger=wandb", "logger.mode=offline"]


@pytest.fixture
def make_cfg() -> Iterator[Callable[..., DictConfig]]:
    """``make_cfg("model=small", ...)`` composes conf/config.yaml with those overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


class GaussianOracle(torch.nn.Module):
    """The exact predictor for data x0 ~ N(mu, s^2), for any schedule and target.

    eps*(x_t, t) = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
    """

    def __init__(self, schedule, mu: float, s: float, prediction: str = "eps") -> None:
        super().__init__()
        self.schedule, self.mu, self.s, self.prediction = schedule, mu, s, prediction
        self.in_channels, self.image_size = 1, 1

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.schedule.alpha_bar.to(torch.float64)[t].reshape(-1, 1, 1, 1)
        x = x_t.to(torch.float64)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        out = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}
        return out[self.prediction].to(x_t.dtype)
