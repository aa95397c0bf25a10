"""FID/KID against network calls for sampler x spacing settings on one checkpoint.

Each setting draws ``--count`` images in batches whose x_T (and sampler noise) come from a
generator seeded with ``seed + batch index``, so every setting starts from the same noise.
Images are kept as uint8 under ``--store`` (not committed; reused by setting, so give each
checkpoint its own store) and scored with the project evaluator; one JSON line per setting is
appended to ``--out``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/sampler_quality/measure.py \
        --weights ema --count 250 --settings 'ddpm:steps=None' 'dpm_solver_pp:steps=20'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from ddpm.configs.presets import preset
from ddpm.runs.load import load_trained
from ddpm.samplers import auto_plan

CHECKPOINT = "/work/shared/checkpoints/small-cosine-ema-22ep.pt"


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' -> (name, kwargs); values are Python literals or strings."""
    name, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = eval(value, {})  # noqa: S307 - our own command line
        except (NameError, SyntaxError):
            kwargs[key] = value
    return name, kwargs


def tag_of(name: str, kwargs: dict[str, Any]) -> str:
    """A file name for a setting (a plan file by its parent folder and stem)."""
    shown = {
        k: f"{Path(v).parent.name}-{Path(v).stem}" if k == "plan" else v for k, v in kwargs.items()
    }
    return name + "".join(f"_{k}={v}" for k, v in sorted(shown.items()))


@torch.no_grad()
def draw(
    model, sampler, count: int, batch: int, seed: int, device: str
) -> tuple[torch.Tensor, float]:
    """uint8 images (count, 1, 28, 28) and the seconds spent drawing them (on a GPU the noise
    comes from a generator on that device: the same seeds, other draws than on the CPU)."""
    out, seconds = [], 0.0
    for b in range((count + batch - 1) // batch):
        n = min(batch, count - b * batch)
        gen = torch.Generator(device).manual_seed(seed + b)
        x_T = torch.randn((n, 1, 28, 28), generator=gen, device=device)
        start = time.perf_counter()
        x, _ = sampler.sample(model, x_T.shape, x_T=x_T, generator=gen)
        if device != "cpu":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out), seconds


def score(images: torch.Tensor, data_root: str, evaluator_dir: str | None) -> dict[str, float]:
    from ddpm.evaluate.cache import load_evaluator
    from ddpm.evaluate.metrics import evaluate_images

    evaluator, reference = load_evaluator(evaluator_dir, "cpu", data_root=data_root)
    x = images.float() / 127.5 - 1.0
    return evaluate_images(x, evaluator, reference, seed=0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--count", type=int, default=250)
    p.add_argument("--batch", type=int, default=125)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default="/tmp/sampler_quality")
    p.add_argument("--out", default="experiments/sampler_quality/results.jsonl")
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--checkpoint", default=CHECKPOINT)
    p.add_argument("--device", default="cpu", help="cpu (one thread) or cuda")
    p.add_argument("--evaluator-dir", default=None, help="default: the cache")
    p.add_argument("--no-score", action="store_true", help="draw only (score later)")
    p.add_argument(
        "--subset-of",
        type=int,
        default=None,
        help="score the first --count images of a stored run of this many (same seeds)",
    )
    p.add_argument("--settings", nargs="+", required=True)
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    # ema: the run's EMA weights (its raw ones when it kept none); the schedule on the device too
    _, model, schedule = load_trained(None, args.checkpoint, args.device, args.weights == "ema")
    store = Path(args.store) / args.weights
    store.mkdir(parents=True, exist_ok=True)
    for text in args.settings:
        name, kwargs = parse_setting(text)
        sampler = preset("sampler", name, schedule=schedule, **kwargs)
        # a preset's plan=auto: fitted to these weights once, cached beside the images
        sampler = auto_plan.resolve(sampler, model, Path(args.store) / "plans", args.device)
        tag = tag_of(name, kwargs)
        on = "" if args.device == "cpu" else f"_{args.device}"
        path = store / f"{tag}_n{args.subset_of or args.count}_s{args.seed}{on}.pt"
        if path.is_file():
            saved = torch.load(path)
            images, seconds = saved["images"], saved["seconds"]
            if args.subset_of:  # batches share seeds, so the first images are the same draws
                seconds *= args.count / len(images)
                images = images[: args.count]
        else:
            images, seconds = draw(model, sampler, args.count, args.batch, args.seed, args.device)
            torch.save({"images": images, "seconds": seconds}, path)
        row: dict[str, Any] = {
            "weights": args.weights,
            "sampler": name,
            **kwargs,
            "nfe": sampler.nfe,
            "count": args.count,
            "seed": args.seed,
            "device": args.device,
            "images_per_s": round(args.count / seconds, 3),
        }
        if not args.no_score:
            metrics = score(images, args.data_root, args.evaluator_dir)
            row.update({k: metrics[k] for k in ("fid", "kid", "kid_std")})
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
