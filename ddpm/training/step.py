"""One training step, shared by the loop and the benchmark: loss, backward, clip, update, EMAs.

Nothing here reads a value back to the host, so on a GPU the CPU queues step after step
while the device works; the loss and gradient norm come back as device tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ddpm.hardware import distributed
from ddpm.hardware.devices import precision_context
from ddpm.processes import Process
from ddpm.training.settings import TrainerSettings
from ddpm.training.state import TrainState

Step = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]


def make_train_step(
    state: TrainState,
    process: Process,
    settings: TrainerSettings,
    device: torch.device,
    ranks: distributed.Ranks = distributed.SINGLE,
) -> Step:
    """``step(x0, labels) -> (loss, grad_norm)`` for ``state``'s model and optimizer.

    The model runs wrapped for gradient averaging over ranks, compiled when asked, in the
    settings' precision and memory layout; fp16 adds loss scaling (a pass-through otherwise).
    """
    model, optimizer = state.model, state.optimizer
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    forward: nn.Module = distributed.wrap(model, device, ranks)
    if settings.compile:
        mode = None if settings.compile is True else settings.compile
        forward = torch.compile(forward, mode=mode)
    autocast = precision_context(settings.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
    params = list(model.parameters())

    def step(x0: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        x0 = x0.contiguous(memory_format=layout)
        part = ranks.part(len(x0))  # the whole batch for one process
        with autocast():
            loss = process.loss(
                forward,
                x0,
                settings.loss_weighting,
                labels,
                settings.label_dropout,
                part,
            )
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; each part's loss is over the whole batch size
        scaler.scale(loss * ranks.world if ranks.world > 1 else loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if state.ema is not None:
            state.ema.update_parameters(model)
        state.update_posthoc_ema()
        return distributed.sum_all(loss.detach(), ranks), grad_norm

    return step
