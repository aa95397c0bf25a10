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
import re
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torchvision.utils import make_grid

from ddpm.data import load_dataset
from ddpm.denoisers.baselines import BASELINES, best_of, estimate_std, psnr, ssim
from ddpm.denoisers.files import read_pictures, write_picture
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import is_int, is_number, plain, require
from ddpm.frontend.cli import hydra_command, sampler_choice
from ddpm.runs.load import data_root, load_for_sampling, output_dir
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


def _check(cfg: DictConfig) -> dict[str, list[float]]:
    """The command's own keys; returns the baselines and the strengths each tries."""
    for key in ("num_images", "num_eval", "batch_size", "num_posterior"):
        require(is_int(cfg[key], 1), key, cfg[key], "an integer >= 1")
    require(isinstance(cfg.estimate_std, bool), "estimate_std", cfg.estimate_std, "true or false")
    baselines = plain(cfg.baselines) or {}
    require(
        isinstance(baselines, dict) and set(baselines) <= set(BASELINES),
        "baselines",
        baselines,
        f"a mapping from some of {', '.join(BASELINES)} to the strengths each tries",
    )
    for name, strengths in baselines.items():
        ok = isinstance(strengths, list) and bool(strengths)
        ok = ok and all(is_number(v) and v > 0 for v in strengths)
        require(ok, f"baselines.{name}", strengths, "a non-empty list of numbers > 0")
    return baselines


def posterior_draws(cfg: DictConfig, sampler: Sampler, sampler_name: str) -> int:
    """``num_posterior``: more than one reconstruction needs a sampler that draws noise."""
    draws = cfg.num_posterior
    require(
        draws == 1 or sampler.stochastic,
        "num_posterior",
        draws,
        f"1 with a deterministic sampler ({sampler_name}); posterior samples need a stochastic "
        "one: sampler=ddpm, sampler=dpm_solver_pp_sde, or sampler=ddim sampler.eta=1",
    )
    return draws


def eval_digits(run_cfg: DictConfig, cfg: DictConfig, count: int) -> Tensor:
    """``count`` test images of the run's dataset in [-1, 1], a seeded random choice from its
    test split (an image folder has no split: its own images)."""
    overrides: dict[str, Any] = {"train": False}
    root = data_root(run_cfg, cfg.dataset.root)
    if root is not None:
        overrides["root"] = root
    data = load_dataset(run_cfg.dataset, **overrides)
    have = len(data.images)
    require(count <= have, "num_eval", count, f"the test split has only {have} images")
    order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(cfg.seed))
    return data.images[order[:count]]


