"""``python -m ddpm.compare <multirun dir>``: the offline twin of W&B's run comparison.

Reads each job's ``.hydra/overrides.yaml``, ``metrics.jsonl``, ``summary.json`` and newest
``eval/*.json`` (no network), prints a table of the swept overrides against final loss,
throughput and any quality metrics, and writes ``comparison.md`` and ``comparison.png`` into
the sweep dir.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddpm.errors import UserError
from ddpm.frontend.cli import hydra_command
from ddpm.runs.tracking import read_metrics
from ddpm.runs.viz import Figure, plt

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
    labels = [j.label for j in jobs]
    for job in jobs:  # jobs with the same overrides (a repeated run) are told apart by folder
        if labels.count(job.label) > 1:
            job.label = f"{job.label} (#{job.path.name})"
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


def loss_figure(jobs: list[Job], title: str) -> Figure:
    """Loss curves overlaid, one colour per job, labelled by its overrides."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for job in jobs:
        rows = [r for r in job.metrics if "loss" in r]
        if rows:  # markers, so a run with a single logged point still shows
            ax.plot(
                [r["step"] for r in rows],
                [r["loss"] for r in rows],
                label=job.label,
                lw=1.3,
                marker="o",
                ms=3,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot(jobs: list[Job], path: Path) -> Path:
    fig = loss_figure(jobs, path.parent.name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(sweep_dir: str | Path, out_dir: str | Path | None = None) -> str:
    """The table as markdown; writes comparison.md and comparison.png into ``out_dir``
    (default: the sweep dir)."""
    sweep_dir = Path(sweep_dir).expanduser()
    jobs = find_jobs(sweep_dir)
    out = Path(out_dir).expanduser() if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    text = table(jobs)
    (out / "comparison.md").write_text(
        f"# {sweep_dir.name}\n\n{text}\n\n![loss curves](comparison.png)\n"
    )
    plot(jobs, out / "comparison.png")
    return text


def main(cfg: DictConfig) -> None:
    print(compare(cfg.sweep_dir, cfg.out_dir))
    out = Path(cfg.out_dir or cfg.sweep_dir)
    print(f"wrote {out / 'comparison.md'} and comparison.png")


def folder_as_key(argv: list[str]) -> list[str]:
    """``ddpm-compare DIR`` reads as ``sweep_dir=DIR``."""
    return [a if "=" in a or a.startswith("-") else f"sweep_dir={a}" for a in argv]


cli = hydra_command("ddpm-compare", __doc__, "compare", main, rewrite=folder_as_key)

if __name__ == "__main__":
    cli()
