"""``python -m ddpm.bench model=base``: this pipeline against the seed's, side by side.

Training: images/s of our loop (the dataset as one tensor, batches by indexing, no workers,
with the config's ``trainer.channels_last``, ``trainer.precision`` and ``trainer.compile``)
against a reference done the seed's way (torchvision DataLoader with ToTensor + Normalize and
2 worker processes, same network, same optimizer, fp32, default layout). Sampling: seconds
per digit of the configured fast sampler against 1000-step ancestral sampling. Rounds
alternate reference and ours, so load from other processes hits both alike; the ratio is
the number to read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ddpm.data import batch_stream
from ddpm.diffusion.objective import diffusion_loss
from ddpm.errors import one_line_errors
from ddpm.runs import pick_device
from ddpm.samplers import AncestralSampler
from ddpm.train import generate, precision_context

log = logging.getLogger("ddpm")


def reference_batches(root: str, batch_size: int, workers: int) -> Iterator[torch.Tensor]:
    """The seed's data path: PIL images through ToTensor + Normalize in worker processes."""
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import MNIST

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    loader = DataLoader(
        MNIST(root, train=True, download=False, transform=tf),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    while True:
        for x, _ in loader:
            yield x


def train_rate(step: Callable[[], int], warmup: int, steps: int) -> float:
    """Images per second over ``steps`` training steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    start, images = time.perf_counter(), 0
    for _ in range(steps):
        images += step()
    return images / (time.perf_counter() - start)


def make_step(
    model,
    schedule,
    batches: Iterator[torch.Tensor],
    device,
    channels_last: bool = False,
    precision: str = "fp32",
    compile: bool = False,
):
    """One training step (as in ``ddpm.train``) on the next batch; returns its image count."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    forward = torch.compile(model) if compile else model
    autocast = precision_context(precision, device)

    def step() -> int:
        x0 = next(batches).to(device, memory_format=fmt)
        with autocast():
            loss = diffusion_loss(forward, schedule, x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()
        return len(x0)

    return step


def bench(cfg: DictConfig) -> dict:
    b = cfg.bench
    device = pick_device(cfg.trainer.device)
    torch.manual_seed(0)
    schedule = instantiate(cfg.schedule).to(device)
    data = instantiate(cfg.dataset)
    images = data.images.to(device)

    def ours_batches() -> Iterator[torch.Tensor]:
        for _, idx in batch_stream(len(images), cfg.trainer.batch_size, 0):
            yield images[idx.to(device)]

    ref_model = instantiate(cfg.model).to(device)
    our_model = instantiate(cfg.model).to(device)
    tc = cfg.trainer
    ref_step = make_step(
        ref_model, schedule, reference_batches(cfg.dataset.root, tc.batch_size, 2), device
    )
    our_step = make_step(
        our_model, schedule, ours_batches(), device, tc.channels_last, tc.precision, tc.compile
    )

    rates: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(b.rounds):
        rates["reference"].append(train_rate(ref_step, b.warmup, b.train_steps))
        rates["ours"].append(train_rate(our_step, b.warmup, b.train_steps))
        log.info(
            "round %d: reference %.1f img/s, ours %.1f img/s",
            r + 1,
            rates["reference"][-1],
            rates["ours"][-1],
        )
    ref_train = sum(rates["reference"]) / b.rounds
    our_train = sum(rates["ours"]) / b.rounds

    # Sampling: seconds per digit. The ancestral sampler's cost is one network call per step,
    # so it is timed over `ancestral_steps_timed` of its steps and scaled to all of them.
    n = b.sample_images
    ancestral = AncestralSampler(schedule, steps=b.ancestral_steps_timed)
    start = time.perf_counter()
    generate(our_model, ancestral, n, 0, device)
    ref_per_digit = (time.perf_counter() - start) / n * len(schedule) / b.ancestral_steps_timed
    fast = instantiate(cfg.sampler, schedule=schedule)
    start = time.perf_counter()
    generate(our_model, fast, n, 0, device)
    fast_per_digit = (time.perf_counter() - start) / n

    result = {
        "device": str(device),
        "model_parameters": sum(p.numel() for p in our_model.parameters()),
        "batch_size": cfg.trainer.batch_size,
        "train_images_per_s": {"reference": ref_train, "ours": our_train},
        "train_ratio": our_train / ref_train,
        "sample_seconds_per_digit": {
            f"ddpm_{len(schedule)}": ref_per_digit,
            f"{type(fast).__name__}_{len(fast.timesteps)}": fast_per_digit,
        },
        "sample_ratio": ref_per_digit / fast_per_digit,
        "threads": torch.get_num_threads(),
        "settings": OmegaConf.to_container(b, resolve=True),
        "ours": {k: tc[k] for k in ("channels_last", "precision", "compile")},
    }
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> None:
    result = bench(cfg)
    tr, sp = result["train_images_per_s"], result["sample_seconds_per_digit"]
    (ref_name, ref_s), (fast_name, fast_s) = sp.items()
    print(
        f"train  reference {tr['reference']:.1f} img/s | ours {tr['ours']:.1f} img/s "
        f"| ratio {result['train_ratio']:.2f}x"
    )
    print(
        f"sample {ref_name} {ref_s:.3f} s/digit | {fast_name} {fast_s:.4f} s/digit "
        f"| ratio {result['sample_ratio']:.1f}x"
    )
    if cfg.bench.out:
        Path(cfg.bench.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
