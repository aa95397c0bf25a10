"""Collects a run's eval JSONs (from ``python -m ddpm.evaluate``) into a table and a plot.

python experiments/quality_vs_steps/report.py <run_dir> [out_dir]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(run_dir: str, out_dir: str | None = None) -> None:
    out = Path(out_dir or Path(__file__).parent)
    rows = []
    for path in sorted((Path(run_dir) / "eval").glob("*.json")):
        r = json.loads(path.read_text())
        m = r["metrics"]
        eta = r["config"]["sampler"].get("eta")
        name = f"{r['sampler']} eta={eta:g}" if eta else r["sampler"]
        rows.append(
            (
                name,
                r["steps"],
                r["num_samples"],
                m["fid"],
                m["kid"],
                m["precision"],
                m["recall"],
                r["sample_seconds"] / r["num_samples"],
            )
        )
    rows.sort(key=lambda x: (x[0], x[1]))
    lines = [
        "| sampler | steps | samples | FID | KID | precision | recall | s/digit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s} | {n} | {k} | {f:.2f} | {kid:.3f} | {p:.3f} | {rc:.3f} | {t:.3f} |"
        for s, n, k, f, kid, p, rc, t in rows
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in sorted({r[0] for r in rows}):
        pts = [(r[1], r[3]) for r in rows if r[0] == sampler]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=sampler)
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID (MNIST evaluator)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fid_vs_steps.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
