"""``ddpm.denoise``: the timestep matching, the denoiser on exact Gaussian data, the command."""

import json
import math

import pytest
import torch
from conftest import GaussianOracle, run_module
from PIL import Image

from ddpm.configs.presets import preset
from ddpm.denoise import comma_lists_as_lists, denoise, matched_timestep, psnr

MU, S = 0.3, 0.2


pytestmark = pytest.mark.usefixtures("one_thread")


def _level(sch, t: int) -> float:
    ab = float(sch._alpha_bar64[t])
    return math.sqrt((1 - ab) / ab)


@pytest.mark.parametrize("option", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.3, 0.5, 0.8, 2.0])
def test_matched_timestep_has_the_closest_noise_level(option, sigma):
    sch = preset("schedule", option, timesteps=1000)
    t = matched_timestep(sch, sigma)
    gap = abs(_level(sch, t) - sigma)
    for other in (t - 1, t + 1):
        if 0 <= other < 1000:
            assert gap <= abs(_level(sch, other) - sigma)
    # Scaled by sqrt(ab_t), the noise has the forward process's std sqrt(1 - ab_t).
    ab = float(sch._alpha_bar64[t])
    assert math.sqrt(ab) * sigma == pytest.approx(math.sqrt(1 - ab), rel=0.05)


def test_matched_timesteps_for_the_default_levels():
    sch = preset("schedule", "linear", timesteps=1000)
    assert [matched_timestep(sch, s) for s in (0.1, 0.3, 0.5, 0.8)] == [26, 88, 144, 217]
    assert matched_timestep(sch, 1e-4) == 0 and matched_timestep(sch, 1e3) == 999


@pytest.mark.parametrize("option", ["linear", "sigmoid"])
@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.8])
def test_denoising_gaussian_data_lowers_the_error_as_theory_says(option, sigma):
    """Data N(mu, s^2), exact predictor. Deterministic DDIM transports the noisy marginal onto
    the data: x0_hat = mu + k (y - mu), k = s / sqrt(s^2 + sigma^2), so MSE = 2 s^2 (1 - k).
    Ancestral sampling draws from the posterior instead: MSE = 2 s^2 sigma^2 / (s^2 + sigma^2),
    which beats the noisy input only once sigma > s."""
    sch = preset("schedule", option, timesteps=1000)
    model = GaussianOracle(sch, MU, S)
    gen = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn(20_000, 1, 1, 1, generator=gen)
    noisy = x0 + sigma * torch.randn(x0.shape, generator=gen)
    noisy_mse = (noisy - x0).pow(2).mean().item()
    assert noisy_mse == pytest.approx(sigma**2, rel=0.03)

    out, t = denoise(model, preset("sampler", "ddim", schedule=sch, steps=50), noisy, sigma)
    assert t == matched_timestep(sch, sigma)
    k = S / math.sqrt(S**2 + sigma**2)
    ddim_mse = (out - x0).pow(2).mean().item()
    assert ddim_mse == pytest.approx(2 * S**2 * (1 - k), rel=0.06)
    assert ddim_mse < noisy_mse

    out, _ = denoise(
        model,
        preset("sampler", "ddpm", schedule=sch),
        noisy,
        sigma,
        torch.Generator().manual_seed(1),
    )
    posterior_mse = 2 * S**2 * sigma**2 / (S**2 + sigma**2)
    assert (out - x0).pow(2).mean().item() == pytest.approx(posterior_mse, rel=0.08)


def test_psnr_is_on_unit_pixels():
    clean = torch.zeros(2, 1, 4, 4)
    off = clean + 0.2  # 0.1 on [0, 1] pixels: MSE 0.01, 20 dB
    torch.testing.assert_close(psnr(off, clean), torch.tensor([20.0, 20.0]))


def test_comma_lists_become_lists_unless_sweeping():
    argv = ["denoise.py", "run_dir=r", "noise_std=0.1,0.3,0.5"]
    assert comma_lists_as_lists(argv)[2] == "noise_std=[0.1,0.3,0.5]"
    assert comma_lists_as_lists(["x", "noise_std=[0.1,0.3]"])[1] == "noise_std=[0.1,0.3]"
    assert comma_lists_as_lists(["x", "-m", "noise_std=0.1,0.3"])[2] == "noise_std=0.1,0.3"


@pytest.mark.slow
def test_denoise_cli_writes_picture_and_tables(tiny_run):
    res = run_module(
        "ddpm.denoise",
        f"run_dir={tiny_run}",
        "noise_std=0.1,0.3",
        "num_images=4",
        "num_eval=16",
        "sampler.steps=5",
        "device=cpu",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = tiny_run / "denoise" / "ddim_5"
    info = json.loads((out / "denoise.json").read_text())
    levels = info["levels"]
    assert [r["noise_std"] for r in levels] == [0.1, 0.3]
    assert levels[0]["t"] < levels[1]["t"] <= 19
    assert levels[1]["psnr_noisy"] < levels[0]["psnr_noisy"]
    # 0.3 on [-1, 1] is 0.15 on [0, 1] pixels: about 16.5 dB before clamping helps.
    assert 16.0 < levels[1]["psnr_noisy"] < 22.0
    for r in levels:
        assert r["blur_sigma"] in [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
        assert all(math.isfinite(r[k]) for k in ("psnr_denoised", "psnr_blur"))
    table = (out / "denoise.md").read_text().splitlines()
    assert sum(line.startswith("| 0.") for line in table) == 2
    with Image.open(out / "denoise.png") as img:
        assert img.size[1] > img.size[0] / 2  # two stacked panels


@pytest.mark.slow
def test_denoise_cli_bad_noise_std_is_one_line(tiny_run):
    res = run_module("ddpm.denoise", f"run_dir={tiny_run}", "noise_std=[0.1,-0.3]")
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: noise_std=[0.1, -0.3]: one number or a list of numbers > 0 in [-1, 1] pixel "
        "units, e.g. noise_std=[0.1,0.3,0.5,0.8]"
    ], res.stderr
