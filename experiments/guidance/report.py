"""Collects a conditional run's eval JSONs (one per guidance scale) into a table and a plot.

python experiments/guidance/report.py <run_dir> [out_dir]

Each JSON comes from ``python -m ddpm.evaluate run_dir=<run> sampler.guidance_scale=<w>``:
every class drawn equally often, FID against MNIST test, and the share of samples the
evaluator reads as the label they were drawn for.
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
    for path in sorted((Path(run_dir) / "eval").glob("*_w*.json")):
        r = json.loads(path.read_text())
        m = r["metrics"]
        per_class = [m.get(f"label_accuracy_{c}", float("nan")) for c in range(10)]
        rows.append((r["guidance_scale"], r["sampler"], r["steps"], r["num_samples"], m, per_class))
    rows.sort(key=lambda x: x[0])
    lines = [
        "| guidance | sampler | samples | FID | precision | recall | label accuracy | "
        "worst digit | digit 7 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w, sampler, steps, n, m, per_class in rows:
        worst = min(range(10), key=lambda c: per_class[c])
        lines.append(
            f"| {w:g} | {sampler} {steps} | {n} | {m['fid']:.1f} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} | {m['label_accuracy']:.3f} | {worst} ({per_class[worst]:.3f}) "
            f"| {per_class[7]:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    print(table)

    scales = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(scales, [r[4]["fid"] for r in rows], "o-", color="tab:blue")
    ax.set_xlabel("guidance scale")
    ax.set_ylabel("FID (lower is better)", color="tab:blue")
    acc = ax.twinx()
    acc.plot(scales, [r[4]["label_accuracy"] for r in rows], "s--", color="tab:red")
    acc.set_ylabel("label accuracy", color="tab:red")
    fig.tight_layout()
    fig.savefig(out / "guidance.png", dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:])
