"""The residual U-Net (ddpm/models/resunet.py), its presets, and the FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddpm.configs.presets import preset
from ddpm.configs.run_config import validate
from ddpm.errors import UserError
from ddpm.models.flops import flops_per_image
from ddpm.models.resunet import AttentionBlock, ResUNet

PRESETS = {
    "res_tiny": 720_001,
    "res_small": 1_203_521,
    "res_base": 6_996_033,
    "res_large": 29_253_249,
}
# Attention at the net's lowest resolution(s) for each image size.
ATTENTION = {
    "res_tiny": {28: [7], 32: [8]},
    "res_small": {28: [7], 32: [8]},
    "res_base": {28: [7], 32: [8]},
    "res_large": {28: [14, 7], 32: [16, 8]},
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(**overrides: object) -> ResUNet:
    """Two levels at 8x8 (8 -> 4), attention at 4: builds and runs in milliseconds."""
    kwargs: dict[str, object] = {
        "channels": [8, 16],
        "num_res_blocks": 1,
        "attention_levels": None,
        "attention_resolutions": [4],
        "attention_heads": 2,
        "dropout": 0.0,
        "time_dim": None,
        "norm_groups": 4,
        "image_size": 8,
    }
    return preset("model", "res_tiny", **{**kwargs, **overrides})


def unzero(model: nn.Module) -> nn.Module:
    """Random weights where the net starts at zero, so every path changes the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.any():
                m.weight.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("name", PRESETS)
def test_presets_have_their_documented_parameter_counts(name):
    assert n_params(preset("model", name)) == PRESETS[name]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize(("size", "in_ch"), [(28, 1), (32, 3)])
def test_every_preset_maps_images_to_images(name, size, in_ch, one_thread):
    model = preset("model", name, image_size=size, in_channels=in_ch)  # levels fit any size
    assert model.attention_resolutions == ATTENTION[name][size]
    x = torch.randn(1, in_ch, size, size)
    with torch.no_grad():
        out = unzero(model).eval()(x, torch.tensor([500]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", PRESETS)
def test_presets_pass_the_config_check(make_cfg, name):
    validate(make_cfg(f"model={name}"))


def test_output_is_exactly_zero_at_initialisation():
    model = tiny()
    out = model(torch.randn(3, 1, 8, 8), torch.tensor([0, 10, 999]))
    assert torch.equal(out, torch.zeros_like(out))


def test_interface_matches_the_seed_unet():
    model = tiny(prediction="v", in_channels=3, num_classes=10)
    assert (model.prediction, model.image_size, model.in_channels) == ("v", 8, 3)
    assert (model.num_classes, model.null_label) == (10, 10)
    assert tiny(time_dim=None).time_dim == 4 * 8


def test_labels_condition_the_output_and_the_null_label_is_the_default():
    model = unzero(tiny(num_classes=10)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 3])
    x = x[:1].expand(2, -1, -1, -1)  # one image, two labels
    out = model(x, t, torch.tensor([1, 7]))
    assert not torch.allclose(out[0], out[1])
    null = torch.full((2,), model.null_label)
    assert torch.equal(model(x, t), model(x, t, null))


def test_an_unconditional_model_refuses_labels():
    model = tiny()
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 8, 8), torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="takes no labels"):
        _ = model.null_label


