"""``process=ddpm``: the discrete variance-preserving process of Ho et al. 2020.

x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps on T integer timesteps (``schedule=linear|cosine|
sigmoid``); the network takes the integer t and predicts ``model.prediction`` (eps, x0 or v).
Its grid is the schedule itself, so samplers and losses run exactly as before processes
existed, bit for bit.
"""

from __future__ import annotations

from torch import Tensor, nn

from ddpm.diffusion.objective import diffusion_loss
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.processes.base import Process


class DDPMProcess(Process):
    """The schedule's process: training draws t ~ U{0..T-1}, the target is the model's."""

    name = "ddpm"
    reads = ("schedule", "model.prediction", "trainer.loss_weighting")

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.grid = schedule

    def describe(self) -> str:
        return f"ddpm (T={len(self.grid)})"

    def loss(
        self,
        model: nn.Module,
        x0: Tensor,
        weighting: str = "none",
        labels: Tensor | None = None,
        label_dropout: float = 0.0,
        part: slice = slice(None),
    ) -> Tensor:
        return diffusion_loss(model, self.grid, x0, weighting, labels, label_dropout, part)
