"""``python -m ddpm.compare <multirun dir>``: the offline twin of W&B's run comparison.

Reads each job's ``.hydra/`` files, ``metrics.jsonl``, ``summary.json`` and every
``eval/*.json`` (no network; :mod:`ddpm.comparison.jobs`), prints a table of the swept
overrides against final loss, throughput and any quality metrics (:mod:`ddpm.comparison.table`),
and writes ``comparison.md`` and ``comparison.png`` into the sweep dir.

A FID is comparable only with FIDs of the same sampler, network calls and sample count, so each
quality metric gets one column per evaluation (``FID [ddim/50 calls/1000 samples]``); the run's
own measurement during training (``trainer.eval_every``) is one evaluation too, told apart by a
``training:`` prefix. Jobs that differ only in ``replicate_keys`` (``trainer.seed``) are one
setting: one row with ``n`` seeds and each metric's mean, std and 95% interval; below the table,
each quality column's best setting (or every setting against a named ``baseline``) says whether
the gap is established.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddpm.comparison.figure import Curve, Progress, comparison_figure
from ddpm.comparison.jobs import Job, compare_defaults, find_jobs, settings
from ddpm.comparison.progress import quality_over_time
from ddpm.comparison.stats import summarize
from ddpm.comparison.table import (
    LEGEND,
    comparisons,
    comparisons_text,
    markdown,
    metrics,
    quality_columns,
    table_rows,
)
from ddpm.comparison.wandb_run import log_comparison
from ddpm.errors import plain, require
from ddpm.frontend.cli import hydra_command
from ddpm.runs.viz import Figure, plt

log = logging.getLogger("ddpm")


def progress(jobs: list[Job], colors: dict[str, str]) -> tuple[list[Progress], str]:
    """Each setting's FID during training against its training minutes, from the jobs whose
    own measurement (``trainer.eval_every``) is the sweep's first training-FID column (the
    same sampler, calls and samples: comparable), and that column's label."""
    columns = [e for e, key, _, _ in quality_columns(jobs) if key == "fid" and e.training]
    if not columns:
        return [], ""
    out = []
    for s in settings(jobs):
        points: dict[int, list[tuple[float, float]]] = {}
        for job in (j for j in s.jobs if columns[0] in j.evals and j.batch_size):
            for step, point in quality_over_time(job.metrics, job.batch_size).items():
                points.setdefault(step, []).append(point)
        if points:
            out.append(Progress(s.label, points, colors[s.label]))
    return out, f"FID [{columns[0].label}]"


def loss_figure(jobs: list[Job], title: str) -> Figure:
    """Loss curves, one colour per setting (mean over its seeds, a min-max band), labelled by
    its overrides, a failed job's own curve dashed; beside them, when any FID was measured,
    the first FID column per setting with its 95% interval, and when runs measured FID at two
    or more steps of training, FID against training minutes."""
    curves, colors = [], {}
    for i, s in enumerate(settings(jobs)):
        colors[s.label] = f"C{i % 10}"
        losses: dict[int, list[float]] = {}
        for r in (r for job in s.jobs for r in job.metrics if "loss" in r):
            losses.setdefault(r["step"], []).append(r["loss"])
        curves.append(Curve(s.label, losses, colors[s.label]))
    for job in (j for j in jobs if j.failure is not None):
        losses = {r["step"]: [r["loss"]] for r in job.metrics if "loss" in r}
        label = f"{job.label} (#{job.path.name}, failed)"
        curves.append(Curve(label, losses, colors.get(job.label), failed=True))
    fids = [m for m in metrics(jobs)[1] if m.key == "fid"]
    if not fids:
        return comparison_figure(curves, title)
    points = [(s.label, summarize(list(v.values())), colors[s.label])
              for s in settings(jobs) if (v := s.values(fids[0].read))]  # fmt: skip
    return comparison_figure(curves, title, points, fids[0].header, *progress(jobs, colors))


