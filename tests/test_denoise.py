"""``ddpm.denoise``: the timestep matching, the denoiser on exact Gaussian data, the command."""

import json
import math

import pytest
import torch
from conftest import CONF, DATA_ROOT, GaussianOracle, fast_only, needs_mnist, run_module
from PIL import Image

from ddpm.configs.presets import preset
from ddpm.denoise import comma_lists_as_lists, denoise, matched_timestep
from ddpm.denoisers.baselines import psnr

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
    methods = ["noisy", "denoised", "at_estimate", "bm3d", "nl_means", "total_variation"]
    methods += ["wavelet", "blur"]
    assert info["settings"]["methods"] == methods
    for r in levels:
        assert r["strengths"]["blur"] in [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
        assert all(math.isfinite(r[f"{k}_{m}"]) for k in ("psnr", "ssim") for m in methods)
        assert r["psnr_bm3d"] > r["psnr_noisy"] and 0 < r["ssim_bm3d"] <= 1
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


# --- baselines, scores and the estimate ---------------------------------------------------------


def _digits(n: int = 16) -> torch.Tensor:
    """Smooth synthetic 28x28 images in [-1, 1]: a bright disc of random centre and radius."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = 8 + 12 * torch.rand(n, 2, generator=g)
    radius = 4 + 5 * torch.rand(n, generator=g)
    dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
    return (dist < radius[:, None, None]).float().mul(2).sub(1).unsqueeze(1)


@pytest.mark.parametrize(
    "name",
    fast_only(["bm3d", "nl_means", "total_variation", "wavelet", "blur"], lambda n: n != "bm3d"),
)
def test_every_baseline_removes_noise_at_its_best_strength(name):
    from ddpm.denoisers.baselines import BASELINES, best_of, ssim

    clean = _digits()
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    strength, out = best_of(BASELINES[name], (0.5, 1.0), noisy, clean, 0.5)
    assert strength in (0.5, 1.0) and out.shape == clean.shape
    assert psnr(out, clean).mean() > psnr(noisy, clean).mean() + 2.0  # dB
    assert ssim(out, clean).mean() > ssim(noisy, clean).mean()


def test_ssim_is_one_for_equal_images_and_falls_with_noise():
    from ddpm.denoisers.baselines import ssim

    clean = _digits(4)
    assert torch.allclose(ssim(clean, clean), torch.ones(4))
    noisy = clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    assert (ssim(noisy, clean) < 0.9).all()


@pytest.mark.parametrize("std", [0.1, 0.3, 0.5, 0.8])
def test_the_noise_estimate_finds_a_known_std_within_ten_percent(std):
    from ddpm.denoisers.baselines import estimate_std

    clean = _digits(32)
    noisy = clean + std * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    assert estimate_std(noisy).mean().item() == pytest.approx(std, rel=0.1)


def test_images_at_different_noise_levels_are_each_denoised_from_their_own_step():
    from ddpm.denoise import denoise_each, denoise_from

    sch = preset("schedule", "linear", timesteps=1000)
    model = GaussianOracle(sch, MU, S)
    sampler = preset("sampler", "ddim", schedule=sch, steps=20)
    noisy = (
        MU
        + S * torch.randn(6, 1, 1, 1)
        + torch.tensor([0.1, 0.5, 0.1, 0.5, 0.3, 0.1]).view(-1, 1, 1, 1) * torch.randn(6, 1, 1, 1)
    )
    stds = torch.tensor([0.1, 0.5, 0.1, 0.5, 0.3, 0.1])
    together = denoise_each(model, sampler, noisy, stds, batch_size=2)
    for k in range(6):
        t = matched_timestep(sch, float(stds[k]))
        alone = denoise_from(model, sampler.starting_at(t), noisy[k : k + 1], t)
        assert torch.allclose(together[k : k + 1], alone, atol=1e-6)


def test_posterior_draws_need_a_stochastic_sampler_and_give_a_mean_and_a_spread(tiny_run, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ddpm.denoise import run_denoise
    from ddpm.errors import UserError

    def config(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                config_name="denoise",
                overrides=[
                    f"run_dir={tiny_run}", "noise_std=[0.5]", "num_images=2", "num_eval=8",
                    "device=cpu", "baselines=null", f"out_dir={tmp_path}", *overrides,
                ],
            )  # fmt: skip

    with pytest.raises(UserError, match=r"^num_posterior=3: 1 with a deterministic sampler"):
        run_denoise(config("num_posterior=3", "sampler.steps=4"), "ddim")
    info = run_denoise(
        config("num_posterior=3", "sampler.steps=4", "sampler.eta=1.0", "estimate_std=false"),
        "ddim",
    )
    assert info["settings"]["methods"] == ["noisy", "posterior_sample", "posterior_mean"]
    (level,) = info["levels"]
    assert level["psnr_posterior_mean"] >= level["psnr_posterior_sample"] - 1.0
    assert abs(level["estimated_std"] - 0.5) < 0.1
    GlobalHydra.instance().clear()


def test_a_run_whose_saved_data_root_is_gone_reads_the_data_root_of_this_machine(
    tmp_path, monkeypatch
):
    """A run copied from another machine (or written with ``root: data``): DDPM_DATA_ROOT
    serves; without it, the dataset's one-line error, not Hydra's block."""
    from omegaconf import OmegaConf

    from ddpm.denoise import eval_digits
    from ddpm.errors import UserError

    run_cfg = OmegaConf.create({"dataset": {"_target_": "ddpm.data.idx.Mnist", "root": "gone"}})
    run_cfg.dataset.update(
        {k: v for k, v in preset_node("dataset", "mnist").items() if k != "root"}
    )
    cfg = OmegaConf.create({"dataset": {"root": None}, "seed": 0})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DDPM_DATA_ROOT", str(DATA_ROOT))
    assert eval_digits(run_cfg, cfg, 5).shape == (5, 1, 28, 28)
    monkeypatch.delenv("DDPM_DATA_ROOT")
    run_cfg.dataset.download = False
    with pytest.raises(UserError) as err:
        eval_digits(run_cfg, cfg, 5)
    assert str(err.value).startswith("dataset.root='gone'") and "\n" not in str(err.value)


def preset_node(group: str, option: str) -> dict:
    """The yaml's keys of one option (resolved), without its target."""
    from omegaconf import OmegaConf

    from ddpm.configs.presets import _preset_config

    node = OmegaConf.to_container(_preset_config(group, option)[group], resolve=True)
    return {k: v for k, v in node.items() if k != "_target_"}


# --- your own images: input= ------------------------------------------------------------------

SHARED_CHECKPOINT = CONF.parent.parent / "shared" / "checkpoints" / "small-cosine-ema-22ep.pt"
needs_checkpoint = pytest.mark.skipif(
    not SHARED_CHECKPOINT.is_file(), reason="no shared checkpoint"
)


def _input_config(tmp_path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="denoise",
            overrides=[f"checkpoint={SHARED_CHECKPOINT}", "device=cpu", "sampler.steps=20",
                       f"out_dir={tmp_path / 'out'}", "noise_std=auto", *overrides],
        )  # fmt: skip
    GlobalHydra.instance().clear()
    return cfg


@needs_checkpoint
@needs_mnist
def test_your_own_noisy_pngs_come_back_denoised_at_their_own_size_and_mode(tmp_path):
    import numpy as np

    from ddpm.data import mnist
    from ddpm.denoise import denoise_input

    digits = mnist(DATA_ROOT, train=False, download=False).images[:3]  # [-1, 1]
    noise = 0.3 * torch.randn(digits.shape, generator=torch.Generator().manual_seed(0))
    noisy = ((digits + noise).clamp(-1, 1) + 1) * 127.5
    folder = tmp_path / "mine"
    folder.mkdir()
    pixels = [noisy[k, 0].round().byte().numpy() for k in range(3)]
    Image.fromarray(pixels[0]).save(folder / "a.png")  # 28x28 grey
    Image.fromarray(pixels[1]).convert("RGB").save(folder / "b.png")  # 28x28 RGB
    Image.fromarray(pixels[2]).resize((56, 56), Image.NEAREST).save(folder / "c.png")  # 56x56
    info = denoise_input(_input_config(tmp_path, f"input={folder}", "noise_std=auto"), "ddim")

    out = tmp_path / "out"
    for name, size, mode in (("a", (28, 28), "L"), ("b", (28, 28), "RGB"), ("c", (56, 56), "L")):
        with Image.open(out / f"{name}.png") as img:
            assert (img.size, img.mode) == (size, mode)
    assert (out / "denoise.png").is_file() and (out / "denoise.json").is_file()
    for k, name in enumerate("ab"):
        with Image.open(out / f"{name}.png") as img:
            cleaned = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32)) / 127.5 - 1
        before = psnr(((noisy[k] / 127.5) - 1)[None], digits[k : k + 1])
        after = psnr(cleaned[None, None], digits[k : k + 1])
        assert after > before + 3.0  # dB
    # The noise the files hold: 0.3, less what clamping to [0, 255] cut off the background.
    present = ((noisy / 127.5 - 1) - digits).flatten(1).std(1)
    estimates = torch.tensor([item["noise_std"] for item in info["images"]])
    assert torch.allclose(estimates[:2], present[:2], rtol=0.3), (estimates, present)


@needs_checkpoint
@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        (lambda d: d / "nope", [], "input='{path}': no such file or folder"),
        (lambda d: d.mkdir() or d, [], "input='{path}': a folder with no images"),
        (
            lambda d: d.with_suffix(".png").write_text("text") and d.with_suffix(".png"),
            [],
            "input='{path}': not a readable image",
        ),
        (
            lambda d: Image.new("L", (40, 40)).save(d.with_suffix(".png")) or d.with_suffix(".png"),
            ["resize=false"],
            "resize=False: x.png is 40x40, the model takes 28x28",
        ),
        (
            lambda d: Image.new("L", (28, 28)).save(d.with_suffix(".png")) or d.with_suffix(".png"),
            ["noise_std=[0.1,0.3]"],
            "noise_std=[0.1, 0.3]: auto (estimated per image) or one number",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, make, overrides, message):
    from ddpm.denoise import denoise_input
    from ddpm.errors import UserError

    path = make(tmp_path / "x")
    with pytest.raises(UserError) as err:
        denoise_input(_input_config(tmp_path, f"input={path}", *overrides), "ddim")
    assert str(err.value).startswith(message.format(path=path)), str(err.value)
    assert not (tmp_path / "out").exists()
