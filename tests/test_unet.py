import pytest
import torch
from hydra.utils import instantiate

from ddpm.configs.presets import preset
from ddpm.errors import UserError
from ddpm.models.unet import sinusoidal_embedding


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_base_is_the_seed_network(make_cfg):
    model = instantiate(make_cfg("model=base").model)
    assert n_params(model) == 2_979_265


@pytest.mark.parametrize(("name", "count"), [("small", 757_505), ("large", 12_086_273)])
def test_other_sizes_have_their_documented_counts(make_cfg, name, count):
    assert n_params(instantiate(make_cfg(f"model={name}").model)) == count


@pytest.mark.parametrize("name", ["base", "small", "large"])
def test_every_model_config_maps_images_to_images(make_cfg, name):
    model = instantiate(make_cfg(f"model={name}").model)
    x = torch.randn(3, 1, 28, 28)
    out = model(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("channels", "size", "in_ch"), [([16], 28, 1), ([16, 32], 28, 1), ([8, 16, 32, 64], 32, 3)]
)
def test_any_depth_the_image_size_allows(channels, size, in_ch):
    model = preset(
        "model", "base", channels=channels, norm_groups=8, in_channels=in_ch, image_size=size
    )
    x = torch.randn(2, in_ch, size, size)
    assert model(x, torch.tensor([1, 2])).shape == x.shape


def test_depth_the_image_cannot_halve_is_refused():
    with pytest.raises(UserError, match=r"model.image_size=28: divisible by 2\^\(levels-1\)=8"):
        preset("model", "base", channels=[8, 16, 32, 64], image_size=28)


def test_time_embedding_is_half_sin_half_cos():
    t = torch.tensor([0.0, 7.0])
    emb = sinusoidal_embedding(t, 32)
    assert emb.shape == (2, 32)
    # k = 0 has frequency 1, k = 15 has frequency 1/10000 (step ln(10000)/15).
    assert emb[1, 0] == pytest.approx(torch.sin(torch.tensor(7.0)).item())
    assert emb[1, 16] == pytest.approx(torch.cos(torch.tensor(7.0)).item())
    assert emb[1, 15] == pytest.approx(torch.sin(torch.tensor(7.0 / 10000)).item(), rel=1e-5)
    assert torch.equal(emb[0, :16], torch.zeros(16)) and torch.equal(emb[0, 16:], torch.ones(16))
