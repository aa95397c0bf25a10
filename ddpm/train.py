"""The training loop, top to bottom.

Each step: draw a batch, noise it at random timesteps, regress the network's output on the
target, clip the gradient, step the optimizer. Periodic work (log, sample a grid, checkpoint)
hangs off the loop as plain calls. At the end: last checkpoint, final grid, denoising strip,
loss curve, summary.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from ddpm import checkpoint, viz
from ddpm.data import ImageDataset, batch_stream
from ddpm.diffusion.objective import diffusion_loss
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.samplers.base import Sampler
from ddpm.tracking import Tracker


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def total_steps(cfg: DictConfig, num_items: int) -> int:
    """``trainer.max_steps`` when set, else ``trainer.epochs`` full passes."""
    if cfg.trainer.max_steps is not None:
        return int(cfg.trainer.max_steps)
    return int(cfg.trainer.epochs) * math.ceil(num_items / cfg.trainer.batch_size)


def generate(
    model: nn.Module,
    sampler: Sampler,
    num: int,
    seed: int,
    device: torch.device,
    record: list[int] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Samples from a fixed seed (its own generator: training randomness is untouched)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (num, model.in_channels, model.image_size, model.image_size)
    was_training = model.training
    model.eval()
    try:
        return sampler.sample(
            model, shape, device=device, generator=gen, record=record or (), progress=progress
        )
    finally:
        model.train(was_training)


def train(
    cfg: DictConfig,
    model: nn.Module,
    schedule: NoiseSchedule,
    optimizer: torch.optim.Optimizer,
    sampler: Sampler,
    data: ImageDataset,
    tracker: Tracker,
    run_dir: Path,
) -> dict[str, Any]:
    """Trains ``model`` and writes checkpoints, pictures and metrics under ``run_dir``."""
    tc = cfg.trainer
    device = resolve_device(tc.device)
    model.to(device).train()
    schedule.to(device)
    images = data.images.to(device)
    steps = total_steps(cfg, len(images))
    budget_s = tc.max_minutes * 60 if tc.max_minutes else math.inf
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    config = OmegaConf.to_container(cfg, resolve=True)

    def save_checkpoint(step: int, epoch: int, keep: bool) -> None:
        """Writes last.pt (and, when ``keep``, a step_<n>.pt that stays)."""
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": epoch,
            "config": config,
            "torch_rng": torch.get_rng_state(),
        }
        if keep:
            checkpoint.save(state, ckpt_dir / f"step_{step:07d}.pt")
        tracker.log_checkpoint(checkpoint.save(state, ckpt_dir / "last.pt"), step)

    def sample_grid(step: int, record: list[int] | None = None) -> dict[int, torch.Tensor]:
        samples, trajectory = generate(model, sampler, tc.num_samples, tc.seed, device, record)
        path = viz.save_grid(samples, sample_dir / f"grid_{step:07d}.png")
        tracker.log_image("samples/grid", path, step, caption=f"step {step}")
        return trajectory

    history: list[tuple[int, float]] = []
    window_loss, window_images, window_time = 0.0, 0, 0.0
    images_seen, train_time, wall_start = 0, 0.0, time.perf_counter()
    stream = batch_stream(len(images), tc.batch_size, tc.seed)
    bar = tqdm(total=steps, desc="train", dynamic_ncols=True)
    epoch, loss_value = 0, float("nan")
    for step in range(1, steps + 1):
        step_start = time.perf_counter()
        epoch, idx = next(stream)
        x0 = images[idx.to(device)]

        loss = diffusion_loss(model, schedule, x0, tc.loss_weighting)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        loss_value = loss.item()  # also waits for the device, so the timing below is real

        took = time.perf_counter() - step_start
        window_loss += loss_value * len(idx)
        window_images += len(idx)
        window_time += took
        images_seen += len(idx)
        train_time += took
        bar.update(1)
        last = step == steps or train_time >= budget_s

        if step % tc.log_every == 0 or last:
            row = {
                "epoch": epoch,
                "loss": window_loss / window_images,
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
                "images_per_s": window_images / window_time,
            }
            tracker.log(row, step)
            history.append((step, row["loss"]))
            bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
            window_loss, window_images, window_time = 0.0, 0, 0.0
        if last:
            break
        if tc.sample_every and step % tc.sample_every == 0:
            sample_grid(step)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
            save_checkpoint(step, epoch, keep=True)
    bar.close()
    steps = step  # fewer than planned when the time budget ran out

    save_checkpoint(steps, epoch, keep=False)
    trajectory = sample_grid(steps, record=viz.progress_steps(len(schedule)))
    strip = viz.save_progress(trajectory, sample_dir / "progress.png")
    tracker.log_image("samples/progress", strip, steps)
    viz.plot_loss([s for s, _ in history], [v for _, v in history], run_dir / "loss.png")

    summary = {
        "final_loss": history[-1][1] if history else loss_value,
        "steps": steps,
        "epochs": epoch + 1,
        "wall_time_s": time.perf_counter() - wall_start,
        "train_time_s": train_time,
        "images_per_s": images_seen / train_time,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    tracker.summary(summary)
    return summary
