"""The optimizer the ``optimizer`` group builds: torch's Adam(W), its ranges checked here.

Built with ``_partial_: true``; the training code passes the parameters. On CUDA the fused
kernels are used (one launch per step instead of one per tensor); elsewhere torch's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ddpm.errors import is_number, plain, require


def _check(lr: float, betas: Sequence[float], weight_decay: float) -> tuple[float, float]:
    require(is_number(lr) and lr > 0, "optimizer.lr", lr, "a number > 0")
    pair = plain(betas)
    require(
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and all(is_number(b) and 0 <= b < 1 for b in pair),
        "optimizer.betas",
        pair,
        "two numbers in [0, 1)",
    )
    require(
        is_number(weight_decay) and weight_decay >= 0,
        "optimizer.weight_decay",
        weight_decay,
        "a number >= 0",
    )
    return float(pair[0]), float(pair[1])


def _fused(params: list[torch.nn.Parameter]) -> bool | None:
    """Fused kernels when every parameter is on CUDA; None lets torch choose elsewhere."""
    return True if params and all(p.is_cuda for p in params) else None


def adam(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    betas: Sequence[float],
    weight_decay: float,
    decoupled: bool,
) -> torch.optim.Optimizer:
    """AdamW (``decoupled``, the seed's optimizer) or Adam with coupled L2 weight decay."""
    params = list(params)
    pair = _check(lr, betas, weight_decay)
    require(isinstance(decoupled, bool), "optimizer.decoupled", decoupled, "true or false")
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(params, lr=lr, betas=pair, weight_decay=weight_decay, fused=_fused(params))