def denoise_each(
    model: nn.Module,
    sampler: Sampler,
    noisy: Tensor,
    stds: Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Every image denoised from the timestep matched to its own noise std (images that share
    a timestep go through together, ``batch_size`` at a time)."""
    steps = torch.tensor([matched_timestep(sampler.schedule, float(v)) for v in stds])
    out = torch.empty_like(noisy)
    for t in steps.unique().tolist():
        index = (steps == t).nonzero().flatten().to(noisy.device)
        plan = sampler.starting_at(t)
        for b in range(0, len(index), batch_size):
            part = index[b : b + batch_size]
            out[part] = denoise_from(model, plan, noisy[part], t, generator)
    return out


def spread_as_image(std: Tensor) -> Tensor:
    """A per-pixel std map drawn in model range: 0 black, the largest std in view white."""
    return std / std.max().clamp(min=1e-8) * 2.0 - 1.0


def save_figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per noise level: clean, noisy, the diffusion rows, then the baselines."""
    count = next(iter(rows[0]["pictures"].values())).shape[0]
    names = list(rows[0]["pictures"])
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(0.5 * count + 3.4, 0.55 * len(names) * len(rows) + 0.6 * len(rows)),
        squeeze=False,
    )  # fmt: skip
    for ax, row in zip(axes[:, 0], rows, strict=True):
        stack = torch.cat([row["pictures"][name] for name in names]).cpu()
        grid = make_grid(to_unit(stack), nrow=count, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0.0, vmax=1.0)
        cell = grid.shape[1] / len(names)
        labels = [
            name if f"psnr_{name}" not in row else f"{name} {row[f'psnr_{name}']:.1f} dB"
            for name in names
        ]
        ax.set_yticks([cell * (k + 0.5) for k in range(len(names))])
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"noise std {row['noise_std']:g} (t={row['t']})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(info: dict[str, Any], out: Path) -> None:
    """``denoise.md`` (a table to read) and ``denoise.json`` (the same numbers, for code)."""
    s = info["settings"]
    methods = s["methods"]
    lines = [
        f"# Denoising with {s['checkpoint']}",
        "",
        f"Sampler `{s['sampler']}` ({s['sampler_config']}) started at the timestep t whose "
        "noise level sqrt((1 - ab_t)/ab_t) is closest to the noise std, on "
        f"{s['num_eval']} test images of {s['dataset']} (seed {s['seed']}). PSNR in dB / SSIM "
        "on [0, 1] pixels ((x + 1)/2, clamped), mean over images. `denoised`: one reverse "
        "process; `posterior_sample` / `posterior_mean`: one of, and the mean of, "
        f"{s['num_posterior']} stochastic ones; `at_estimate`: started at each image's "
        "estimated noise std instead of the true one. Baselines: each at the strength of "
        f"{s['baselines']} (multiples of the noise std; blur: sigma in pixels) with the best "
        "mean PSNR on the first 256 of these images (an oracle choice, which flatters them).",
        "",
        "| noise std | t | estimated std | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for r in info["levels"]:
        cells = [f"{r[f'psnr_{m}']:.2f} / {r[f'ssim_{m}']:.3f}" for m in methods]
        lines.append(
            f"| {r['noise_std']:g} | {r['t']} | {r['estimated_std']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    (out / "denoise.md").write_text("\n".join(lines) + "\n")
    (out / "denoise.json").write_text(json.dumps(info, indent=2) + "\n")


def run_denoise(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """Noises test images at each ``cfg.noise_std``, denoises them with the model and the
    baselines, writes the figure and the report."""
    levels = _as_levels(cfg.noise_std)
    baselines = _check(cfg)
    job = load_for_sampling(cfg)
    run_cfg, model, schedule, sampler, ckpt, device = (
        job.config,
        job.model,
        job.schedule,
        job.sampler,
        job.checkpoint,
        job.device,
    )
    posterior = posterior_draws(cfg, sampler, sampler_name)
    name = job.tagged(job.setting(sampler_name))
    out = output_dir(cfg.out_dir, cfg.run_dir, ckpt, "denoise", name)

    count = max(cfg.num_images, cfg.num_eval)
    clean = eval_digits(run_cfg, cfg, count).to(device)
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    top = float(noise_levels(schedule)[-1])
    shown = slice(0, cfg.num_images)
    for sigma in levels:
        if sigma > top:
            log.warning("noise std %g is beyond the schedule's noisiest step (%.3f)", sigma, top)
        noisy = clean + sigma * unit
        t = matched_timestep(schedule, sigma)
        true_stds = torch.full((count,), sigma)
        draws = [
            denoise_each(model, sampler, noisy, true_stds, cfg.batch_size, generator)
            for _ in range(posterior)
        ]
        results = {"noisy": noisy}
        if posterior == 1:
            results["denoised"] = draws[0]
        else:
            results["posterior_sample"] = draws[0]
            results["posterior_mean"] = torch.stack(draws).mean(0)
        estimated = estimate_std(noisy)
        if cfg.estimate_std:
            results["at_estimate"] = denoise_each(
                model, sampler, noisy, estimated, cfg.batch_size, generator
            )
        strengths = {}
        for base, tried in baselines.items():
            strengths[base], results[base] = best_of(
                BASELINES[base], tuple(float(v) for v in tried), noisy, clean, sigma
            )
        row: dict[str, Any] = {
            "noise_std": sigma,
            "t": t,
            "noise_level_t": float(noise_levels(schedule)[t]),
            "steps": len(sampler.starting_at(t).timesteps),
            "estimated_std": float(estimated.mean()),
            "estimated_std_abs_error": float((estimated - sigma).abs().mean()),
            "strengths": strengths,
        }
        for method, images in results.items():
            row[f"psnr_{method}"] = psnr(images, clean).mean().item()
            row[f"ssim_{method}"] = ssim(images, clean).mean().item()
        log.info(
            "noise std %g: t=%d, estimated %.3f; PSNR %s",
            sigma,
            t,
            row["estimated_std"],
            ", ".join(f"{m} {row[f'psnr_{m}']:.2f}" for m in results),
        )
        pictures = {"clean": clean[shown]} | {m: v[shown] for m, v in results.items()}
        if posterior > 1:
            spread = torch.stack(draws).std(0)[shown]
            pictures["posterior_std"] = spread_as_image(spread)
        rows.append(row | {"pictures": pictures})
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
        "num_posterior": posterior,
        "dataset": str(run_cfg.dataset.get("_target_", "ddpm.data.Mnist")).rsplit(".", 1)[-1],
        "seed": cfg.seed,
        "baselines": baselines,
        "methods": [m for m in results],
        "device": str(device),
        "seconds": took,
        "psnr": "dB on [0, 1] pixels, (x + 1)/2 clamped, mean over images",
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    levels_out = [{k: v for k, v in r.items() if k != "pictures"} for r in rows]
    info = {"settings": settings, "levels": levels_out, "out_dir": str(out)}
    write_report(info, out)
    log.info("wrote %s (denoise.png, denoise.md, denoise.json) in %.1f s", out, took)
    return info


def denoise_input(cfg: DictConfig, sampler_name: str = "sampler") -> dict[str, Any]:
    """``input=<image|folder>``: the user's own noisy images, each denoised from the timestep
    of its noise std (``noise_std=auto``: estimated per image; or one number for all), and
    written as a PNG of its own size and mode, with a side-by-side figure."""
    _check(cfg)
    std = cfg.noise_std
    auto = std == "auto"
    require(
        auto or (is_number(std) and std > 0),
        "noise_std",
        plain(std),
        "auto (estimated per image) or one number > 0 in [-1, 1] pixel units, with input=",
    )
    require(isinstance(cfg.resize, bool), "resize", cfg.resize, "true or false")
    job = load_for_sampling(cfg)
    model, sampler, device = job.model, job.sampler, job.device
    posterior_draws(cfg, sampler, sampler_name)
    pictures = read_pictures(cfg.input, model.in_channels, model.image_size, cfg.resize)
    source = Path(cfg.input).expanduser()
    default = (
        source.parent / "denoised"
        if source.is_file()
        else source.with_name(f"{source.name}_denoised")
    )
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir else default
    noisy = torch.stack([p.image for p in pictures]).to(device)
    stds = estimate_std(noisy) if auto else torch.full((len(pictures),), float(std))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start = time.perf_counter()
    draws = [
        denoise_each(model, sampler, noisy, stds, cfg.batch_size, generator)
        for _ in range(cfg.num_posterior)
    ]
    took = time.perf_counter() - start
    denoised = torch.stack(draws).mean(0)
    written = [write_picture(img, pic, out) for img, pic in zip(denoised, pictures, strict=True)]
    shown = slice(0, cfg.num_images)
    pictures_shown = {"noisy": noisy[shown], "denoised": denoised[shown]}
    if cfg.num_posterior > 1:
        pictures_shown["posterior_std"] = spread_as_image(torch.stack(draws).std(0)[shown])
    t_shown = sorted({matched_timestep(sampler.schedule, float(v)) for v in stds[shown]})
    row = {"noise_std": float(stds[shown].mean()), "t": t_shown, "pictures": pictures_shown}
    save_figure([row], out / "denoise.png")
    images = [
        {"input": str(p.path), "output": str(w), "noise_std": float(v), "auto": auto}
        for p, w, v in zip(pictures, written, stds.tolist(), strict=True)
    ]
    info = {
        "checkpoint": str(job.checkpoint),
        "sampler": sampler_name,
        "num_posterior": cfg.num_posterior,
        "seconds": took,
        "seconds_per_image": took / len(pictures),
        "images": images,
        "out_dir": str(out),
    }
    (out / "denoise.json").write_text(json.dumps(info, indent=2) + "\n")
    for item in images:
        log.info("%s: noise std %.3f%s", item["input"], item["noise_std"], " (estimated)" * auto)
    log.info(
        "wrote %d images to %s (%.2f s per image on %s)",
        len(images),
        out,
        took / len(images),
        device,
    )
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
    if cfg.input is not None:
        denoise_input(cfg, sampler_choice())
    else:
        run_denoise(cfg, sampler_choice())


cli = hydra_command("ddpm-denoise", __doc__, "denoise", main, rewrite=comma_lists_as_lists)

if __name__ == "__main__":
    cli()
