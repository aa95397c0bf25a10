"""The "no label" index of a conditional network: a long tensor whatever the noise-level input.

Flow and EDM give the network a float noise level, DDPM an integer timestep; unconditional
sampling of a conditional run must work under all three (it once built the null label with
``full_like`` of that float input, which ``nn.Embedding`` refuses).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddpm.configs.presets import preset

PROCESSES = ("ddpm", "flow", "edm")
NETWORKS = ("unet", "resunet")
SIZE = 8  # two levels at 8x8: each sampling run takes milliseconds


def network(kind: str, num_classes: int | None) -> nn.Module:
    """A tiny U-Net or residual U-Net with random weights everywhere (the residual net's zeroed
    output conv would make every output 0, and every comparison below trivially equal)."""
    torch.manual_seed(0)
    if kind == "unet":
        common = {"channels": [8, 16], "time_dim": 8, "norm_groups": 4}
        model = preset("model", "small", image_size=SIZE, num_classes=num_classes, **common)
    else:
        model = preset(
            "model", "res_tiny", channels=[8, 16], num_res_blocks=1, attention_levels=None,
            attention_resolutions=[4], attention_heads=2, dropout=0.0, time_dim=None,
            norm_groups=4, image_size=SIZE, num_classes=num_classes,
        )  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.any():
                m.weight.normal_(0, 0.1)
    return model.eval()


def schedule(process: str) -> object:
    """What a sampler runs on: the DDPM schedule, or a continuous process's grid."""
    if process == "ddpm":
        return preset("schedule", "linear", timesteps=50)
    return preset("process", process).grid


def draw(model: nn.Module, process: str, labels: torch.Tensor | None) -> torch.Tensor:
    """Two images from seed 3 with the sampling commands' default sampler (stochastic: its
    noise comes from the seed too), at 3 steps."""
    sampler = preset("sampler", "dpm_solver_pp_sde", schedule=schedule(process), steps=3)
    images, _ = sampler.sample(
        model, (2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(3), labels=labels
    )
    return images


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32])
@pytest.mark.parametrize("kind", NETWORKS)
def test_the_null_label_is_a_long_index_whatever_the_noise_level_dtype(kind, dtype):
    model = network(kind, 10)
    seen: list[torch.Tensor] = []
    model.label_embedding.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x, t = torch.randn(2, 1, SIZE, SIZE), torch.tensor([3.7, 500.0]).to(dtype)
    out = model(x, t)
    (labels,) = seen
    assert labels.dtype == torch.long and labels.device == t.device
    assert labels.tolist() == [10, 10]
    assert torch.equal(out, model(x, t, torch.full((2,), model.null_label)))


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_samples_with_and_without_labels(process, kind):
    """Conditional model: no label draws exactly what the explicit null label draws (guidance
    scale 1 makes one network call per step on the labels given, and the seed fixes the noise),
    and a real label draws something else. Unconditional model: no label samples, a label is
    refused."""
    labels = torch.tensor([3, 7])
    conditional = network(kind, 10)
    none = draw(conditional, process, None)
    null = draw(conditional, process, torch.full((2,), conditional.null_label))
    given = draw(conditional, process, labels)
    for images in (none, given):
        assert images.shape == (2, 1, SIZE, SIZE) and bool(images.isfinite().all())
    assert torch.equal(none, null)
    assert not torch.allclose(none, given)

    unconditional = network(kind, None)
    images = draw(unconditional, process, None)
    assert images.shape == (2, 1, SIZE, SIZE) and bool(images.isfinite().all())
    assert not torch.allclose(images, none)  # different networks, same seed: not a constant
    with pytest.raises(ValueError, match="unconditional model"):
        draw(unconditional, process, labels)
