"""``python -m ddpm.denoise run_dir=<run>``: a trained diffusion model as a Gaussian denoiser.

A noisy image y = x0 + sigma n (n ~ N(0, I), sigma in [-1, 1] pixel units) is, scaled by
sqrt(ab_t), exactly a forward-process sample x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) n when
sigma = sqrt((1 - ab_t) / ab_t). So the timestep is matched as the t whose noise-to-signal
ratio sqrt((1 - ab_t)/ab_t) is closest to sigma (absolute difference, over all T steps), y is
scaled by sqrt(ab_t), and the reverse process runs from t down to 0 with the chosen sampler
(default DDIM, eta = 0: deterministic) on ``sampler.starting_at(t)``, the sampler's own plan
from t down. Every process
(:mod:`ddpm.processes`) shows the sampler its levels as such a table (its grid), so the same
match finds the flow time with t/(1 - t), or the EDM sigma, nearest the noise std.

Works on every dataset: the clean images are the run's dataset's test split, read through
:func:`ddpm.data.load_dataset` from the run's own config. Writes ``denoise.png`` (per noise
level: clean, noisy, denoised and blurred rows), ``denoise.md`` and ``denoise.json``: PSNR
of noisy, denoised and of a Gaussian-blur baseline whose blur sigma is the best of a small
grid on the same images (an oracle choice, which flatters the baseline). PSNR is in dB on
[0, 1] pixels: every image is mapped by (x + 1)/2 and clamped to [0, 1], then
10 log10(1 / MSE) per image, averaged over images.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur
from torchvision.utils import make_grid

from ddpm.data import load_dataset
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_int, is_number, plain, require
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.runs.load import load_for_sampling, output_dir
from ddpm.runs.viz import plt, to_unit
from ddpm.samplers.base import Sampler

log = logging.getLogger("ddpm")


def noise_levels(schedule: NoiseSchedule) -> Tensor:
    """sqrt((1 - ab_t) / ab_t) for every t: the std of x_t / sqrt(ab_t) around x0."""
    return schedule.snr.detach().double().cpu().rsqrt()


def matched_timestep(schedule: NoiseSchedule, sigma: float) -> int:
    """The t whose noise level sqrt((1 - ab_t)/ab_t) is closest to ``sigma``."""
    return int((noise_levels(schedule) - sigma).abs().argmin())


@torch.no_grad()
def denoise(
    model: nn.Module,
    sampler: Sampler,
    noisy: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """The reverse process started from ``noisy`` = x0 + sigma n at the matched timestep.

    Returns the denoised batch and the timestep it started from.
    """
    t = matched_timestep(sampler.schedule, sigma)
    return denoise_from(model, sampler.starting_at(t), noisy, t, generator), t


@torch.no_grad()
def denoise_from(
    model: nn.Module,
    plan: Sampler,
    noisy: Tensor,
    t: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``noisy`` scaled to x_t at timestep ``t``, then ``plan`` (a sampler's
    ``starting_at(t)``) down to the image."""
    x_t = noisy * plan.schedule.sqrt_alpha_bar[t].to(noisy.device)
    was_training = model.training
    model.eval()
    try:
        out, _ = plan.sample(model, noisy.shape, device=noisy.device, generator=generator, x_T=x_t)
    finally:
        model.train(was_training)
    return out


def psnr(images: Tensor, clean: Tensor) -> Tensor:
    """Per-image PSNR in dB on [0, 1] pixels (both mapped by (x + 1)/2, clamped)."""
    mse = (to_unit(images) - to_unit(clean)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=1e-12))


def blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with a kernel of 2 ceil(3 sigma) + 1 pixels."""
    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(images, [size, size], [sigma, sigma])


def best_blur(noisy: Tensor, clean: Tensor, sigmas: list[float]) -> tuple[float, Tensor]:
    """The blur sigma from ``sigmas`` with the highest mean PSNR on these images, and the
    blurred images."""
    best_score, best, best_images = -math.inf, -math.inf, noisy
    for sigma in sigmas:
        images = blur(noisy, sigma)
        score = psnr(images, clean).mean().item()
        if (score, sigma) > (best_score, best):  # a tie goes to the larger sigma
            best_score, best, best_images = score, sigma, images
    return best, best_images


def _as_levels(value: Any) -> list[float]:
    raw = list(value) if isinstance(value, list | tuple | ListConfig) else [value]
    require(
        bool(raw) and all(is_number(v) and v > 0 for v in raw),
        "noise_std",
        value,
        "one number or a list of numbers > 0 in [-1, 1] pixel units, e.g. "
        "noise_std=[0.1,0.3,0.5,0.8]",
    )
    return [float(v) for v in raw]


def _check(cfg: DictConfig) -> None:
    for key in ("num_images", "num_eval", "batch_size"):
        require(is_int(cfg[key], 1), key, cfg[key], "an integer >= 1")
    sigmas = plain(cfg.blur_sigmas)
    ok = bool(sigmas) and all(is_number(s) and s > 0 for s in sigmas)
    require(ok, "blur_sigmas", sigmas, "a non-empty list of numbers > 0")


def eval_digits(run_cfg: DictConfig, cfg: DictConfig, count: int) -> Tensor:
    """``count`` test images of the run's dataset in [-1, 1], a seeded random choice from its
    test split (an image folder has no split: its own images)."""
    overrides: dict[str, Any] = {"train": False}
    if cfg.dataset.root is not None:
        overrides["root"] = cfg.dataset.root
    data = load_dataset(run_cfg.dataset, **overrides)
    have = len(data.images)
    require(count <= have, "num_eval", count, f"the test split has only {have} images")
    order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(cfg.seed))
    return data.images[order[:count]]


def save_figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per noise level: rows clean, noisy, denoised, blurred."""
    count = rows[0]["clean"].shape[0]
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(0.5 * count + 1.6, 2.4 * len(rows)), squeeze=False
    )
    for ax, row in zip(axes[:, 0], rows, strict=True):
        stack = torch.cat([row["clean"], row["noisy"], row["denoised"], row["blur"]]).cpu()
        grid = make_grid(to_unit(stack), nrow=count, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0.0, vmax=1.0)
        cell = grid.shape[1] / 4
        ax.set_yticks([cell * (k + 0.5) for k in range(4)])
        ax.set_yticklabels(["clean", "noisy", "denoised", f"blur {row['blur_sigma']:g}"])
        ax.set_xticks([])
        ax.set_title(
            f"noise std {row['noise_std']:g} (t={row['t']}): noisy {row['psnr_noisy']:.1f} dB, "
            f"denoised {row['psnr_denoised']:.1f} dB, blur {row['psnr_blur']:.1f} dB",
            fontsize=9,
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(info: dict[str, Any], out: Path) -> None:
    """``denoise.md`` (a table to read) and ``denoise.json`` (the same numbers, for code)."""
    s = info["settings"]
    lines = [
        f"# Denoising with {s['checkpoint']}",
        "",
        f"Sampler `{s['sampler']}` ({s['sampler_config']}) started at the timestep t whose "
        "noise level sqrt((1 - ab_t)/ab_t) is closest to the noise std, on "
        f"{s['num_eval']} test images of {s['dataset']} (seed {s['seed']}). PSNR in dB on [0, 1] "
        "pixels "
        "((x + 1)/2, clamped), mean over images. Blur: Gaussian blur with the sigma of "
        f"{s['blur_sigmas']} that scores best on these same images.",
        "",
        "| noise std | t | noise level at t | steps | noisy PSNR | denoised PSNR "
        "| blur PSNR | blur sigma |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in info["levels"]:
        lines.append(
            f"| {r['noise_std']:g} | {r['t']} | {r['noise_level_t']:.3f} | {r['steps']} "
            f"| {r['psnr_noisy']:.2f} | {r['psnr_denoised']:.2f} | {r['psnr_blur']:.2f} "
            f"| {r['blur_sigma']:g} |"
        )
    (out / "denoise.md").write_text("\n".join(lines) + "\n")
    (out / "denoise.json").write_text(json.dumps(info, indent=2) + "\n")


def run_denoise(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """Noises test digits at each ``cfg.noise_std``, denoises them, writes the report."""
    levels = _as_levels(cfg.noise_std)
    _check(cfg)
    job = load_for_sampling(cfg)
    run_cfg, model, schedule, sampler, ckpt, device = (
        job.config,
        job.model,
        job.schedule,
        job.sampler,
        job.checkpoint,
        job.device,
    )
    name = job.tagged(f"{sampler_name}_{len(sampler.timesteps)}")
    out = output_dir(cfg.out_dir, cfg.run_dir, ckpt, "denoise", name)

    count = max(cfg.num_images, cfg.num_eval)
    clean = eval_digits(run_cfg, cfg, count).to(device)
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    top = float(noise_levels(schedule)[-1])
    for sigma in levels:
        if sigma > top:
            log.warning("noise std %g is beyond the schedule's noisiest step (%.3f)", sigma, top)
        noisy = clean + sigma * unit
        t = matched_timestep(schedule, sigma)
        plan = sampler.starting_at(t)
        denoised = torch.cat(
            [
                denoise_from(model, plan, noisy[b : b + cfg.batch_size], t, generator)
                for b in range(0, count, cfg.batch_size)
            ]
        )
        blur_sigma, blurred = best_blur(noisy, clean, [float(v) for v in cfg.blur_sigmas])
        row = {
            "noise_std": sigma,
            "t": t,
            "noise_level_t": float(noise_levels(schedule)[t]),
            "steps": len(plan.timesteps),
            "nfe": plan.nfe,  # network calls per image (the adaptive solver: as counted)
            "psnr_noisy": psnr(noisy, clean).mean().item(),
            "psnr_denoised": psnr(denoised, clean).mean().item(),
            "psnr_blur": psnr(blurred, clean).mean().item(),
            "blur_sigma": blur_sigma,
        }
        log.info(
            "noise std %g: t=%d, PSNR noisy %.2f, denoised %.2f, blur %.2f dB",
            sigma,
            t,
            row["psnr_noisy"],
            row["psnr_denoised"],
            row["psnr_blur"],
        )
        shown = slice(0, cfg.num_images)
        pictures = {"clean": clean[shown], "noisy": noisy[shown]}
        pictures |= {"denoised": denoised[shown], "blur": blurred[shown]}
        rows.append(row | pictures)
    took = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    save_figure(rows, out / "denoise.png")
    sampler_cfg = OmegaConf.to_container(cfg.sampler, resolve=True)
    settings = {
        "checkpoint": str(ckpt),
        "sampler": sampler_name,
        "sampler_config": ", ".join(f"{k} {v}" for k, v in sampler_cfg.items() if k != "_target_"),
        "num_eval": count,
        "num_images": cfg.num_images,
        "dataset": str(run_cfg.dataset.get("_target_", "ddpm.data.Mnist")).rsplit(".", 1)[-1],
        "seed": cfg.seed,
        "blur_sigmas": [float(v) for v in cfg.blur_sigmas],
        "device": str(device),
        "seconds": took,
        "psnr": "dB on [0, 1] pixels, (x + 1)/2 clamped, mean over images",
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    picture_keys = set(pictures)
    levels_out = [{k: v for k, v in r.items() if k not in picture_keys} for r in rows]
    info = {"settings": settings, "levels": levels_out, "out_dir": str(out)}
    write_report(info, out)
    log.info("wrote %s (denoise.png, denoise.md, denoise.json) in %.1f s", out, took)
    return info


_COMMA_LIST = re.compile(r"^noise_std=([^\[\]'\"=]+,[^\[\]'\"=]+)$")


def comma_lists_as_lists(argv: list[str]) -> list[str]:
    """``noise_std=0.1,0.3`` -> ``noise_std=[0.1,0.3]`` unless sweeping (-m/--multirun).

    Hydra reads a bare comma list as a sweep and refuses it without -m; here it can only mean
    the list of noise levels, so it is bracketed before Hydra parses the command line.
    """
    if "-m" in argv or "--multirun" in argv:
        return argv
    return [re.sub(_COMMA_LIST, r"noise_std=[\1]", arg) for arg in argv]


def main(cfg: DictConfig) -> None:
    run_denoise(cfg, sampler_choice())


cli = hydra_command("ddpm-denoise", __doc__, "denoise", main, rewrite=comma_lists_as_lists)

if __name__ == "__main__":
    cli()
