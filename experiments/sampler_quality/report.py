"""Table, FID-vs-NFE plot and sample grids from ``results.jsonl`` (written by measure.py).

    python experiments/sampler_quality/report.py [--store /tmp/sampler_quality] \
        --grid 'ema:dpm_solver_pp_sde:spacing=linspace,steps=10' ...
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
KEYS = ("weights", "sampler", "steps", "spacing", "nfe", "count", "seed", "images_per_s")
METRICS = ("fid", "kid", "kid_std")


def options(row: dict) -> str:
    """The sampler's non-default settings besides steps and spacing, as k=v."""
    extra = {k: v for k, v in row.items() if k not in KEYS + METRICS}
    return ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) or "-"


def load(path: Path) -> list[dict]:
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = json.dumps({k: v for k, v in r.items() if k not in METRICS + ("images_per_s",)})
        rows[key] = r  # a rerun of the same setting replaces the earlier line
    return list(rows.values())


def table(rows: list[dict], baseline: dict[tuple, float]) -> str:
    lines = [
        "| weights | samples | seed | sampler | spacing | options | NFE | FID | vs 1000 | KID "
        "| img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(rows, key=lambda r: (r["weights"], -r["count"], r["nfe"], r["fid"]))
    for r in rows:
        base = baseline.get((r["weights"], r["count"]))
        rel = f"{100 * (r['fid'] / base - 1):+.0f}%" if base else "?"
        lines.append(
            f"| {r['weights']} | {r['count']} | {r['seed']} | {r['sampler']} "
            f"| {r.get('spacing', 'linspace')} "
            f"| {options(r)} | {r['nfe']} | {r['fid']:.1f} | {rel} | {r['kid']:.1f} "
            f"| {r['images_per_s']:.1f} |"
        )
    return "\n".join(lines)


def pivot(rows: list[dict], weights: str, count: int) -> str:
    """FID by (sampler, spacing) and NFE: one row per setting, one column per budget."""
    budgets = [5, 10, 20, 50, 100]
    cells: dict[tuple, dict[int, str]] = defaultdict(dict)
    for r in rows:
        if r["weights"] != weights or r["count"] != count or r["nfe"] >= 1000 or r["seed"]:
            continue
        name = r["sampler"] if options(r) == "-" else f"{r['sampler']} ({options(r)})"
        col = min(budgets, key=lambda b: abs(b - r["nfe"]))
        nfe = "" if r["nfe"] == col else f" ({r['nfe']})"
        cells[(name, r.get("spacing", "linspace"))][col] = f"{r['fid']:.1f}{nfe}"
    lines = []
    for (name, spacing), by in sorted(cells.items()):
        lines.append(f"| {name} | {spacing} | " + " | ".join(by.get(b, "") for b in budgets) + " |")
    return "\n".join(lines)


STYLE = {  # spacing -> line style and marker
    "linspace": ("-", "o"),
    "leading": ("--", "v"),
    "trailing": (":", "^"),
    "quadratic": ("-.", "x"),
    "logsnr": ("-", "s"),
    "karras": ("--", "D"),
}


def plot(rows: list[dict], baseline: dict[tuple, float], out: Path) -> None:
    """One panel per (weights, samples): FID against NFE, colour = sampler, style = spacing."""
    panels = sorted({(r["weights"], r["count"]) for r in rows}, key=lambda p: (p[0], p[1]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 7.0), squeeze=False)
    colours: dict[str, str] = {}
    for ax, (w, n) in zip(axes[0], panels, strict=True):
        lines = defaultdict(list)
        for r in rows:
            if r["weights"] == w and r["count"] == n and r["nfe"] < 1000 and r["seed"] == 0:
                lines[(r["sampler"], options(r), r.get("spacing", "linspace"))].append(
                    (r["nfe"], r["fid"])
                )
        for (sampler, opts, spacing), pts in sorted(lines.items()):
            pts.sort()
            name = sampler if opts == "-" else f"{sampler} ({opts})"
            colour = colours.setdefault(sampler, f"C{len(colours) % 10}")
            ls, marker = STYLE[spacing]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                ls=ls,
                marker=marker,
                color=colour,
                ms=4,
                lw=1,
                label=f"{name}, {spacing}",
            )
        if (w, n) in baseline:
            ax.axhline(baseline[(w, n)], color="k", ls="--", lw=1.2, label="ancestral, 1000 calls")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(40, 320)
        ax.set_xlabel("network calls per image (NFE)")
        ax.set_ylabel(f"FID (project evaluator, {n} samples)")
        ax.set_title(f"{'EMA' if w == 'ema' else 'raw (non-EMA)'} weights, {n} samples", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=5.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def grids(specs: list[str], store: Path, out: Path) -> None:
    """Three (or more) 8x8 panels side by side, the first 64 stored images of each setting."""
    panels, titles = [], []
    for spec in specs:
        weights, name, rest = spec.split(":", 2)
        kwargs = dict(item.split("=", 1) for item in rest.split(","))
        tag = name + "".join(f"_{k}={v}" for k, v in sorted(kwargs.items()))
        path = next((store / weights).glob(f"{tag}_n*_s0.pt"))
        images = torch.load(path)["images"][:64]
        grid = images.reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
        panels.append(grid.numpy())
        titles.append(f"{name} {rest}")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.5))
    for ax, img, title in zip(axes, panels, titles, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--results", default=str(HERE / "results.jsonl"))
    p.add_argument("--store", default="/tmp/sampler_quality")
    p.add_argument("--grid", nargs="*", default=[])
    args = p.parse_args()
    rows = load(Path(args.results))
    baseline = {
        (r["weights"], r["count"]): r["fid"]
        for r in rows
        if r["sampler"] == "ddpm" and r["nfe"] == 1000 and options(r) == "-" and r["seed"] == 0
    }
    text = table(rows, baseline)
    (HERE / "table.md").write_text(text + "\n")
    for w in sorted({r["weights"] for r in rows}):
        (HERE / f"pivot_{w}_200.md").write_text(pivot(rows, w, 200) + "\n")
    plot(rows, baseline, HERE / "fid_vs_nfe.png")
    if args.grid:
        grids(args.grid, Path(args.store), HERE / "grid_best_10_20_50.png")
    print(text)


if __name__ == "__main__":
    main()
