"""Where tensors live and in what precision the network runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ddpm.errors import fail, require

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
PRECISIONS = ("fp32", "bf16", "fp16")


def pick_device(name: str) -> torch.device:
    """``auto`` = CUDA when present, else CPU; a named CUDA device must exist."""
    require(
        isinstance(name, str) and DEVICE.match(name) is not None,
        "device",
        name,
        "auto, cpu, mps, cuda or cuda:<index>",
    )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("device", name, "no CUDA device here (use device=cpu or auto)")
    return device


def precision_context(
    precision: str, device: torch.device
) -> Callable[[], AbstractContextManager[None]]:
    """``fp32``: nothing; ``bf16``/``fp16``: autocast on the device (weights stay fp32)."""
    if precision == "fp32":
        return nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype == torch.float16 and device.type != "cuda":
        fail("trainer.precision", precision, "CUDA only here; use bf16 or fp32")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
