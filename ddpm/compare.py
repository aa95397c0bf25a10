"""``python -m ddpm.compare <multirun dir>``: the offline twin of W&B's run comparison.

Reads each job's ``.hydra/overrides.yaml``, ``metrics.jsonl``, ``summary.json`` and newest
``eval/*.json`` (no network), prints a table of the swept overrides against final loss,
throughput and any quality metrics, and writes ``comparison.md`` and ``comparison.png`` into
the sweep dir.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ddpm.errors import UserError
from ddpm.tracking import read_metrics

# Summary keys shown when any job has them (quality metrics arrive with evaluation).
COLUMNS = [
    ("final_loss", "final loss", "{:.4f}"),
    ("fid", "FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("steps", "steps", "{:d}"),
    ("images_per_s", "train img/s", "{:.0f}"),
    ("wall_time_s", "wall s", "{:.0f}"),
]


@dataclass
class Job:
    path: Path
    overrides: list[str]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    failure: str | None = None
    label: str = field(default="")


def load_job(path: Path) -> Job:
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    summary_file, failed_file = path / "summary.json", path / "FAILED"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    metrics = read_metrics(path) if (path / "metrics.jsonl").is_file() else []
    failure = failed_file.read_text().strip() if failed_file.is_file() else None
    # Quality measured after training (python -m ddpm.evaluate) fills what the run did not log.
    evals = sorted((path / "eval").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if evals and summary:
        summary = {**json.loads(evals[-1].read_text())["metrics"], **summary}
    if failure is None and not summary:
        failure = "no summary.json (still running, or killed)"
    return Job(path, [str(o) for o in overrides], summary, metrics, failure)


def find_jobs(sweep_dir: Path) -> list[Job]:
    if not sweep_dir.is_dir():
        raise UserError(f"sweep dir {str(sweep_dir)!r} does not exist")
    dirs = [d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()]
    if not dirs:
        raise UserError(f"sweep dir {str(sweep_dir)!r} holds no job folders (with .hydra/)")
    jobs = [load_job(d) for d in sorted(dirs, key=lambda d: (len(d.name), d.name))]
    # Label each job by the overrides that differ between jobs: what the sweep varied.
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    for job in jobs:
        varied = [o for o in job.overrides if o not in common]
        job.label = ",".join(varied) or job.path.name
    return jobs


def _cell(job: Job, key: str, fmt: str) -> str:
    value = job.summary.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def table(jobs: list[Job]) -> str:
    """A markdown table: one row per job, columns present in at least one summary."""
    cols = [c for c in COLUMNS if any(c[0] in j.summary for j in jobs)]
    head = ["job", "overrides", *(c[1] for c in cols), "status"]
    rows = [
        [
            j.path.name,
            f"`{j.label}`",
            *(_cell(j, k, f) for k, _, f in cols),
            "ok" if j.failure is None else f"failed: {j.failure}",
        ]
        for j in jobs
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def plot(jobs: list[Job], path: Path) -> Path:
    """Loss curves overlaid, one colour per job, labelled by its overrides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for job in jobs:
        rows = [r for r in job.metrics if "loss" in r]
        if rows:
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=job.label, lw=1.3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(path.parent.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(sweep_dir: str | Path) -> str:
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    text = table(jobs)
    (sweep_dir / "comparison.md").write_text(
        f"# {sweep_dir.name}\n\n{text}\n\n![loss curves](comparison.png)\n"
    )
    plot(jobs, sweep_dir / "comparison.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm.compare", description=__doc__)
    parser.add_argument("sweep_dir", help="a multirun dir, e.g. outputs/multirun/<date_time>")
    args = parser.parse_args(argv)
    try:
        print(compare(args.sweep_dir))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.sweep_dir) / 'comparison.md'} and comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
