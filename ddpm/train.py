"""The training loop, top to bottom.

Each step: draw a batch, noise it at random timesteps, regress the network's output on the
target, clip the gradient, step the optimizer. Periodic work (log, sample a grid, checkpoint)
hangs off the loop as plain calls. At the end: last checkpoint, final grid, denoising strip,
loss curve, summary.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from ddpm import checkpoint, distributed, viz
from ddpm.data import ImageDataset, batch_stream
from ddpm.diffusion.objective import diffusion_loss
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError
from ddpm.runs import pick_device
from ddpm.samplers.base import Sampler
from ddpm.tracking import Tracker

log = logging.getLogger("ddpm")


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
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Samples from a fixed seed (its own generator: training randomness is untouched);
    ``labels`` (one per image) for a conditional model."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (num, model.in_channels, model.image_size, model.image_size)
    was_training = model.training
    model.eval()
    try:
        return sampler.sample(
            model,
            shape,
            device=device,
            generator=gen,
            record=record or (),
            progress=progress,
            labels=labels,
        )
    finally:
        model.train(was_training)


def ema_update(decay: float) -> Callable[..., None]:
    """EMA with warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates.

    A fixed 0.999 would still weigh the first weights by 0.999^n (37% after 1000 steps), which
    ruins the EMA of a short CPU run; the warm-up reaches the full decay after ~9000 updates.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        updates = int(n)
        d = min(decay, (1 + updates) / (10 + updates))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


def label_rows(num_classes: int, per_row: int) -> torch.Tensor:
    """Labels for a grid with one row per class: 0 x per_row, 1 x per_row, ..."""
    return torch.arange(num_classes).repeat_interleave(per_row)


def precision_context(precision: str, device: torch.device) -> Callable[[], Any]:
    """``fp32``: nothing; ``bf16``/``fp16``: autocast on the device (weights stay fp32)."""
    if precision == "fp32":
        return nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype == torch.float16 and device.type != "cuda":
        raise UserError("trainer.precision='fp16': CUDA only here; use bf16 or fp32")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


