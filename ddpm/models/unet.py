"""The seed's small U-Net, built from a list of widths (one per resolution level).

With ``channels=[64, 128, 256]``, ``time_dim=32``, ``norm_groups=8`` on 28x28x1 it is exactly
the study note's network (2,979,265 parameters): see ``../shared/SEED.md``.

``interval_input`` (every network here, off by default) adds a second noise-level input, the
interval t - r over which ``process=meanflow``'s network averages the velocity: the noise-level
argument is then a (batch, 2) tensor of (level, interval), each embedded like the timestep and
the two embeddings added (MeanFlow's (t, t - r) conditioning, Geng et al. 2025).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddpm.diffusion.objective import PREDICTIONS
from ddpm.errors import is_int, plain, require


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Half sin, half cos, frequencies exp(-ln(10000) k / (half - 1)), k = 0..half-1."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
    )
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=1)


def check_unet_args(
    channels: Sequence[int],
    time_dim: int,
    norm_groups: int,
    in_channels: int,
    image_size: int,
    prediction: str,
    num_classes: int | None,
    interval_input: bool,
) -> None:
    """The rules every U-Net of this package shares (widths, groups, sizes, target, labels,
    inputs)."""
    channels = plain(channels)
    require(
        isinstance(channels, list | tuple)
        and len(channels) > 0
        and all(is_int(c, 1) for c in channels),
        "model.channels",
        channels,
        "a non-empty list of positive integer widths",
    )
    require(is_int(norm_groups, 1), "model.norm_groups", norm_groups, "an integer >= 1")
    require(
        all(c % norm_groups == 0 for c in channels),
        "model.channels",
        channels,
        f"every width divisible by model.norm_groups={norm_groups}",
    )
    require(
        is_int(time_dim, 4) and time_dim % 2 == 0,
        "model.time_dim",
        time_dim,
        "an even integer >= 4",
    )
    require(is_int(in_channels, 1), "model.in_channels", in_channels, "an integer >= 1")
    require(is_int(image_size, 1), "model.image_size", image_size, "an integer >= 1")
    levels = len(channels)
    require(
        image_size % 2 ** (levels - 1) == 0,
        "model.image_size",
        image_size,
        f"divisible by 2^(levels-1)={2 ** (levels - 1)} for {levels} widths",
    )
    require(
        prediction in PREDICTIONS,
        "model.prediction",
        prediction,
        f"one of {', '.join(PREDICTIONS)}",
    )
    require(
        num_classes is None or is_int(num_classes, 1),
        "model.num_classes",
        num_classes,
        "an integer >= 1, or null",
    )
    require(
        isinstance(interval_input, bool),
        "model.interval_input",
        interval_input,
        "true or false (true: a second noise-level input, the interval t - r of process=meanflow)",
    )


class Block(nn.Module):
    """conv -> + Linear(time embedding) as a per-channel bias -> GroupNorm -> SiLU."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, kind: str) -> None:
        super().__init__()
        if kind == "plain":
            self.conv: nn.Module = nn.Conv2d(c_in, c_out, 3, padding=1)
        elif kind == "down":
            self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        elif kind == "up":
            self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        else:
            raise ValueError(f"block kind {kind!r}: allowed plain, down, up")
        self.time = nn.Linear(time_dim, c_out)
        self.norm = nn.GroupNorm(groups, c_out)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        h = self.conv(x) + self.time(t_emb)[:, :, None, None]
        return self.act(self.norm(h))


