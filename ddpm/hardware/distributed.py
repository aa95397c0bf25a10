"""Data-parallel training under ``torchrun``: which process this is, and the few collectives
the training loop needs.

``torchrun --nproc_per_node=N -m ddpm.run ...`` starts N copies of the same command; each
reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from its environment. Without them (a plain
``python -m ddpm.run``) everything here is a no-op for one process.

``trainer.batch_size`` is the global batch: every rank draws the same batch indices, timesteps
and noise (same seed, same RNG stream) and computes its own part of them, so N processes train
the same model as one process would, up to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes every file, log and W&B run; the others only compute."""
        return self.rank == 0

    def part(self, batch: int) -> slice:
        """This rank's contiguous share of a batch (``tensor_split`` sizes: they differ by at
        most one image, so a short last batch of an epoch still splits); all of it for one
        process."""
        if self.world == 1:
            return slice(None)
        sizes = [len(c) for c in torch.arange(batch).tensor_split(self.world)]
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])


SINGLE = Ranks()  # one process, no launcher


def launched() -> bool:
    """True when torchrun (or another launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Ranks:
    """Joins the process group when launched by torchrun: NCCL for CUDA, gloo for the CPU.
    ``device`` is ``trainer.device`` as picked (auto = CUDA when present)."""
    if not launched():
        return SINGLE
    if not dist.is_initialized():
        if device.type == "cuda":  # before the first NCCL call: one GPU per rank
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "nccl" if device.type == "cuda" else "gloo"
        # Ranks wait for rank 0's grids and evaluations at the next collective: allow an hour.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=1))
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per process: rank r on a node uses cuda:LOCAL_RANK."""
    if ranks.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object, e.g. the run dir)."""
    if ranks.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_all(values: Tensor, ranks: Ranks) -> Tensor:
    """Element-wise sum over ranks (the loss parts; stop flags)."""
    if ranks.world > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class DataParallel(DistributedDataParallel):
    """DistributedDataParallel that still answers the model's own attributes
    (``prediction``, ``null_label``, ...), so the loss code takes either."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """The model as the training step should call it: wrapped for gradient averaging when
    there are several ranks, untouched otherwise."""
    if ranks.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DataParallel(model, device_ids=ids)
