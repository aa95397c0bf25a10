"""Sample-quality metrics on the evaluator's penultimate features, against the test split.

- ``fid``: Frechet distance between Gaussians fitted to the features (torchmetrics' FID,
  fed precomputed features; the reference side is the cached MNIST-test mean/covariance).
- ``fid_bootstrap_std``, ``fid_bootstrap_ci95`` ([low, high]), ``bootstrap`` (resamples), only
  when asked for: FID's sampling error, from the samples' features drawn with replacement.
- ``kid``, ``kid_std``: kernel (cubic polynomial) MMD^2 over random subsets (torchmetrics' KID),
  subset size min(1000, samples, reference).
- ``precision``, ``recall``: k-NN manifolds (Kynkaanniemi et al. 2019, k=3) against a random
  reference subset of the samples' size (the method compares equal-size sets).
- ``class_entropy`` (nats; ``class_entropy_norm`` divides by log of the class count),
  ``confident_share``
  (max softmax >= 0.9) and ``class_share_<c>``: how the evaluator classifies the samples.
- ``label_accuracy`` (and ``label_accuracy_<c>``), conditional samples only: the share the
  evaluator reads as the label each was drawn for.

Features are computed once per image and shared by every metric. An extractor without
logits (Inception features) gives the first four only: the class metrics do not apply.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ddpm.errors import UserError

K_NEIGHBOURS = 3
CONFIDENT = 0.9


@dataclass
class Reference:
    """Real-data features: float64 mean and covariance (FID) and the features (KID, P/R)."""

    mean: Tensor
    cov: Tensor
    features: Tensor
    count: int

    @classmethod
    def from_features(cls, features: Tensor) -> Reference:
        f = features.detach().cpu().to(torch.float64)
        return cls(mean=f.mean(0), cov=torch.cov(f.T), features=f.float(), count=len(f))


class _Given(nn.Module):
    """A torchmetrics "feature extractor" that returns its input: features arrive precomputed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: Tensor) -> Tensor:
        return x


def check_input(evaluator: nn.Module, images: Tensor) -> None:
    """UserError unless ``images`` have the channels and size the evaluator was trained on."""
    channels, size = getattr(evaluator, "in_channels", None), getattr(evaluator, "image_size", None)
    if channels is None or size is None:
        return  # Inception takes any size and 1 or 3 channels
    if tuple(images.shape[1:]) != (channels, size, size):
        name = getattr(evaluator, "meta", {}).get("dataset", "mnist")
        raise UserError(
            f"images of {tuple(images.shape[1:])}: the {name} evaluator takes "
            f"{(channels, size, size)} (train at the dataset's own channels and image_size, or "
            "use evaluate.features=inception)"
        )


@torch.no_grad()
def extract(
    evaluator: nn.Module, images: Tensor, batch_size: int = 1000
) -> tuple[Tensor, Tensor | None]:
    """(features, logits) of ``images`` (clamped to [-1, 1]) as float32 CPU tensors; logits
    are None for an extractor without them."""
    check_input(evaluator, images)
    device = next(evaluator.parameters()).device
    was_training = evaluator.training
    evaluator.eval()
    feats, logits = [], []
    try:
        for chunk in images.detach().split(batch_size):
            f, z = evaluator.features_and_logits(chunk.to(device, torch.float32).clamp(-1, 1))
            feats.append(f.float().cpu())
            if z is not None:
                logits.append(z.float().cpu())
    finally:
        evaluator.train(was_training)
    return torch.cat(feats), torch.cat(logits) if logits else None


def compute_reference(evaluator: nn.Module, images: Tensor, batch_size: int = 1000) -> Reference:
    """The reference statistics of real ``images`` under ``evaluator``."""
    return Reference.from_features(extract(evaluator, images, batch_size)[0])


def frechet_distance(features: Tensor, reference: Reference) -> float:
    """FID of ``features`` (N, D) against the reference's mean and covariance."""
    metric = FrechetInceptionDistance(feature=_Given(features.shape[1]), reset_real_features=False)
    n, mean = reference.count, reference.mean.to(torch.float64)
    # the metric keeps sums; these give back exactly the reference's mean and covariance
    metric.real_features_sum = mean * n
    metric.real_features_cov_sum = reference.cov.to(torch.float64) * (n - 1) + n * mean.outer(mean)
    metric.real_features_num_samples = torch.tensor(n)
    metric.update(features.to(torch.float64), real=False)
    return float(metric.compute())


