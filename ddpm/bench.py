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
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ddpm.cli import hydra_command
from ddpm.config import Parts, build_parts
from ddpm.data import batch_stream
from ddpm.devices import pick_device
from ddpm.samplers import AncestralSampler
from ddpm.sampling import generate
from ddpm.training.settings import TrainerSettings
from ddpm.training.state import TrainState
from ddpm.training.step import make_train_step

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


def train_rate(step: Callable[[], tuple[int, torch.Tensor]], warmup: int, steps: int) -> float:
    """Images per second over ``steps`` training steps after ``warmup`` untimed ones; the
    last loss is read back, so queued GPU work is inside the timing."""
    for _ in range(warmup):
        step()[1].item()
    start, images = time.perf_counter(), 0
    for _ in range(steps):
        n, loss = step()
        images += n
    loss.item()
    return images / (time.perf_counter() - start)


def make_step(
    parts: Parts,
    batches: Iterator[torch.Tensor],
    settings: TrainerSettings,
    device: torch.device,
) -> Callable[[], tuple[int, torch.Tensor]]:
    """The training loop's own step (:func:`ddpm.training.step.make_train_step`) on the next
    batch; returns the batch size and the loss (a device tensor)."""
    state = TrainState.create(parts.model, parts.optimizer, settings.ema_decay)
    step_fn = make_train_step(state, parts.schedule, settings, device)

    def step() -> tuple[int, torch.Tensor]:
        x0 = next(batches).to(device)
        loss, _ = step_fn(x0, None)
        return len(x0), loss

    return step


def bench(cfg: DictConfig) -> dict:
    b = cfg.bench
    device = pick_device(cfg.device)
    ours, reference = build_parts(cfg, device), build_parts(cfg, device)
    settings = ours.settings
    schedule = ours.schedule
    images = ours.dataset.load().images.to(device)

    def ours_batches() -> Iterator[torch.Tensor]:
        for _, idx in batch_stream(len(images), settings.batch_size, 0):
            yield images[idx.to(device)]

    # The seed's way: torchvision's DataLoader, fp32, default layout, no EMA, no compile.
    seed_way = replace(
        settings, precision="fp32", channels_last=False, compile=False, ema_decay=None
    )
    ref_step = make_step(
        reference,
        reference_batches(cfg.dataset.root, settings.batch_size, 2),
        seed_way,
        device,
    )
    our_step = make_step(ours, ours_batches(), settings, device)
    our_model = ours.model

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
    fast = ours.sampler
    start = time.perf_counter()
    generate(our_model, fast, n, 0, device)
    fast_per_digit = (time.perf_counter() - start) / n

    result = {
        "device": str(device),
        "model_parameters": sum(p.numel() for p in our_model.parameters()),
        "batch_size": settings.batch_size,
        "train_images_per_s": {"reference": ref_train, "ours": our_train},
        "train_ratio": our_train / ref_train,
        "sample_seconds_per_digit": {
            f"ddpm_{len(schedule)}": ref_per_digit,
            f"{type(fast).__name__}_{len(fast.timesteps)}": fast_per_digit,
        },
        "sample_ratio": ref_per_digit / fast_per_digit,
        "threads": torch.get_num_threads(),
        "settings": OmegaConf.to_container(b, resolve=True),
        "ours": {k: getattr(settings, k) for k in ("channels_last", "precision", "compile")},
    }
    return result


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
    if cfg.out_dir:
        out = Path(cfg.out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")


cli = hydra_command("ddpm-bench", __doc__, "bench", main)

if __name__ == "__main__":
    cli()
