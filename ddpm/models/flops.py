"""Model FLOPs per image, for turning a measured images/s into achieved TFLOP/s.

Counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix products
and convolutions (2 FLOPs per multiply-add) and nothing else: norms, activations, additions
and the optimizer step are left out, as in the usual "model FLOPs" convention. Attention runs
on the math backend while counting, so its two matrix products are counted on every device
(the fused CPU kernel is unknown to the counter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def flops_per_image(
    model: nn.Module, image_shape: Sequence[int], batch_size: int = 2
) -> dict[str, int]:
    """Forward and forward+backward FLOPs per image of shape ``(channels, height, width)``.

    The backward pass is what a training step does: gradients for the parameters only (the
    input image needs none), so it is about twice the forward. Parameters' ``.grad`` is left
    untouched; the model's train/eval mode is kept (dropout costs no FLOPs either way).
    """
    param = next(model.parameters())
    x = torch.randn(batch_size, *image_shape, device=param.device, dtype=param.dtype)
    t = torch.zeros(batch_size, dtype=torch.long, device=param.device)
    params = [p for p in model.parameters() if p.requires_grad]
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as forward:
            out = model(x, t)
        with FlopCounterMode(display=False) as backward:
            torch.autograd.grad(out.float().square().mean(), params, allow_unused=True)
    fwd = forward.get_total_flops() // batch_size
    bwd = backward.get_total_flops() // batch_size
    return {"forward": fwd, "backward": bwd, "forward_backward": fwd + bwd}
