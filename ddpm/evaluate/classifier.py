"""The classifier whose penultimate features the sample-quality metrics are measured on.

Inception-v3 features (what FID is usually computed on) barely see 28x28 grey digits, so the
project trains its own small CNN once per labelled dataset (MNIST: ~99.4% test accuracy, a
few CPU minutes) and caches it (:mod:`ddpm.evaluate.cache`). Its input channels and size are
the dataset's. ``python -m ddpm.evaluate.build dataset=<name>`` (re)builds that cache.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.data import ImageDataset, batch_stream
from ddpm.errors import is_int, require

log = logging.getLogger("ddpm")


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))


class Classifier(nn.Module):
    """Three conv blocks (28 -> 14 -> 7 -> 3, or 32 -> 16 -> 8 -> 4) and a ``feature_dim``
    layer before the logits.

    Inputs are images in the model range [-1, 1], shape (N, in_channels, image_size,
    image_size). The defaults are the MNIST evaluator's (older caches store no size).
    """

    def __init__(
        self,
        width: int = 32,
        feature_dim: int = 128,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        self.width, self.feature_dim, self.num_classes = width, feature_dim, num_classes
        self.in_channels, self.image_size = in_channels, image_size
        side = image_size // 8
        self.num_features = feature_dim  # what torchmetrics reads off a custom extractor
        self.meta: dict[str, Any] = {}  # set by the cache loader: accuracy, build id, ...
        self.body = nn.Sequential(
            _conv(in_channels, width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            _conv(width, 2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            _conv(2 * width, 4 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * width * side * side, feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, feature_dim): what FID, KID and precision/recall use."""
        return self.body(x)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return f, self.head(self.dropout(f))

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]

    def arch(self) -> dict[str, int]:
        """The constructor arguments, stored with the weights to rebuild the same network."""
        return {
            "width": self.width,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }


MnistClassifier = Classifier  # the name older code and tests import


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Small random rotations (+-10 deg), scalings (+-10%) and shifts (+-2 px), per image."""
    n = len(x)
    u = torch.rand(n, 4, generator=gen, device=x.device) * 2 - 1
    angle, scale = u[:, 0] * math.radians(10), 1 + 0.1 * u[:, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift = u[:, 2:] * (4 / x.shape[-1])  # 2 pixels in grid_sample's [-1, 1] coordinates
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with 0: shift the background (-1) to 0 and back
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageDataset, batch_size: int = 1000) -> float:
    """Share of ``data`` classified correctly (eval mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for idx in torch.arange(len(data)).split(batch_size):
        logits = model(data.images[idx].to(device))
        correct += int((logits.argmax(1).cpu() == data.labels[idx]).sum())
    model.train(was_training)
    return correct / len(data)


def train_classifier(
    train: ImageDataset,
    epochs: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    lr: float = 2e-3,
    arch: dict[str, int] | None = None,
) -> Classifier:
    """Adam with a one-cycle learning rate and light augmentation; returns it in eval mode.
    Its input shape and class count are the training data's; ``arch`` may set ``width`` and
    ``feature_dim`` (a second evaluator of another shape checks a first one's verdict)."""
    require(epochs >= 1, "epochs", epochs, "an integer >= 1")
    device = torch.device(device)
    torch.manual_seed(seed)
    _, channels, size, _ = train.images.shape
    classes = max(10, int(train.labels.max()) + 1)
    shape = dict(arch or {})
    require(set(shape) <= {"width", "feature_dim"}, "arch", shape, "keys width and feature_dim")
    for key, value in shape.items():
        require(is_int(value, 1), f"arch.{key}", value, "an integer >= 1")
    model = Classifier(num_classes=classes, in_channels=channels, image_size=size, **shape)
    model = model.to(device)
    images, labels = train.images.to(device), train.labels.to(device)
    per_epoch = math.ceil(len(images) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch)
    gen = torch.Generator(device=device).manual_seed(seed)
    model.train()
    stream = batch_stream(len(images), batch_size, seed)
    for step in range(epochs * per_epoch):
        epoch, idx = next(stream)
        idx = idx.to(device)
        loss = F.cross_entropy(model(augment(images[idx], gen)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % per_epoch == 0:
            log.info("evaluator epoch %d/%d: last batch loss %.4f", epoch + 1, epochs, loss.item())
    return model.eval()
