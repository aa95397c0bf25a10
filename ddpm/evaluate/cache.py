"""Where the evaluator lives on disk: its weights and the MNIST-test reference next to them.

The cache folder is ``$DDPM_CACHE_DIR/evaluator`` (default ``~/.cache/ddpm/evaluator``) and
holds two files, both written atomically and read with ``weights_only=True``:

- ``classifier.pt``: ``{"model": state_dict, "meta": {arch, test_accuracy, epochs, seed, ...}}``
- ``reference.pt``: MNIST-test feature mean and covariance (float64) and the 10k test features
  themselves (float16, 2.5 MB) for KID and precision/recall, tagged with the weights' build id.

A missing cache is built on first use (one training run, minutes on a CPU).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ddpm import checkpoint as ckpt
from ddpm.data import ImageDataset, mnist
from ddpm.errors import UserError, is_int, require
from ddpm.evaluate.classifier import MnistClassifier, accuracy, train_classifier
from ddpm.evaluate.metrics import Reference, compute_reference

log = logging.getLogger("ddpm")

FORMAT = 1
EPOCHS = 3
WEIGHTS, REFERENCE = "classifier.pt", "reference.pt"
MINUTES_PER_EPOCH_CPU = 3  # measured on a busy shared 2-core CPU; a GPU takes seconds


def default_dir() -> Path:
    """``$DDPM_CACHE_DIR/evaluator``, or ``~/.cache/ddpm/evaluator`` when it is unset."""
    root = os.environ.get("DDPM_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ddpm"
    return base / "evaluator"


def resolve_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_dir()


def _mnist(data_root: str | Path | None, train: bool, download: bool = True) -> ImageDataset:
    """MNIST from ``data_root`` (default ``$DDPM_DATA_ROOT``, else ``./data``)."""
    root = data_root if data_root is not None else os.environ.get("DDPM_DATA_ROOT", "data")
    return mnist(root, train=train, download=download)


def _save_reference(ref: Reference, path: Path, build_id: str) -> None:
    state = {
        "format": FORMAT,
        "build_id": build_id,
        "split": "mnist-test",
        "mean": ref.mean,
        "cov": ref.cov,
        "count": ref.count,
        "features": ref.features.to(torch.float16),
    }
    ckpt.save(state, path)


def build(
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    epochs: int = EPOCHS,
    seed: int = 0,
    device: torch.device | str = "cpu",
    download: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Trains the evaluator on MNIST train (its first ``limit`` digits when set), measures it
    on MNIST test, writes both cache files."""
    require(is_int(epochs, 1), "epochs", epochs, "an integer >= 1")
    require(limit is None or is_int(limit, 10), "limit", limit, "null or an integer >= 10")
    folder = resolve_dir(cache_dir)
    train, test = _mnist(data_root, True, download), _mnist(data_root, False, download)
    if limit is not None:
        train = ImageDataset(train.images[:limit], train.labels[:limit], train.name)
    start = time.perf_counter()
    model = train_classifier(train, epochs=epochs, seed=seed, device=device)
    seconds = time.perf_counter() - start
    meta = {
        "format": FORMAT,
        "arch": model.arch(),
        "test_accuracy": accuracy(model, test),
        "epochs": epochs,
        "train_images": len(train),
        "seed": seed,
        "train_seconds": seconds,
        "device": str(device),
        "torch": str(torch.__version__),  # TorchVersion would not load weights-only
        "build_id": f"{seed}-{time.time_ns():x}",
    }
    # reference first: weights on disk always have their matching reference next to them
    _save_reference(compute_reference(model, test.images), folder / REFERENCE, meta["build_id"])
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt.save({"model": weights, "meta": meta}, folder / WEIGHTS)
    log.info(
        "evaluator: test accuracy %.4f after %d epochs (%.1f min) -> %s",
        meta["test_accuracy"],
        epochs,
        seconds / 60,
        folder,
    )
    return meta


def _load_weights(path: Path, device: torch.device | str) -> MnistClassifier:
    state = ckpt.load(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in state:
        raise UserError(
            f"evaluator {str(path)!r}: not a format-{FORMAT} ddpm evaluator; delete it or rebuild "
            f"with: python -m ddpm.evaluate.build cache_dir={path.parent}"
        )
    try:
        model = MnistClassifier(**meta["arch"])
    except TypeError as err:
        raise UserError(f"evaluator {str(path)!r}: unknown architecture ({err})") from None
    ckpt.load_weights(model, state["model"], path)
    model.meta = meta
    return model.to(device).eval()


def _load_reference(path: Path, build_id: str) -> Reference | None:
    """The cached reference, or None when it is missing or belongs to other weights."""
    if not path.is_file():
        return None
    state = ckpt.load(path)
    if state.get("format") != FORMAT or state.get("build_id") != build_id:
        return None
    return Reference(
        mean=state["mean"],
        cov=state["cov"],
        features=state["features"].to(torch.float32),
        count=int(state["count"]),
    )


def load_evaluator(
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    *,
    build_missing: bool = True,
    data_root: str | Path | None = None,
) -> tuple[MnistClassifier, Reference]:
    """The cached evaluator (eval mode, on ``device``) and its MNIST-test reference.

    A missing cache is trained on first use when ``build_missing`` (else UserError); MNIST comes
    from ``data_root`` (default ``$DDPM_DATA_ROOT``, else ``./data``).
    """
    folder = resolve_dir(cache_dir)
    if not (folder / WEIGHTS).is_file():
        if not build_missing:
            raise UserError(
                f"evaluator cache {str(folder)!r}: no {WEIGHTS}; build it once with: "
                f"python -m ddpm.evaluate.build cache_dir={folder}"
            )
        on_gpu = torch.device(device).type == "cuda"
        estimate = "<1" if on_gpu else str(EPOCHS * MINUTES_PER_EPOCH_CPU)
        log.info("training the evaluator (one time, ~%s min) into %s", estimate, folder)
        build(folder, data_root, device=device)
    model = _load_weights(folder / WEIGHTS, device)
    ref = _load_reference(folder / REFERENCE, model.meta["build_id"])
    if ref is None:
        if not build_missing:
            raise UserError(
                f"evaluator cache {str(folder)!r}: {REFERENCE} is missing or belongs to other "
                f"weights; rebuild with: python -m ddpm.evaluate.build cache_dir={folder}"
            )
        log.info("computing the MNIST-test reference statistics into %s", folder / REFERENCE)
        test = _mnist(data_root, train=False)
        ref = compute_reference(model, test.images)
        _save_reference(ref, folder / REFERENCE, model.meta["build_id"])
    return model, ref
