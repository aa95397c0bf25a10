"""Where each dataset's evaluator lives on disk: its weights and the test-split reference.

One folder per labelled dataset: MNIST's is ``$DDPM_CACHE_DIR/evaluator`` (default
``~/.cache/ddpm/evaluator``, where it always was), every other one
``$DDPM_CACHE_DIR/evaluator/<dataset name>`` (``fashion_mnist``, ``cifar10``). Each holds two
files, both written atomically and read with ``weights_only=True``:

- ``classifier.pt``: ``{"model": state_dict, "meta": {arch, dataset, test_accuracy, ...}}``
- ``reference.pt``: test-split feature mean and covariance (float64) and the test features
  themselves (float16) for KID and precision/recall, tagged with the weights' build id.

A missing cache is built on first use (one training run, minutes on a CPU).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ddpm.configs.presets import preset
from ddpm.data import Cifar10, FashionMnist, ImageDataset, Mnist, mnist
from ddpm.errors import UserError, fail, is_int, require
from ddpm.evaluate.classifier import Classifier, accuracy, train_classifier
from ddpm.evaluate.metrics import Reference, compute_reference
from ddpm.runs import checkpoint as ckpt

log = logging.getLogger("ddpm")

FORMAT = 1
EPOCHS = 3
WEIGHTS, REFERENCE = "classifier.pt", "reference.pt"
MINUTES_PER_EPOCH_CPU = 3  # measured on a busy shared 2-core CPU; a GPU takes seconds
# The labelled datasets that have an evaluator: name -> the class that reads them.
EVALUATED: dict[str, type] = {"mnist": Mnist, "fashion_mnist": FashionMnist, "cifar10": Cifar10}
NO_EVALUATOR = (
    "no trained evaluator for {name} (one is trained for " + ", ".join(EVALUATED) + " only): "
    "FID, KID and precision/recall apply with features=inception (python -m ddpm.evaluate "
    "run_dir=... features=inception); class_entropy, confident_share and label_accuracy do "
    "not apply"
)


def default_dir() -> Path:
    """``$DDPM_CACHE_DIR/evaluator``, or ``~/.cache/ddpm/evaluator`` when it is unset."""
    root = os.environ.get("DDPM_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ddpm"
    return base / "evaluator"


def resolve_dir(cache_dir: str | Path | None, dataset: str = "mnist") -> Path:
    """``cache_dir`` when given, else the dataset's default folder (MNIST's is the top one)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return default_dir() if dataset == "mnist" else default_dir() / dataset


def check_dataset(dataset: str) -> None:
    """UserError unless ``dataset`` has an evaluator (an unlabelled folder never has one)."""
    if dataset not in EVALUATED:
        if dataset == "image_folder":
            raise UserError(NO_EVALUATOR.format(name="image folders"))
        fail("dataset", dataset, f"one of {', '.join(EVALUATED)} (the datasets with an evaluator)")


def dataset_of(node: Any) -> tuple[str, dict[str, Any]]:
    """A run's dataset config -> (the evaluator's dataset name, options for reading it).

    Old checkpoints name the function ``ddpm.data.mnist``; a class names itself. The options
    are what reading the test split needs beyond the root (``checksums`` for CIFAR-10).
    """
    from hydra.utils import get_object

    target = get_object(node["_target_"]) if node is not None else mnist
    name = "mnist" if target is mnist else getattr(target, "name", node["_target_"])
    options = {k: node[k] for k in ("checksums",) if node is not None and k in node}
    return name, options


def evaluator_for(node: Any, key: str, value: object) -> tuple[str, dict[str, Any]]:
    """:func:`dataset_of` for a dataset that has an evaluator; otherwise UserError naming
    ``key=value``, the setting that asked for one. A dataset class without a ``name`` in
    :data:`EVALUATED` has none: it is never scored on another dataset's evaluator."""
    name, options = dataset_of(node)
    if name not in EVALUATED:
        shown = "image folders" if name == "image_folder" else name
        fail(key, value, NO_EVALUATOR.format(name=shown))
    return name, options


def _split(
    dataset: str,
    data_root: str | Path | None,
    train: bool,
    download: bool = True,
    options: dict[str, Any] | None = None,
) -> ImageDataset:
    """A split of ``dataset`` as the evaluator sees it (its canonical size and channels), from
    ``data_root`` (default ``$DDPM_DATA_ROOT``, else ``./data``)."""
    check_dataset(dataset)
    root = data_root if data_root is not None else os.environ.get("DDPM_DATA_ROOT", "data")
    options = {"root": root, "train": train, "download": download, **(options or {})}
    return preset("dataset", dataset, **options).load()


