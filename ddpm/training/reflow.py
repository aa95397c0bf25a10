"""Distillation by reflow (Liu et al. 2023), in any process's own terms: teacher pairs and the
loss a few-call student trains on.

A deterministic teacher maps each noise z to an image x0 = ODE(z). Noised along the straight
coupling, x_r = sqrt(ab_r) x0 + sqrt(1 - ab_r) z in the process's VP view, the pair is exactly
a DDIM path: if the student's x0 estimate at every visited row is x0, DDIM from z lands on x0
whatever the rows. So the student (the teacher's network and weights to start) regresses its
x0 estimate on the teacher's x0 at the rows its 1-, 2- or 4-call DDIM plans visit, and samples
with those plans (``sampler=distilled``). The loss reaches the network through the same
:func:`~ddpm.samplers.base.x0_estimate` the samplers use, so it needs nothing per process.

The pairs ride through the training loop as one image tensor, x0 and z stacked on the channel
axis (:func:`pair_dataset`), so batching, resume, EMA and logging are the loop's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddpm.data import ImageDataset
from ddpm.diffusion.objective import drop_labels, weighted_mse
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.processes import Process
from ddpm.samplers.base import Sampler, x0_estimate

log = logging.getLogger("ddpm")


@torch.no_grad()
def teacher_pairs(
    model: nn.Module,
    sampler: Sampler,
    count: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``count`` (x0, z) pairs on the CPU: z ~ N(0, I) from ``seed`` (batch i from its own
    seed), x0 the teacher's image from z with ``sampler`` (deterministic)."""
    shape = (model.in_channels, model.image_size, model.image_size)
    images, noises = [], []
    was_training = model.training
    model.eval()
    try:
        for i, start in enumerate(range(0, count, batch_size)):
            n = min(batch_size, count - start)
            gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
            z = torch.randn((n, *shape), generator=gen, device=device)
            part = None if labels is None else labels[start : start + n]
            x0, _ = sampler.sample(model, (n, *shape), device=device, x_T=z, labels=part)
            images.append(x0.cpu())
            noises.append(z.cpu())
            log.info("teacher pairs %d/%d", start + n, count)
    finally:
        model.train(was_training)
    return torch.cat(images), torch.cat(noises)


def pair_dataset(x0: Tensor, z: Tensor, labels: Tensor | None) -> ImageDataset:
    """The pairs as the training loop's dataset: x0 and z stacked on the channel axis."""
    classes = torch.zeros(len(x0), dtype=torch.long) if labels is None else labels
    return ImageDataset(torch.cat([x0, z], dim=1), classes, "teacher pairs")


def plan_rows(plans: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """The rows the student trains at, and how often: each plan equally, each of its rows
    equally (so the 1-call row, in every plan, is drawn most)."""
    weight: dict[int, float] = {}
    for plan in plans:
        for row in plan:
            weight[int(row)] = weight.get(int(row), 0.0) + 1.0 / (len(plan) * len(plans))
    rows = sorted(weight)
    return torch.tensor(rows), torch.tensor([weight[r] for r in rows], dtype=torch.float64)


class ReflowLoss(Process):
    """The student's loss on a batch of stacked pairs: the mean squared error of its x0
    estimate against the teacher's x0, at plan rows drawn by weight from the global RNG."""

    name = "reflow"

    def __init__(
        self, grid: NoiseSchedule, plans: Sequence[Sequence[int]], prediction: str
    ) -> None:
        self.grid = grid
        self.rows, self.weights = plan_rows(plans)
        self.prediction = prediction

    def loss(
        self,
        model: nn.Module,
        x0: Tensor,
        weighting: str = "none",
        labels: Tensor | None = None,
        label_dropout: float = 0.0,
        part: slice = slice(None),
    ) -> Tensor:
        size = x0.shape[0]
        pick = torch.multinomial(self.weights.float(), size, replacement=True)
        rows = self.rows[pick].to(x0.device)
        if labels is not None:
            labels = drop_labels(labels, label_dropout, model.null_label)[part]
        images, noise = x0[part].chunk(2, dim=1)
        rows = rows[part]
        x = self.grid.q_sample(images, rows, noise)
        net = model if labels is None else (lambda x_in, level: model(x_in, level, labels))
        estimate = x0_estimate(net, self.prediction, x, self.grid, rows)
        return weighted_mse(estimate, images, torch.ones_like(rows, dtype=x.dtype), size)