BAD = [
    ({"channels": []}, "model.channels=[]: a non-empty list of positive integer widths"),
    (
        {"channels": [30, 60]},
        "model.channels=[30, 60]: every width divisible by model.norm_groups=4",
    ),
    ({"norm_groups": 0}, "model.norm_groups=0: an integer >= 1"),
    ({"num_res_blocks": 0}, "model.num_res_blocks=0: an integer >= 1"),
    ({"num_res_blocks": 1.5}, "model.num_res_blocks=1.5: an integer >= 1"),
    ({"in_channels": 0}, "model.in_channels=0: an integer >= 1"),
    (
        {"image_size": 30, "channels": [8, 16, 32]},
        "model.image_size=30: divisible by 2^(levels-1)=4 for 3 widths",
    ),
    (
        {"attention_resolutions": [5]},
        "model.attention_resolutions=[5]: a list of resolutions the net has (8, 4), or []",
    ),
    (
        {"attention_heads": 3},
        "model.attention_heads=3: an integer >= 1 that divides every attended width (16)",
    ),
    ({"dropout": 1.5}, "model.dropout=1.5: a number in [0, 1)"),
    ({"dropout": -0.1}, "model.dropout=-0.1: a number in [0, 1)"),
    ({"time_dim": 7}, "model.time_dim=7: an even integer >= 4"),
    ({"prediction": "score"}, "model.prediction='score': one of eps, x0, v"),
    ({"num_classes": 0}, "model.num_classes=0: an integer >= 1, or null"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_value_is_refused_with_one_line(overrides, message):
    with pytest.raises(UserError) as err:
        tiny(**overrides)
    assert str(err.value) == message


def test_a_bad_list_from_a_yaml_reads_as_a_plain_list():
    # instantiate passes the list as a ListConfig
    with pytest.raises(UserError, match=r"^model.attention_resolutions=\[7, 3\]: a list of"):
        preset("model", "res_small", attention_resolutions=[7, 3], attention_levels=None)


def test_a_few_adamw_steps_lower_the_loss_on_a_fixed_batch(one_thread):
    torch.manual_seed(0)
    model = tiny(num_classes=3)
    x0, noise = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    t, labels = torch.randint(0, 1000, (8,)), torch.randint(0, 4, (8,))
    x_t = 0.6 * x0 + 0.8 * noise
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(8):
        loss = (model(x_t, t, labels) - noise).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(1.0, abs=0.2)  # zero output: the loss is E[noise^2]
    assert losses[-1] < 0.9 * losses[0]
    # Every parameter took part (zero-initialised layers pass gradients on after one step).
    frozen = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert frozen == []


class ConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lin = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(self.conv(x).flatten(1))


def test_flops_of_a_conv_and_a_linear_layer_match_the_closed_form():
    conv = 2 * (4 * 8 * 8) * (1 * 3 * 3)  # 2 x outputs x multiply-adds per output
    lin = 2 * (4 * 8 * 8) * 10
    flops = flops_per_image(ConvLinear(), (1, 8, 8), batch_size=3)
    assert flops["forward"] == conv + lin
    # Backward: the conv's weight gradient; the linear's weight and input gradients (the
    # image itself needs no gradient).
    assert flops["backward"] == conv + 2 * lin
    assert flops["forward_backward"] == 2 * conv + 3 * lin


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = AttentionBlock(16, heads=4, groups=4)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def test_attention_is_counted_on_the_cpu():
    pixels, c = 7 * 7, 16
    qkv, proj = 2 * pixels * c * 3 * c, 2 * pixels * c * c
    scores_and_mix = 2 * (2 * pixels * pixels * c)  # q k^T and softmax(.) v over all heads
    assert flops_per_image(Attention(), (16, 7, 7))["forward"] == qkv + proj + scores_and_mix


def test_seed_base_unet_flops_match_the_study_note():
    flops = flops_per_image(preset("model", "base"), (1, 28, 28))
    assert flops["forward"] == 495_620_096
    assert flops["forward_backward"] == 1_485_955_072  # the note's 1.49 GFLOP per image


def test_flop_counting_leaves_gradients_alone():
    model = tiny()
    flops = flops_per_image(model, (1, 8, 8))
    assert all(p.grad is None for p in model.parameters())
    assert 2.9 < flops["forward_backward"] / flops["forward"] < 3.0


@pytest.mark.parametrize(
    ("name", "forward", "forward_backward"),
    [
        ("res_tiny", 146_950_144, 440_616_448),
        ("res_small", 380_259_328, 1_140_293_632),
        ("res_base", 2_209_455_104, 6_627_331_072),
    ],
)
def test_preset_flops_are_the_documented_ones(name, forward, forward_backward, one_thread):
    flops = flops_per_image(preset("model", name), (1, 28, 28), batch_size=1)
    assert (flops["forward"], flops["forward_backward"]) == (forward, forward_backward)
