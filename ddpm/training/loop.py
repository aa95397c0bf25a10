"""The training loop, top to bottom.

Each step: set the rate (:mod:`ddpm.training.lr_schedule`), draw a batch, noise it at random
timesteps, regress the network's output on the target, clip, update, EMA
(:mod:`ddpm.training.step`). Every ``log_every`` steps the losses
come back from the device and a row is logged; grids, evaluations and checkpoints are plain
calls (:mod:`ddpm.training.outputs`), and so are the post-hoc EMA's snapshots. At the end:
the last snapshots, last checkpoint, final grid, loss curve, summary.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from ddpm.data import ImageDataset, batch_stream
from ddpm.hardware import distributed
from ddpm.processes import Process
from ddpm.training.lr_schedule import set_lr
from ddpm.training.outputs import RunOutputs
from ddpm.training.settings import TrainerSettings
from ddpm.training.state import TrainState
from ddpm.training.step import make_train_step

log = logging.getLogger("ddpm")


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run saved a checkpoint at a step boundary and stops."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint saved")
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


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
    settings: TrainerSettings,
    state: TrainState,
    process: Process,
    data: ImageDataset,
    out: RunOutputs,
    device: torch.device,
    ranks: distributed.Ranks = distributed.SINGLE,
) -> dict[str, Any]:
    """Trains ``state`` on ``data``; ``out`` writes checkpoints, grids and logs (rank 0).

    ``state`` may come from a checkpoint: the data order, RNG streams and loss window carry
    on, so the continuation is the run it interrupted. Under torchrun each rank computes its
    part of every (global) batch.
    """
    step_fn = make_train_step(state, process, settings, device, ranks)
    images = data.images.to(device)
    labels = data.labels.to(device) if state.model.num_classes is not None else None
    total = settings.total_steps(len(images))
    stream = batch_stream(len(images), settings.batch_size, settings.seed, start_step=state.step)
    window, main = state.window, ranks.main
    on_terminal = main and sys.stderr.isatty()  # a log file gets one line per row instead
    bar = tqdm(total=total, initial=state.step, desc="train", disable=not on_terminal)
    wall_start = time.perf_counter()
    with stop_requests() as stop:
        for step in range(state.step + 1, total + 1):
            started = time.perf_counter()
            epoch, idx = next(stream)
            idx = idx.to(device)
            set_lr(state.optimizer, settings.lr_at(step, total, state.train_time_s))
            loss, grad_norm = step_fn(images[idx], None if labels is None else labels[idx])
            window.add(step, loss, len(idx))
            state.step, state.epoch = step, epoch
            state.images_seen += len(idx)
            took = time.perf_counter() - started
            state.train_time_s += took
            window.seconds += took
            bar.update(1)
            last = step == total or state.train_time_s >= settings.budget_s
            stopping = bool(stop)
            if ranks.world > 1:  # every rank stops at the same step, or the others would hang
                flags = torch.tensor([float(last), float(stopping)], device=device)
                last, stopping = (bool(f > 0) for f in distributed.sum_all(flags, ranks))

            if step % settings.log_every == 0 or last:
                state.read_losses(out.last_checkpoint)  # waits for the device; stops on NaN
                row = out.log_row(epoch, total, grad_norm, quiet=on_terminal)
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
            if last:
                break
            if stopping:
                state.read_losses(out.last_checkpoint)
                if main:
                    out.checkpoint(keep=False)
                raise Interrupted(stop[0] if stop else signal.SIGTERM, step)
            if not main:
                continue  # the pictures, evaluations and checkpoints below are rank 0's
            if settings.sample_every and step % settings.sample_every == 0:
                out.grid()
            if settings.eval_every and step % settings.eval_every == 0:
                out.evaluate()
            if state.posthoc_ema and step % settings.posthoc_ema_every == 0:
                out.ema_profiles()
            if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                state.read_losses(out.last_checkpoint)  # never save weights a NaN touched
                out.checkpoint(keep=True)
    bar.close()

    if main:
        if state.posthoc_ema:
            out.ema_profiles()
        out.checkpoint(keep=False)
        out.final_pictures()
    return out.finish(time.perf_counter() - wall_start)
