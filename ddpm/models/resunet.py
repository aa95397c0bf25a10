"""A residual U-Net with scale-shift conditioning and self-attention at low resolution.

The layout follows the DDPM paper's network (Ho et al. 2020): per level ``num_res_blocks``
residual blocks (optionally each followed by self-attention), a stride-2 conv between levels,
a res-attn-res middle, and an up path that concatenates one stored activation per block. The
time (and label) embedding enters every residual block as a per-channel scale and shift
after its second GroupNorm. The last conv of every residual block, the output projection of
every attention block and the final conv start at zero: every block is its skip path at
initialisation and the net outputs exactly 0, which keeps the first steps stable.

Same interface as :class:`ddpm.models.unet.UNet`: ``forward(x, t, labels=None)``,
``prediction``, ``image_size``, ``in_channels``, ``num_classes``, ``null_label`` and
``interval_input`` (``t`` then (level, interval) rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.errors import is_int, is_number, plain, require
from ddpm.models.unet import DenoisingNet, check_unet_args


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias, so the branch it ends adds nothing at first."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, then GroupNorm * (1 + scale) + shift -> SiLU -> dropout ->
    conv3x3, added to the input (through a 1x1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (b, heads, pixels, head_dim)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(b, c, hgt, wid)
        return x + self.proj(h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then conv3x3 (no checkerboard artefacts of a transposed conv)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attention_sizes(
    levels: int, image_size: int, resolutions: object, attention_levels: object
) -> object:
    """The feature-map sizes with attention, from sizes or from levels (0 = full size), so
    one preset works at any image size (levels [2]: 7x7 at 28, 8x8 at 32). Neither given:
    the lowest resolution."""
    require(
        resolutions is None or attention_levels is None,
        "model.attention_levels",
        attention_levels,
        "null when model.attention_resolutions is set (one or the other)",
    )
    if resolutions is not None:
        return resolutions
    if attention_levels is None:
        attention_levels = [levels - 1]
    require(
        isinstance(attention_levels, list)
        and all(is_int(v, 0) and v < levels for v in attention_levels),
        "model.attention_levels",
        attention_levels,
        f"a list of levels 0..{levels - 1} (0 = full size), or []",
    )
    return sorted({image_size // 2**v for v in attention_levels}, reverse=True)


def _check_res_args(
    channels: list[int],
    image_size: int,
    num_res_blocks: int,
    attention_resolutions: object,
    attention_heads: int,
    dropout: float,
) -> None:
    """The rules only this network has (the shared ones are :func:`check_unet_args`')."""
    require(is_int(num_res_blocks, 1), "model.num_res_blocks", num_res_blocks, "an integer >= 1")
    sizes = [image_size // 2**level for level in range(len(channels))]
    require(
        isinstance(attention_resolutions, list)
        and all(is_int(r, 1) and r in sizes for r in attention_resolutions),
        "model.attention_resolutions",
        attention_resolutions,
        f"a list of resolutions the net has ({', '.join(map(str, sizes))}), or []",
    )
    # Widths that get attention: the attention levels' and the middle's (the last level).
    attended = {channels[sizes.index(r)] for r in attention_resolutions} | {channels[-1]}
    require(
        is_int(attention_heads, 1) and all(c % attention_heads == 0 for c in attended),
        "model.attention_heads",
        attention_heads,
        f"an integer >= 1 that divides every attended width "
        f"({', '.join(map(str, sorted(attended)))})",
    )
    require(is_number(dropout) and 0 <= dropout < 1, "model.dropout", dropout, "a number in [0, 1)")


class ResUNet(DenoisingNet):
    """Predicts ``prediction`` (eps, x0 or v) from a noisy image and its timestep.

    ``channels`` gives one width per resolution level (28 -> 14 -> 7 for three levels at
    28x28); ``attention_resolutions`` lists the feature-map sizes that get self-attention
    after each residual block (the middle always has one), or ``attention_levels`` the
    levels (0 = full size), which the presets use so they fit 28x28 and 32x32 alike.
    """

    def __init__(
        self,
        *,
        channels: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[int] | None,
        attention_resolutions: Sequence[int] | None,
        attention_heads: int,
        dropout: float,
        time_dim: int | None,
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
            4 if time_dim is None else time_dim,  # null: 4 * channels[0], checked below
            norm_groups,
            in_channels,
            image_size,
            prediction,
            num_classes,
            interval_input,
        )
        channels = list(channels)
        attention_resolutions = _attention_sizes(
            len(channels), image_size, plain(attention_resolutions), plain(attention_levels)
        )
        _check_res_args(
            channels, image_size, num_res_blocks, attention_resolutions, attention_heads, dropout
        )
        time_dim = 4 * channels[0] if time_dim is None else time_dim
        self.attention_resolutions = list(attention_resolutions)
        self._init_embedding(
            time_dim, in_channels, image_size, prediction, num_classes, interval_input
        )

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, time_dim, norm_groups, dropout)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, attention_heads, norm_groups)

        # Down path: every block's output (and the stem's) is kept for the up path.
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        skip_widths = [channels[0]]
        width, size = channels[0], image_size
        for level, c in enumerate(channels):
            for _ in range(num_res_blocks):
                layers = [res(width, c)] + ([attn(c)] if size in attention_resolutions else [])
                self.down.append(nn.ModuleList(layers))
                width = c
                skip_widths.append(width)
            if level < len(channels) - 1:
                self.down.append(nn.ModuleList([Downsample(width)]))
                skip_widths.append(width)
                size //= 2
        self.mid = nn.ModuleList([res(width, width), attn(width), res(width, width)])
        # Up path: num_res_blocks + 1 blocks per level, each eating one stored activation.
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            for _ in range(num_res_blocks + 1):
                layers = [res(width + skip_widths.pop(), c)]
                if size in attention_resolutions:
                    layers.append(attn(c))
                self.up.append(nn.ModuleList(layers))
                width = c
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(width)]))
                size *= 2
        self.out_norm = nn.GroupNorm(norm_groups, width)
        self.out = _zero(nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.embed(t, labels)
        h = self.stem(x)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, emb)
            skips.append(h)
        h = self._run(self.mid, h, emb)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(layers, h, emb)
        return self.out(F.silu(self.out_norm(h)))

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h
