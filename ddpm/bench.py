"""``python -m ddpm.bench model=base``: this pipeline against the seed's, side by side, and
what the training step achieves in each precision and compile variant.

Training: images/s of our loop (the dataset as one tensor, batches by indexing, no workers,
with the config's ``trainer.channels_last``, ``trainer.precision`` and ``trainer.compile``)
against a reference done the seed's way (torchvision DataLoader with ToTensor + Normalize and
2 worker processes, same network, same optimizer, fp32, default layout). Sampling: seconds
per digit of the configured fast sampler against 1000-step ancestral sampling. Rounds
alternate reference and ours, so load from other processes hits both alike; the ratio is
the number to read. Variants (``bench.variants``): the loop's own step in fp32 eager, bf16,
compiled and graphed (CUDA graphs through ``torch.compile(mode="reduce-overhead")``), each
with images/s, seconds per epoch and achieved TFLOP/s from the model's FLOPs per image; and
sampling's network calls (forward only) per call batch and memory layout, as GFLOP/s against
that fp32 step's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from ddpm.configs.presets import CONF_DIR, preset
from ddpm.configs.run_config import Parts, build_parts
from ddpm.configs.unread import named_process
from ddpm.data import batch_stream
from ddpm.errors import UserError, plain, require
from ddpm.frontend.cli import hydra_command
from ddpm.hardware.devices import pick_device
from ddpm.models.flops import flops_per_image
from ddpm.samplers.base import network_call
from ddpm.samplers.generate import generate, memory_format
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
    state = TrainState.create(
        parts.model, parts.optimizer, settings.ema_decay, settings.posthoc_ema_stds
    )
    step_fn = make_train_step(state, parts.process, settings, device)

    def step() -> tuple[int, torch.Tensor]:
        x0 = next(batches).to(device)
        loss, _ = step_fn(x0, None)
        return len(x0), loss

    return step


# Each variant: the trainer settings it changes from the configured ones.
VARIANTS: dict[str, dict[str, object]] = {
    "fp32": {"precision": "fp32", "compile": False, "channels_last": False},
    "channels_last": {"precision": "fp32", "compile": False, "channels_last": True},
    "bf16": {"precision": "bf16", "compile": False},
    "compiled": {"precision": "fp32", "compile": True},
    "bf16_compiled": {"precision": "bf16", "compile": True},
    "graphed": {"precision": "bf16", "compile": "reduce-overhead"},
}


def variant_table(
    cfg: DictConfig,
    device: torch.device,
    batches: Callable[[], Iterator[torch.Tensor]],
    epoch_images: int,
) -> list[dict[str, object]]:
    """One row per ``bench.variants`` entry: the loop's step under that variant's settings.

    A variant that cannot run here (CUDA graphs off CUDA, a compiler error) gets its reason
    instead of numbers, so one missing toolchain does not lose the whole table.
    """
    b = cfg.bench
    variants = plain(b.variants)
    require(
        isinstance(variants, list) and all(v in VARIANTS for v in variants),
        "bench.variants",
        variants,
        f"a list of {', '.join(VARIANTS)}",
    )
    rows: list[dict[str, object]] = []
    for name in variants:
        parts = build_parts(cfg, device)
        shape = (parts.model.in_channels, parts.model.image_size, parts.model.image_size)
        flops = flops_per_image(parts.model, shape)["forward_backward"]
        row: dict[str, object] = {"variant": name, "flops_per_image": flops}
        if VARIANTS[name]["compile"] == "reduce-overhead" and device.type != "cuda":
            rows.append({**row, "skipped": "CUDA graphs need a CUDA device"})
            continue
        settings = replace(parts.settings, **VARIANTS[name])
        try:
            rate = train_rate(
                make_step(parts, batches(), settings, device), b.warmup, b.train_steps
            )
        except Exception as err:  # noqa: BLE001 - e.g. no C++ compiler for torch.compile
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            rows.append({**row, "skipped": f"{type(err).__name__}: {reason}"[:200]})
            continue
        row.update(
            images_per_s=rate,
            seconds_per_epoch=epoch_images / rate,
            achieved_tflops=rate * flops / 1e12,
        )
        rows.append(row)
        log.info("%s: %.1f img/s", name, rate)
    return rows


def forward_rate(model: torch.nn.Module, x: torch.Tensor, calls: int) -> float:
    """Images per second of ``calls`` sampling calls (inference mode) through
    :func:`~ddpm.samplers.base.network_call` on the batch ``x``, after one untimed call."""
    t = torch.full((len(x),), 500, device=x.device)
    with torch.inference_mode():
        network_call(model, x, t)
        start = time.perf_counter()
        for _ in range(calls):
            out = network_call(model, x, t)
        out.sum().item()  # queued GPU work inside the timing
    return len(x) * calls / (time.perf_counter() - start)


def sampling_table(
    cfg: DictConfig, model: torch.nn.Module, device: torch.device, train_gflops: float
) -> list[dict[str, object]]:
    """Sampling's network calls, forward only, per ``bench.call_batches`` entry (images in one
    sampler step) in both memory layouts: GFLOP/s from the model's forward FLOPs and the
    ratio to the training step's (``train_gflops``, the fp32 variant's), side by side in one
    process. A batch larger than a CPU's slice runs as slices (network_call), as sampling does."""
    b = cfg.bench
    sizes = plain(b.call_batches)
    ok = isinstance(sizes, list) and sizes and all(isinstance(n, int) and n > 0 for n in sizes)
    require(ok, "bench.call_batches", sizes, "a list of integers > 0 (images per call)")
    shape = (model.in_channels, model.image_size, model.image_size)
    forward = flops_per_image(model, shape)["forward"]
    was_training, kept = model.training, memory_format(model)
    model.eval()
    rows: list[dict[str, object]] = []
    try:
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            model.to(memory_format=fmt)
            for n in sizes:
                x = torch.randn(n, *shape, device=device).contiguous(memory_format=fmt)
                calls = max(3, b.sample_images * 8 // n)
                rate = forward_rate(model, x, calls)
                gflops = rate * forward / 1e9
                rows.append(
                    {
                        "call_batch": n,
                        "layout": layout,
                        "images_per_s": rate,
                        "gflops": gflops,
                        "vs_training_step": gflops / train_gflops if train_gflops else None,
                    }
                )
                log.info("sampling call of %d (%s): %.1f GFLOP/s", n, layout, gflops)
    finally:
        model.to(memory_format=kept).train(was_training)
    return rows


def process_table(
    cfg: DictConfig,
    device: torch.device,
    batches: Callable[[], Iterator[torch.Tensor]],
) -> list[dict[str, object]]:
    """The loop's step (the configured settings) under each ``bench.processes`` entry, rounds
    interleaved (ddpm, flow, edm, ddpm, ...) so load from other processes hits each alike;
    ``vs_first``: images/s relative to the first that runs. The configured process keeps its
    overrides; a process that refuses the configured model gets its reason instead."""
    b = cfg.bench
    names = plain(b.processes)
    options = sorted(p.stem for p in (CONF_DIR / "process").glob("*.yaml"))
    require(
        isinstance(names, list) and all(n in options for n in names),
        "bench.processes",
        names,
        f"a list of {', '.join(options)}",
    )
    steps, skipped = {}, {}
    for name in names:
        variant, node = cfg.copy(), OmegaConf.load(CONF_DIR / "process" / f"{name}.yaml")
        node.pop("defaults", None)  # meanflow's switch of the network's input: set just below
        if variant.process._target_ != node._target_:  # the configured one keeps its keys
            variant.process = node
            if "interval_input" in variant.model:  # the same net, with the input it needs
                variant.model.interval_input = get_object(node._target_).interval_input
        try:  # e.g. model.prediction=v, which only process=ddpm trains
            parts = build_parts(variant, device)
        except UserError as err:
            skipped[name] = str(err)
            continue
        steps[name] = make_step(parts, batches(), parts.settings, device)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(b.rounds):
        for name in steps:
            rates[name].append(train_rate(steps[name], b.warmup, b.train_steps))
    mean = {name: sum(r) / len(r) for name, r in rates.items()}
    first = next(iter(mean.values()), float("nan"))
    rows: list[dict[str, object]] = []
    for name in names:
        if name in skipped:
            rows.append({"process": name, "skipped": skipped[name]})
            continue
        rows.append({"process": name, "images_per_s": mean[name], "vs_first": mean[name] / first})
        log.info("process %s: %.1f img/s (%.3fx)", name, mean[name], mean[name] / first)
    return rows


def bench(cfg: DictConfig) -> dict:
    b = cfg.bench
    from ddpm.evaluate.cache import dataset_of

    name = dataset_of(cfg.dataset)[0]
    require(
        name == "mnist",
        "dataset",
        name,
        "mnist only: the reference side is the seed's MNIST DataLoader pipeline",
    )
    device = pick_device(cfg.device)
    ours, reference = build_parts(cfg, device), build_parts(cfg, device)
    settings = ours.settings
    schedule = ours.schedule
    images = ours.dataset.load().images.to(device)

    def ours_batches() -> Iterator[torch.Tensor]:
        for _, idx in batch_stream(len(images), settings.batch_size, 0):
            yield images[idx.to(device)]

    variants = variant_table(cfg, device, ours_batches, len(images))
    fp32 = next((r for r in variants if r["variant"] == "fp32" and "skipped" not in r), None)
    train_gflops = 1e3 * float(fp32["achieved_tflops"]) if fp32 else 0.0
    sampling = sampling_table(cfg, ours.model, device, train_gflops) if b.call_batches else []
    processes = process_table(cfg, device, ours_batches) if b.processes else []

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
    ancestral = preset("sampler", "ddpm", schedule=schedule, steps=b.ancestral_steps_timed)
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
        "variants": variants,
        "sampling": sampling,
        "processes": processes,
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
    print("\n| variant | img/s | s/epoch | GFLOP/img (fwd+bwd) | achieved TFLOP/s |")
    print("|---|---|---|---|---|")
    for row in result["variants"]:
        gflop = row["flops_per_image"] / 1e9
        if "skipped" in row:
            print(f"| {row['variant']} | - | - | {gflop:.3f} | {row['skipped']} |")
        else:
            print(
                f"| {row['variant']} | {row['images_per_s']:.1f} | "
                f"{row['seconds_per_epoch']:.2f} | {gflop:.3f} | {row['achieved_tflops']:.4f} |"
            )
    if result["sampling"]:
        print("\n| sampling call | layout | img/s | GFLOP/s (fwd) | vs training step (fp32) |")
        print("|---|---|---|---|---|")
        for row in result["sampling"]:
            vs = row["vs_training_step"]
            print(
                f"| {row['call_batch']} | {row['layout']} | {row['images_per_s']:.0f} | "
                f"{row['gflops']:.1f} | {'-' if vs is None else f'{vs:.2f}x'} |"
            )
    if result["processes"]:
        print("\n| process | img/s | vs " + result["processes"][0]["process"] + " |")
        print("|---|---|---|")
        for row in result["processes"]:
            if "skipped" in row:
                print(f"| {row['process']} | - | {row['skipped']} |")
            else:
                print(f"| {row['process']} | {row['images_per_s']:.1f} | {row['vs_first']:.3f} |")
    if cfg.out_dir:
        out = Path(cfg.out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")


cli = hydra_command("ddpm-bench", __doc__, "bench", main, rewrite=named_process)

if __name__ == "__main__":
    cli()
