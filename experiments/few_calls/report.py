"""Table, FID-vs-calls plot and grids from ``results.jsonl`` (written by measure.sh).

    python experiments/few_calls/report.py [--store /tmp/few_calls] [--baseline 55.3]
    python experiments/few_calls/report.py --results experiments/few_calls/results_flow.jsonl \
        --name flow --store <distill.sh teacher images>/ema --grid ...

The baseline is 1000-step ancestral sampling of the same weights on the same 500 x_T: the
results' own ``ddpm`` 1000-call row when they hold one (flow.sh measures it), else
``--baseline`` (experiments/sampler_quality: FID 55.3 for the shared checkpoint).
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


def plan_of(row: dict) -> str:
    """The plan: a fixed spacing's name, or ``fitted (<solver it was fitted for>)``."""
    if "plan" in row:
        return f"fitted ({Path(row['plan']).stem.split('_nfe')[0]})"
    return row.get("spacing", "linspace")


def name_of(row: dict) -> str:
    """The sampler, and the model when it is not the checkpoint itself (a distilled student)."""
    return row["sampler"] + (f" [{row['model']}]" if "model" in row else "")


def is_baseline(row: dict) -> bool:
    """The 1000-step ancestral row: every ratio's denominator, drawn as the dashed line."""
    return row["sampler"] == "ddpm" and row["nfe"] == 1000


def load(path: Path) -> list[dict]:
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[(name_of(r), plan_of(r), r["nfe"], r["count"])] = r  # a rerun replaces
    return list(rows.values())


def table(rows: list[dict], baseline: float) -> str:
    """FID (and the ratio to 1000 steps) by solver x plan, one column per call count."""
    budgets = sorted({r["nfe"] for r in rows})
    cells: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for r in rows:
        cells[(name_of(r), plan_of(r))][r["nfe"]] = f"{r['fid']:.1f} ({r['fid'] / baseline:.2f}x)"
    head = "| sampler | plan | " + " | ".join(f"{n} calls" for n in budgets) + " |"
    lines = [head, "|---|---|" + "---|" * len(budgets)]
    for (sampler, plan), by in sorted(cells.items()):
        lines.append(f"| {sampler} | {plan} | " + " | ".join(by.get(n, "") for n in budgets) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], baseline: float, out: Path) -> None:
    """Best FID at each call count: fixed plans against fitted ones, ODE against SDE."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if is_baseline(r):
            continue
        family = "SDE" if r["sampler"] in ("dpm_solver_pp_sde", "ddpm") else "ODE"
        kind = "fitted plan" if "plan" in r else "best fixed plan"
        by = groups["distilled student" if "model" in r else f"{family}, {kind}"]
        by[r["nfe"]] = min(by.get(r["nfe"], float("inf")), r["fid"])
    for label, by in sorted(groups.items()):
        xs = sorted(by)
        ax.plot(xs, [by[x] for x in xs], marker="o", label=label)
    ax.axhline(baseline, color="k", ls="--", lw=1, label=f"1000-step ancestral ({baseline:.1f})")
    ax.axhline(1.15 * baseline, color="k", ls=":", lw=1, label="+15%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls per image")
    ax.set_ylabel("FID (500 samples)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def grids(picks: list[tuple[str, Path]], out: Path, count: int = 64) -> None:
    """The first ``count`` images of each stored setting, side by side (same x_T)."""
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.6))
    for ax, (title, file) in zip(axes, picks, strict=True):
        images = torch.load(file)["images"][:count].float() / 255
        ax.imshow(make_grid(images, nrow=8, padding=1)[0], cmap="gray")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--results", default=str(HERE / "results.jsonl"))
    p.add_argument("--baseline", type=float, default=55.3)
    p.add_argument("--store", default="/tmp/few_calls/ema")
    p.add_argument("--grid", nargs="*", default=[], help="title=file.pt under --store")
    p.add_argument("--name", default="", help="suffix of the outputs: table_<name>.md, ...")
    args = p.parse_args()
    rows = load(Path(args.results))
    base = [r["fid"] for r in rows if is_baseline(r)]
    baseline = base[-1] if base else args.baseline
    end = f"_{args.name}" if args.name else ""
    (HERE / f"table{end}.md").write_text(table(rows, baseline) + "\n")
    plot(rows, baseline, HERE / f"fid_vs_nfe{end}.png")
    if args.grid:
        picks = [(t, Path(args.store) / f) for t, _, f in (g.partition("=") for g in args.grid)]
        grids(picks, HERE / f"grids{end}.png")
    print(table(rows, baseline))


if __name__ == "__main__":
    main()
