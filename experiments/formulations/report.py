"""The formulations table, FID-against-calls plot and side-by-side grids from a measured sweep.

    python experiments/formulations/report.py outputs/formulations --out experiments/formulations

Reads each run's ``eval/*.json`` (written by ``ddpm.evaluate``) and final grid; writes
``table.md``, ``results.json``, ``fid_vs_nfe.png`` and ``grids.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNS = ("ddpm_eps", "ddpm_v", "flow_uniform", "flow_logit_normal", "edm")


def read(sweep: Path) -> list[dict]:
    rows = []
    for run in RUNS:
        for path in sorted((sweep / run / "eval").glob("*.json")):
            result = json.loads(path.read_text())
            m = result["metrics"]
            summary = json.loads((sweep / run / "summary.json").read_text())
            rows.append(
                {
                    "run": run,
                    "sampler": result["sampler"],
                    "nfe": result["nfe"],
                    "num_samples": result["num_samples"],
                    "fid": m["fid"],
                    "kid": m["kid"],
                    "precision": m["precision"],
                    "recall": m["recall"],
                    "steps": summary["steps"],
                    "train_images_per_s": summary["images_per_s"],
                    "final_loss": summary["final_loss"],
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| run | sampler | calls (nfe) | samples | FID | KID x1e3 | precision | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (RUNS.index(r["run"]), r["sampler"], r["nfe"])):
        lines.append(
            f"| {r['run']} | {r['sampler']} | {r['nfe']:.0f} | {r['num_samples']} | "
            f"{r['fid']:.1f} | {r['kid']:.1f} | {r['precision']:.3f} | {r['recall']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in RUNS:
        fixed = sorted(
            (r for r in rows if r["run"] == run and r["sampler"] != "adaptive"),
            key=lambda r: r["nfe"],
        )
        if not fixed:
            continue
        line = ax.plot([r["nfe"] for r in fixed], [r["fid"] for r in fixed], "o-", label=run)
        for r in rows:
            if r["run"] == run and r["sampler"] == "adaptive":
                ax.plot(r["nfe"], r["fid"], "*", ms=12, color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls per image (star: dopri5, fewer samples)")
    ax.set_ylabel("FID (project evaluator)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def grids(sweep: Path, out: Path) -> None:
    found = [(run, sorted((sweep / run / "samples").glob("grid_*.png"))) for run in RUNS]
    found = [(run, paths[-1]) for run, paths in found if paths]
    fig, axes = plt.subplots(1, len(found), figsize=(3 * len(found), 3.3))
    for ax, (run, path) in zip(axes if len(found) > 1 else [axes], found, strict=True):
        ax.imshow(plt.imread(path), cmap="gray")
        ax.set_title(run, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/formulations"))
    args = parser.parse_args()
    rows = read(args.sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "table.md").write_text(table(rows))
    plot(rows, args.out / "fid_vs_nfe.png")
    grids(args.sweep, args.out / "grids.png")
    print(table(rows))


if __name__ == "__main__":
    main()