class QualityProbe:
    """FID and friends of ``trainer.eval_samples`` fresh samples, for ``trainer.eval_every``.

    Uses the project's MNIST evaluator (built into its cache on first use) and the run's own
    sampler; its sampling and metric randomness never touch the training RNG streams.
    """

    KEYS = ("fid", "kid", "precision", "recall", "class_entropy_norm", "confident_share")

    def __init__(self, cfg: DictConfig, model: nn.Module, sampler: Sampler, device: torch.device):
        from ddpm.evaluate.cache import load_evaluator

        self.model, self.sampler, self.device = model, sampler, device
        self.num, self.seed = cfg.trainer.eval_samples, cfg.trainer.seed
        self.evaluator, self.reference = load_evaluator(
            None, device, data_root=cfg.dataset.get("root")
        )

    def measure(self) -> dict[str, float]:
        from ddpm.evaluate.command import balanced_labels, sample_images
        from ddpm.evaluate.metrics import evaluate_images

        labels = balanced_labels(self.model, self.num)
        images = sample_images(
            self.model, self.sampler, self.num, 500, self.seed + 1, self.device, labels=labels
        )
        metrics = evaluate_images(
            images, self.evaluator, self.reference, seed=self.seed, labels=labels
        )
        keys = (*self.KEYS, "label_accuracy") if labels is not None else self.KEYS
        return {k: float(metrics[k]) for k in keys}


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run saved a checkpoint at a step boundary and stops."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint saved")
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: training stops before the weights are touched."""


@contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Collects SIGINT/SIGTERM into a list the loop checks between steps."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(
    cfg: DictConfig,
    model: nn.Module,
    schedule: NoiseSchedule,
    optimizer: torch.optim.Optimizer,
    sampler: Sampler,
    data: ImageDataset,
    tracker: Tracker,
    run_dir: Path,
    start: dict[str, Any] | None = None,
    ranks: distributed.Ranks = distributed.SINGLE,
) -> dict[str, Any]:
    """Trains ``model`` and writes checkpoints, pictures and metrics under ``run_dir``.

    ``start`` is a checkpoint to continue from: weights, optimizer, RNG streams, the position
    in the data order and the loss history, so the continuation is the run it interrupted.
    ``ranks``: under torchrun, each rank computes its part of every (global) batch and only
    rank 0 writes checkpoints, pictures and evaluations.
    """
    tc = cfg.trainer
    device = distributed.local_device(pick_device(tc.device), ranks)
    model.to(device).train()
    layout = torch.channels_last if tc.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    # What runs the forward pass: the model (wrapped to average gradients over ranks),
    # compiled when asked; the weights stay shared with ``model``.
    forward = distributed.wrap(model, device, ranks)
    forward = torch.compile(forward) if tc.compile else forward
    autocast = precision_context(tc.precision, device)
    # fp16 gradients underflow without loss scaling; for fp32/bf16 the scaler passes through.
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    schedule.to(device)
    images = data.images.to(device)
    conditional = getattr(model, "num_classes", None) is not None
    labels = data.labels.to(device) if conditional else None
    steps = total_steps(cfg, len(images))
    budget_s = tc.max_minutes * 60 if tc.max_minutes else math.inf
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    config = OmegaConf.to_container(cfg, resolve=True)

    # Everything that changes as training goes: the checkpoint holds exactly this.
    progress: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "images_seen": 0,
        "train_time_s": 0.0,
        "history": [],
        "window": {"loss": 0.0, "images": 0, "time": 0.0},
    }
    # An exponential moving average of the weights samples better than the weights themselves.
    ema = None
    if tc.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=ema_update(tc.ema_decay), use_buffers=True)
    shown = ema.module if ema is not None else model  # what sampling and evaluation use
    if start is not None:
        checkpoint.load_weights(model, start["model"], start.get("path", "checkpoint"))
        if ema is not None:
            ema_weights = (
                start.get("ema") or start["model"]
            )  # EMA switched on mid-run: start it here
            checkpoint.load_weights(ema.module, ema_weights, start.get("path", "checkpoint"))
            ema.n_averaged.fill_(start.get("ema_updates", 0))
        optimizer.load_state_dict(start["optimizer"])
        progress.update(start["progress"])
        checkpoint.restore_rng(start["rng"])
        log.info("resumed at step %d (epoch %d)", progress["step"], progress["epoch"])

    def save_checkpoint(keep: bool) -> None:
        """Writes last.pt (and, when ``keep``, a step_<n>.pt; only the newest keep_last stay)."""
        state = {
            "model": model.state_dict(),
            **({"ema": ema.module.state_dict(), "ema_updates": int(ema.n_averaged)} if ema else {}),
            "optimizer": optimizer.state_dict(),
            "progress": progress,
            "rng": checkpoint.capture_rng(),
            "config": config,
            "wandb_run_id": tracker.run_id,
            "step": progress["step"],
        }
        if keep:
            checkpoint.save(state, ckpt_dir / f"step_{progress['step']:07d}.pt")
            if tc.keep_last:
                for old in sorted(ckpt_dir.glob("step_*.pt"))[: -tc.keep_last]:
                    old.unlink()
        path = checkpoint.save(state, ckpt_dir / "last.pt")
        log.info("checkpoint at step %d: %s", progress["step"], path)
        tracker.log_checkpoint(path, progress["step"])

    def sample_grid(step: int, record: list[int] | None = None) -> dict[int, torch.Tensor]:
        """``num_samples`` digits; a conditional run draws a 10x10 grid, one row per class."""
        rows = label_rows(model.num_classes, 10) if conditional else None
        num = tc.num_samples if rows is None else len(rows)
        samples, trajectory = generate(shown, sampler, num, tc.seed, device, record, labels=rows)
        path = viz.save_grid(
            samples, sample_dir / f"grid_{step:07d}.png", nrow=8 if rows is None else 10
        )
        tracker.log_image("samples/grid", path, step, caption=f"step {step}")
        return trajectory

    quality = None
    if tc.eval_every and ranks.main:
        # Building the evaluator (first use) seeds torch: keep the training streams, which
        # every rank must share, untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            quality = QualityProbe(cfg, shown, sampler, device)

    def evaluate(step: int) -> dict[str, float]:
        metrics = quality.measure()
        tracker.log(metrics, step)
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    window, wall_start = progress["window"], time.perf_counter()
    stream = batch_stream(len(images), tc.batch_size, tc.seed, start_step=progress["step"])
    bar = tqdm(
        total=steps,
        initial=progress["step"],
        desc="train",
        dynamic_ncols=True,
        disable=not ranks.main,
    )
    with stop_requests() as stop:
        for step in range(progress["step"] + 1, steps + 1):
            step_start = time.perf_counter()
            epoch, idx = next(stream)
            x0 = images[idx.to(device)].contiguous(memory_format=layout)

            y = labels[idx.to(device)] if conditional else None
            part = ranks.part(len(idx))  # the whole batch for one process
            with autocast():
                loss = diffusion_loss(
                    forward, schedule, x0, tc.loss_weighting, y, tc.label_dropout, part
                )
            # waits for the device, so the timing below is real; summed over ranks' parts
            loss_value = distributed.sum_all(loss.detach(), ranks).item()
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(
                    f"loss is {loss_value} at step {step}: training stopped, weights untouched; "
                    f"the last good checkpoint is {ckpt_dir / 'last.pt'} (try a lower "
                    f"optimizer.lr={cfg.optimizer.lr} or trainer.grad_clip={tc.grad_clip})"
                )
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; each part's loss is over the whole batch size
            scaler.scale(loss * ranks.world if ranks.world > 1 else loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)

            took = time.perf_counter() - step_start
            progress.update(step=step, epoch=epoch)
            progress["images_seen"] += len(idx)
            progress["train_time_s"] += took
            window["loss"] += loss_value * len(idx)
            window["images"] += len(idx)
            window["time"] += took
            bar.update(1)
            last = step == steps or progress["train_time_s"] >= budget_s
            stopping = bool(stop)
            if ranks.world > 1:  # every rank stops at the same step, or the others would hang
                flags = torch.tensor([float(last), float(stopping)], device=device)
                last, stopping = (bool(f > 0) for f in distributed.sum_all(flags, ranks))

            if step % tc.log_every == 0 or last:
                row = {
                    "epoch": epoch,
                    "loss": window["loss"] / window["images"],
                    "lr": optimizer.param_groups[0]["lr"],
                    "grad_norm": float(grad_norm),
                    "images_per_s": window["images"] / window["time"],
                }
                tracker.log(row, step)
                progress["history"].append([step, row["loss"]])
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
                window.update(loss=0.0, images=0, time=0.0)
            if last:
                break
            if stopping:
                if ranks.main:
                    save_checkpoint(keep=False)
                raise Interrupted(stop[0] if stop else signal.SIGTERM, step)
            if not ranks.main:
                continue  # the pictures, evaluations and checkpoints below are rank 0's
            if tc.sample_every and step % tc.sample_every == 0:
                sample_grid(step)
            if tc.eval_every and step % tc.eval_every == 0:
                evaluate(step)
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                save_checkpoint(keep=True)
    bar.close()

    steps = progress["step"]  # fewer than planned when the time budget ran out
    history = progress["history"]
    if ranks.main:
        save_checkpoint(keep=False)
        trajectory = sample_grid(steps, record=viz.progress_steps(len(schedule)))
        strip = viz.save_progress(trajectory, sample_dir / "progress.png")
        tracker.log_image("samples/progress", strip, steps)
        viz.plot_loss([s for s, _ in history], [v for _, v in history], run_dir / "loss.png")

    summary = {
        "final_loss": history[-1][1] if history else float("nan"),
        "steps": steps,
        "epochs": progress["epoch"] + 1,
        "wall_time_s": time.perf_counter() - wall_start,
        "train_time_s": progress["train_time_s"],
        "images_per_s": progress["images_seen"] / max(progress["train_time_s"], 1e-9),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    if quality is not None:
        summary.update(evaluate(steps))
    tracker.summary(summary)
    return summary