def plot(jobs: list[Job], path: Path) -> Path:
    fig = loss_figure(jobs, path.parent.name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def wandb_summary(jobs: list[Job]) -> dict[str, Any]:
    """``<setting>/<metric>/{mean,std,ci95_low,ci95_high,n}`` for the loss (``final_loss``) and
    every quality column (its header); std and interval are None at n=1."""
    loss, quality, _ = metrics(jobs)
    out: dict[str, Any] = {}
    for s in settings(jobs):
        for m in (*loss, *quality):
            values = list(s.values(m.read).values())
            if values:
                stat, name = summarize(values), f"{s.label}/{m.key if m in loss else m.header}"
                out |= {f"{name}/mean": stat.mean, f"{name}/std": stat.std,
                        f"{name}/ci95_low": stat.low, f"{name}/ci95_high": stat.high,
                        f"{name}/n": stat.n}  # fmt: skip
    return out


def wandb_init(jobs: list[Job], sweep_dir: Path) -> dict[str, Any]:
    """The compare run's name, config, and the project, entity and group of the sweep's own
    runs (their saved ``logger`` keys, the tracker's group rule), so it lands beside them."""
    from ddpm.configs.presets import CONF_DIR

    logger = OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml")
    saved = [j.path / ".hydra" / "config.yaml" for j in jobs]
    cfg = next((OmegaConf.load(f) for f in saved if f.is_file()), OmegaConf.create())
    if OmegaConf.select(cfg, "logger.project", default=None) is not None:
        logger = OmegaConf.merge(logger, cfg.logger)
    experiment = OmegaConf.select(cfg, "experiment_name", default=None)
    group = logger.get("group") or (
        f"{experiment}-{sweep_dir.name}" if experiment else sweep_dir.name
    )
    return {
        "project": logger.project,
        "entity": logger.get("entity"),
        "group": group,
        "name": f"compare {sweep_dir.name}",
        "config": {"sweep_dir": str(sweep_dir), "jobs": len(jobs)},
    }


@dataclass
class Report:
    """What compare prints: the table, then the comparisons section."""

    table: str
    comparisons: str
    seeds: bool = False  # some setting has n >= 2: the table needs its legend

    @property
    def text(self) -> str:
        legend = f"{LEGEND}\n\n" if self.seeds else ""
        return f"{self.table}\n\n{legend}{self.comparisons}"


def report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    replicate_keys: Sequence[str] | None = None,
    wandb: bool | None = None,
    baseline: str | None = None,
) -> Report:
    """Reads the sweep, writes comparison.md and comparison.png into ``out_dir`` (default:
    the sweep dir) and, with ``wandb``, one offline W&B run; None = conf/compare.yaml's.
    ``baseline``: a setting's label; every other setting is tested against it."""
    defaults = compare_defaults()
    keys = defaults.replicate_keys if replicate_keys is None else replicate_keys
    keys = plain(keys)
    wandb = defaults.wandb if wandb is None else wandb
    require(isinstance(keys, list | tuple) and all(isinstance(k, str) for k in keys),
            "replicate_keys", keys, "a list of config keys, e.g. [trainer.seed]")  # fmt: skip
    require(isinstance(wandb, bool), "wandb", wandb, "true or false")
    sweep_dir = Path(sweep_dir).expanduser()
    jobs = find_jobs(sweep_dir, keys)
    out = Path(out_dir).expanduser() if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    head, rows = table_rows(jobs)
    seeds = any(len(s.jobs) > 1 for s in settings(jobs))
    found = comparisons(jobs, baseline)
    result = Report(markdown(head, rows), comparisons_text(found, baseline), seeds)
    (out / "comparison.md").write_text(
        f"# {sweep_dir.name}\n\n{result.text}\n\n![loss curves](comparison.png)\n"
    )
    plot(jobs, out / "comparison.png")
    if wandb:
        plain_rows = [[cell.strip("`") for cell in row] for row in rows]
        log_comparison(out, wandb_init(jobs, sweep_dir), wandb_summary(jobs), head, plain_rows)
    return result


def compare(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    replicate_keys: Sequence[str] | None = None,
    wandb: bool | None = None,
) -> str:
    """The table as markdown (see :func:`report`, which writes the files)."""
    return report(sweep_dir, out_dir, replicate_keys, wandb).table


def main(cfg: DictConfig) -> None:
    print(report(cfg.sweep_dir, cfg.out_dir, cfg.replicate_keys, cfg.wandb, cfg.baseline).text)
    out = Path(cfg.out_dir or cfg.sweep_dir)
    print(f"wrote {out / 'comparison.md'} and comparison.png")


def folder_as_key(argv: list[str]) -> list[str]:
    """``ddpm-compare DIR`` reads as ``sweep_dir=DIR``."""
    return [a if "=" in a or a.startswith("-") else f"sweep_dir={a}" for a in argv]


cli = hydra_command("ddpm-compare", __doc__, "compare", main, rewrite=folder_as_key)

if __name__ == "__main__":
    cli()