def _mnist(data_root: str | Path | None, train: bool, download: bool = True) -> ImageDataset:
    """MNIST from ``data_root`` (default ``$DDPM_DATA_ROOT``, else ``./data``)."""
    root = data_root if data_root is not None else os.environ.get("DDPM_DATA_ROOT", "data")
    return mnist(root, train=train, download=download)


def _save_reference(ref: Reference, path: Path, build_id: str, dataset: str = "mnist") -> None:
    state = {
        "format": FORMAT,
        "build_id": build_id,
        "split": f"{dataset}-test",
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
    dataset: str = "mnist",
    options: dict[str, Any] | None = None,
    arch: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Trains ``dataset``'s evaluator on its train split (the first ``limit`` images when
    set), measures it on the test split, writes both cache files. ``arch``: the classifier's
    ``width`` / ``feature_dim`` when not its own defaults."""
    require(is_int(epochs, 1), "epochs", epochs, "an integer >= 1")
    require(limit is None or is_int(limit, 10), "limit", limit, "null or an integer >= 10")
    check_dataset(dataset)
    folder = resolve_dir(cache_dir, dataset)
    if dataset == "mnist":  # through the module-level name, which tests stand in for
        train, test = _mnist(data_root, True, download), _mnist(data_root, False, download)
    else:
        train = _split(dataset, data_root, True, download, options)
        test = _split(dataset, data_root, False, download, options)
    if limit is not None:
        train = ImageDataset(train.images[:limit], train.labels[:limit], train.name)
    start = time.perf_counter()
    model = train_classifier(train, epochs=epochs, seed=seed, device=device, arch=arch)
    seconds = time.perf_counter() - start
    meta = {
        "format": FORMAT,
        "arch": model.arch(),
        "dataset": dataset,
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
    reference = compute_reference(model, test.images)
    _save_reference(reference, folder / REFERENCE, meta["build_id"], dataset)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt.save({"model": weights, "meta": meta}, folder / WEIGHTS)
    log.info(
        "evaluator (%s): test accuracy %.4f after %d epochs (%.1f min) -> %s",
        dataset,
        meta["test_accuracy"],
        epochs,
        seconds / 60,
        folder,
    )
    return meta


def _load_weights(path: Path, device: torch.device | str, dataset: str = "mnist") -> Classifier:
    state = ckpt.load(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in state:
        raise UserError(
            f"evaluator {str(path)!r}: not a format-{FORMAT} ddpm evaluator; delete it or rebuild "
            f"with: python -m ddpm.evaluate.build cache_dir={path.parent}"
        )
    if meta.get("dataset", "mnist") != dataset:
        raise UserError(
            f"evaluator {str(path)!r}: trained on {meta.get('dataset', 'mnist')}, not {dataset}; "
            f"point evaluator_dir at {dataset}'s or rebuild with: python -m ddpm.evaluate.build "
            f"dataset={dataset} cache_dir={path.parent}"
        )
    try:
        model = Classifier(**meta["arch"])
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
    dataset: str = "mnist",
    options: dict[str, Any] | None = None,
) -> tuple[Classifier, Reference]:
    """``dataset``'s cached evaluator (eval mode, on ``device``) and its test-split reference.

    A missing cache is trained on first use when ``build_missing`` (else UserError); the data
    comes from ``data_root`` (default ``$DDPM_DATA_ROOT``, else ``./data``).
    """
    check_dataset(dataset)
    folder = resolve_dir(cache_dir, dataset)
    if not (folder / WEIGHTS).is_file():
        if not build_missing:
            raise UserError(
                f"evaluator cache {str(folder)!r}: no {WEIGHTS}; build it once with: "
                f"python -m ddpm.evaluate.build dataset={dataset} cache_dir={folder}"
            )
        on_gpu = torch.device(device).type == "cuda"
        estimate = "<1" if on_gpu else str(EPOCHS * MINUTES_PER_EPOCH_CPU)
        log.info("training the evaluator (one time, ~%s min) into %s", estimate, folder)
        build(folder, data_root, device=device, dataset=dataset, options=options)
    model = _load_weights(folder / WEIGHTS, device, dataset)
    ref = _load_reference(folder / REFERENCE, model.meta["build_id"])
    if ref is None:
        if not build_missing:
            raise UserError(
                f"evaluator cache {str(folder)!r}: {REFERENCE} is missing or belongs to other "
                f"weights; rebuild with: python -m ddpm.evaluate.build dataset={dataset} "
                f"cache_dir={folder}"
            )
        log.info("computing the %s-test reference statistics into %s", dataset, folder / REFERENCE)
        if dataset == "mnist":
            test = _mnist(data_root, train=False)
        else:
            test = _split(dataset, data_root, False, options=options)
        ref = compute_reference(model, test.images)
        _save_reference(ref, folder / REFERENCE, model.meta["build_id"], dataset)
    return model, ref
