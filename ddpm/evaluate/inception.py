"""``evaluate.features=inception``: FID, KID and precision/recall on Inception-v3 features.

The pool features (2048-d) of torchmetrics' FID Inception (torch-fidelity's port of the
TensorFlow FID network), so numbers compare with papers on CIFAR-10. The network's weights
are read from a local file; nothing is downloaded at run time, so offline without the file
the command stops with one line saying what to download and where. Grey images are repeated
to three channels; the network resizes to 299x299 itself. Reference statistics of the
dataset's test split are cached beside the weights, per dataset and split.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ddpm.errors import UserError
from ddpm.evaluate.metrics import Reference
from ddpm.runs import checkpoint as ckpt

log = logging.getLogger("ddpm")

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_NAME
FEATURES = 2048


def weights_path() -> Path:
    """Where the Inception weights are looked for: ``$DDPM_CACHE_DIR/inception/<file>``."""
    from ddpm.evaluate.cache import default_dir

    return default_dir().parent / "inception" / WEIGHTS_NAME


def missing() -> str | None:
    """What is missing for Inception features, as one line, or None when all is there."""
    needs = []
    if importlib.util.find_spec("torch_fidelity") is None:
        needs.append("the package torch-fidelity (pip install torch-fidelity)")
    path = weights_path()
    if not path.is_file():
        needs.append(f"the FID Inception-v3 weights: download {WEIGHTS_URL} to {path}")
    if not needs:
        return None
    return "features='inception': needs " + " and ".join(needs) + " (read offline)"


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] (N, 1 or 3, H, W) -> (N, 2048) Inception pool features.

    ``features_and_logits`` gives no logits (None): class metrics do not apply."""

    def __init__(self) -> None:
        super().__init__()
        problem = missing()
        if problem is not None:
            raise UserError(problem)
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(FEATURES)],
            feature_extractor_weights_path=str(weights_path()),
        )
        self.num_features = FEATURES
        self.meta = {"features": "inception", "weights": str(weights_path())}

    def features(self, x: Tensor) -> Tensor:
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        return self.net(pixels).reshape(len(x), -1).float()

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, None]:
        return self.features(x), None


def load_inception(
    key: str, test_images: Callable[[], Tensor], device: torch.device | str
) -> tuple[InceptionFeatures, Reference]:
    """The Inception extractor and the reference of a test split (cached under ``key``, the
    dataset's name and settings; computed from ``test_images()`` the first time)."""
    from ddpm.evaluate.metrics import compute_reference

    model = InceptionFeatures().to(device).eval()
    cached = weights_path().parent / f"reference_{key}.pt"
    if cached.is_file():
        state = ckpt.load(cached)
        ref = Reference(state["mean"], state["cov"], state["features"].float(), int(state["count"]))
        return model, ref
    log.info("computing the test split's Inception reference into %s", cached)
    ref = compute_reference(model, test_images(), batch_size=100)
    state = {"mean": ref.mean, "cov": ref.cov, "count": ref.count}
    ckpt.save({**state, "features": ref.features.to(torch.float16)}, cached)
    return model, ref