class DenoisingNet(nn.Module):
    """What every network here shares: the attributes samplers and losses read
    (``prediction``, ``image_size``, ``in_channels``, ``num_classes``, ``null_label``) and the
    time (plus label) embedding every block is conditioned on."""

    def _init_embedding(
        self,
        time_dim: int,
        in_channels: int,
        image_size: int,
        prediction: str,
        num_classes: int | None,
        interval_input: bool,
    ) -> None:
        self.prediction = prediction
        self.image_size = image_size
        self.in_channels = in_channels
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        # Class conditioning: one learned vector per label, added to the time embedding, plus
        # a "no label" vector at index num_classes, which is what classifier-free guidance's
        # unconditional prediction uses (and what label dropout trains).
        self.num_classes = num_classes
        if num_classes is not None:
            self.label_embedding = nn.Embedding(num_classes + 1, time_dim)
        # The interval t - r (process=meanflow): its own MLP on the same sinusoidal features,
        # added to the level's embedding. Absent when off, so every other network is unchanged.
        self.interval_input = interval_input
        if interval_input:
            self.interval_mlp = nn.Sequential(
                nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
            )

    @property
    def null_label(self) -> int:
        """The label index that means "unconditional" (only for conditional models)."""
        if self.num_classes is None:
            raise ValueError("an unconditional model (model.num_classes=null) takes no labels")
        return self.num_classes

    def embed(self, t: Tensor, labels: Tensor | None) -> Tensor:
        """``t``: the noise level per image, or with ``interval_input`` (level, interval) rows
        (a plain level is interval 0: MeanFlow's r = t, the instantaneous velocity that every
        multi-call sampler asks for). ``labels``: class per image, ``null_label`` for none;
        None = all unconditional."""
        if t.ndim == 2 and not self.interval_input:
            raise ValueError(
                "a (level, interval) input to a network with model.interval_input=false"
            )
        level = t if t.ndim == 1 else t[:, 0]
        emb = self.time_mlp(sinusoidal_embedding(level, self.time_dim))
        if self.interval_input:
            interval = torch.zeros_like(level) if t.ndim == 1 else t[:, 1]
            emb = emb + self.interval_mlp(sinusoidal_embedding(interval, self.time_dim))
        if self.num_classes is not None:
            if labels is None:  # an index, long whatever the dtype of t (float for flow, EDM)
                labels = torch.full(level.shape, self.null_label, dtype=torch.long, device=t.device)
            emb = emb + self.label_embedding(labels)
        elif labels is not None:
            raise ValueError("labels given to an unconditional model (model.num_classes=null)")
        return emb


class UNet(DenoisingNet):
    """Predicts ``prediction`` (eps, x0 or v) from a noisy image and its timestep.

    Down path: a plain block to ``channels[0]``, then one stride-2 block per further width.
    Two plain blocks in the middle. Up path: each level concatenates the skip of the same
    resolution and upsamples to the next smaller width; a last plain block and a 1x1 conv.
    """

    def __init__(
        self,
        *,
        channels: Sequence[int],
        time_dim: int,
        norm_groups: int,
        in_channels: int,
        image_size: int,
        prediction: str,
        num_classes: int | None,
        interval_input: bool,
    ) -> None:
        super().__init__()
        check_unet_args(
            channels,
            time_dim,
            norm_groups,
            in_channels,
            image_size,
            prediction,
            num_classes,
            interval_input,
        )
        channels = list(channels)
        levels = len(channels)
        self._init_embedding(
            time_dim, in_channels, image_size, prediction, num_classes, interval_input
        )

        def block(c_in: int, c_out: int, kind: str) -> Block:
            return Block(c_in, c_out, time_dim, norm_groups, kind)

        self.downs = nn.ModuleList([block(in_channels, channels[0], "plain")])
        for c_prev, c in zip(channels[:-1], channels[1:], strict=True):
            self.downs.append(block(c_prev, c, "down"))
        self.mids = nn.ModuleList([block(channels[-1], channels[-1], "plain") for _ in range(2)])
        self.ups = nn.ModuleList()
        for level in range(levels - 1, 0, -1):
            self.ups.append(block(2 * channels[level], channels[level - 1], "up"))
        self.ups.append(block(2 * channels[0], channels[0], "plain"))
        self.out = nn.Conv2d(channels[0], in_channels, 1)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        t_emb = self.embed(t, labels)
        skips = []
        h = x
        for down in self.downs:
            h = down(h, t_emb)
            skips.append(h)
        for mid in self.mids:
            h = mid(h, t_emb)
        for up in self.ups:
            h = up(torch.cat([h, skips.pop()], dim=1), t_emb)
        return self.out(h)
