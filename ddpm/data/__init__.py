"""Datasets as tensors in memory: the only package that knows file formats.

Each source is one class (what the ``dataset`` config group builds) with ``channels``,
``image_size`` and ``num_classes``, a cheap constructor that checks its keys, and ``load()``
returning an :class:`ImageDataset`: the whole split as one float tensor in [-1, 1], shape
(N, C, H, W). Batches are index slices of it (no per-image Python work, no workers).
"""

from ddpm.data.base import (
    ImageDataset,
    batch_stream,
    check_memory,
    load_dataset,
    to_model_range,
)
from ddpm.data.cifar import Cifar10
from ddpm.data.folder import ImageFolder
from ddpm.data.idx import MNIST_FILES, FashionMnist, Mnist, mnist

__all__ = [
    "MNIST_FILES",
    "Cifar10",
    "FashionMnist",
    "ImageDataset",
    "ImageFolder",
    "Mnist",
    "batch_stream",
    "check_memory",
    "load_dataset",
    "mnist",
    "to_model_range",
]