def fid_bootstrap(
    features: Tensor, reference: Reference, resamples: int, seed: int = 0
) -> dict[str, float | int | list[float]]:
    """FID's own sampling error: the samples' features drawn again with replacement
    ``resamples`` times (seeded; global RNG untouched), FID against the same reference each
    time; their std and 2.5/97.5 percentile interval. How much of a gap between two FIDs the
    sample count alone could make."""
    gen = torch.Generator().manual_seed(seed)
    n = len(features)
    fids = torch.tensor(
        [
            frechet_distance(features[torch.randint(n, (n,), generator=gen)], reference)
            for _ in range(resamples)
        ],
        dtype=torch.float64,
    )
    low, high = torch.quantile(fids, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return {
        "fid_bootstrap_std": float(fids.std()) if resamples > 1 else 0.0,
        "fid_bootstrap_ci95": [float(low), float(high)],
        "bootstrap": resamples,
    }


def kernel_distance(
    features: Tensor,
    reference: Reference,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets); seeded, global RNG left untouched."""
    size = min(subset_size, len(features), len(reference.features))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=_Given(features.shape[1]),
            subsets=subsets,
            subset_size=size,
            reset_real_features=False,
        )
    metric.update(reference.features.to(torch.float64), real=True)
    metric.update(features.to(torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_radii(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    return torch.cat([torch.cdist(c, x).kthvalue(k + 1, dim=1).values for c in x.split(chunk)])


def _inside(points: Tensor, centers: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    """Whether each point lies in at least one ball (center, radius)."""
    return torch.cat([(torch.cdist(c, centers) <= radii).any(1) for c in points.split(chunk)])


def precision_recall(
    features: Tensor, real: Tensor, k: int = K_NEIGHBOURS, seed: int = 0
) -> tuple[float, float]:
    """Improved precision and recall; ``real`` is subsampled to the samples' count if larger."""
    fake, real = features.to(torch.float64), real.to(torch.float64)
    if len(real) > len(fake):
        gen = torch.Generator().manual_seed(seed)
        real = real[torch.randperm(len(real), generator=gen)[: len(fake)]]
    if min(len(fake), len(real)) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples on each side")
    precision = _inside(fake, real, _kth_radii(real, k)).double().mean()
    recall = _inside(real, fake, _kth_radii(fake, k)).double().mean()
    return float(precision), float(recall)


def class_coverage(logits: Tensor, confident: float = CONFIDENT) -> dict[str, float]:
    """How the samples spread over the classes, and how sure the evaluator is about them."""
    probs = logits.to(torch.float64).softmax(1)
    conf, pred = probs.max(1)
    classes = logits.shape[1]
    hist = torch.bincount(pred, minlength=classes).to(torch.float64) / len(pred)
    used = hist[hist > 0]
    entropy = float(-(used * used.log()).sum()) + 0.0  # never -0.0
    out = {
        "class_entropy": entropy,
        "class_entropy_norm": entropy / math.log(classes),
        "confident_share": float((conf >= confident).to(torch.float64).mean()),
    }
    out.update({f"class_share_{c}": float(hist[c]) for c in range(classes)})
    return out


def label_accuracy(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """How often the evaluator reads a conditional sample as the label it was drawn for:
    ``label_accuracy`` overall and ``label_accuracy_<c>`` per requested class."""
    hit = (logits.argmax(1) == labels.to(logits.device)).to(torch.float64)
    out = {"label_accuracy": float(hit.mean())}
    for c in sorted(set(labels.tolist())):
        out[f"label_accuracy_{c}"] = float(hit[labels == c].mean())
    return out


def evaluate_features(
    features: Tensor,
    logits: Tensor | None,
    reference: Reference,
    *,
    labels: Tensor | None = None,
    k: int = K_NEIGHBOURS,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    bootstrap: int = 0,
) -> dict[str, Any]:
    """Every metric from precomputed evaluator outputs (see :func:`evaluate_images`)."""
    kid, kid_std = kernel_distance(features, reference, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(features, reference.features, k, seed)
    return {
        "fid": frechet_distance(features, reference),
        **(fid_bootstrap(features, reference, bootstrap, seed) if bootstrap > 0 else {}),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        **(class_coverage(logits) if logits is not None else {}),
        **(label_accuracy(logits, labels) if labels is not None and logits is not None else {}),
    }


def evaluate_images(
    images: Tensor,
    evaluator: nn.Module,
    reference: Reference,
    *,
    batch_size: int = 1000,
    k: int = K_NEIGHBOURS,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    labels: Tensor | None = None,
    bootstrap: int = 0,
) -> dict[str, Any]:
    """FID, KID, precision/recall and class coverage of ``images`` (N, C, H, W) in [-1, 1];
    with ``labels`` (what each image was drawn as), also the label accuracy; with
    ``bootstrap`` > 0 resamples, also FID's sampling error (:func:`fid_bootstrap`).

    ``evaluator``/``reference``: a matching pair, e.g. the cached MNIST evaluator and its
    test-split reference (:func:`ddpm.evaluate.cache.load_evaluator`). Images are clamped
    to [-1, 1]. Deterministic for a given ``seed`` (KID subsets, P/R subsample).
    """
    if images.dim() != 4 or len(images) <= k:
        raise ValueError(f"images: expected (N, C, H, W) with N > {k}, got {tuple(images.shape)}")
    features, logits = extract(evaluator, images, batch_size)
    return evaluate_features(
        features,
        logits,
        reference,
        k=k,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
        labels=labels,
        bootstrap=bootstrap,
    )
