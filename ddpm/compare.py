"""``python -m ddpm.compare <multirun dir>``: the offline twin of W&B's run comparison.

Reads each job's ``.hydra/`` files, ``metrics.jsonl``, ``summary.json`` and every
``eval/*.json`` (no network), prints a table of the swept overrides against final loss,
throughput and any quality metrics, and writes ``comparison.md`` and ``comparison.png`` into
the sweep dir.

A FID is comparable only with FIDs of the same sampler, network calls and sample count, so each
quality metric gets one column per :class:`Evaluation` (``FID [ddim/50 calls/1000 samples]``);
the run's own measurement during training (``trainer.eval_every``) is one evaluation too, told
apart by a ``training:`` prefix. What a file does not record reads ``unknown``, never a guess.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddpm.errors import UserError
from ddpm.frontend.cli import hydra_command
from ddpm.runs.tracking import read_metrics
from ddpm.runs.viz import Figure, plt

log = logging.getLogger("ddpm")

# Summary keys shown when any job has them (training's own numbers): the loss before the
# quality columns, the rest after them.
LOSS = [("final_loss", "final loss", "{:.4f}")]
COLUMNS = [
    ("steps", "steps", "{:d}"),
    ("images_per_s", "train img/s", "{:.0f}"),
    ("wall_time_s", "wall s", "{:.0f}"),
]
# Quality metrics, one column per evaluation that measured them.
QUALITY = [
    ("fid", "FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
]
ADAPTIVE = "ddpm.samplers.adaptive.AdaptiveODESampler"  # its calls are an outcome, not a setting
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Evaluation:
    """What makes two quality numbers comparable: one table column per distinct value.

    ``extra``: what else sets this evaluation apart (a checkpoint other than last.pt, the raw
    weights, Inception features, a guidance scale, sampler settings that differ between
    evaluations of one sampler/calls/samples), so no column mixes them either.
    """

    training: bool  # measured by the run itself (trainer.eval_every), not by ddpm.evaluate
    sampler: str  # the conf/sampler option, or UNKNOWN
    calls: str  # network calls per image, "adaptive", or UNKNOWN
    samples: str  # images measured, or UNKNOWN
    extra: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        sampler = self.sampler if self.sampler != UNKNOWN else "unknown sampler"
        parts = [sampler, f"{self.calls} calls", f"{self.samples} samples", *self.extra]
        return ("training: " if self.training else "") + "/".join(parts)

    def order(self) -> tuple[bool, str]:
        return (not self.training, self.label)


@dataclass
class Measured:
    """One evaluation of one job before its column is settled: ``settings`` (the sampler's
    config, None when not recorded) is compared across the sweep."""

    key: Evaluation
    settings: dict[str, str] | None
    metrics: dict[str, float]
    newest: float  # file time: of two with one key in a job, the newest is shown


@dataclass
class Job:
    path: Path
    overrides: list[str]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    failure: str | None = None
    label: str = field(default="")
    measured: list[Measured] = field(default_factory=list)
    evals: dict[Evaluation, dict[str, float]] = field(default_factory=dict)


def _text(value: Any) -> str:
    """A number or setting as a label shows it (``50``, not ``50.0``); None is unknown."""
    if value is None:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    """A sampler config as ``key -> text`` (nested keys dotted), the guidance scale left out:
    it is a part of the key of its own."""
    out: dict[str, str] = {}
    for k, v in (node or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{name}."))
        elif name == "_target_":
            out[name] = str(v).rsplit(".", 1)[-1]  # the class: DDIMSampler
        elif name != "guidance_scale":
            out[name] = "null" if v is None else _text(v)
    return out


def _guidance(scale: Any) -> tuple[str, ...]:
    return () if scale is None else (f"w{_text(float(scale))}",)


def _from_eval_file(path: Path) -> Measured | None:
    """An ``eval/*.json`` of ``ddpm.evaluate``; None for a file that is not one."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("compare: %s is not a readable JSON file; skipped", path)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        log.warning("compare: %s holds no metrics; skipped", path)
        return None
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    node = config.get("sampler") if isinstance(config.get("sampler"), dict) else None
    adaptive = node is not None and node.get("_target_") == ADAPTIVE
    calls = "adaptive" if adaptive else _text(record.get("nfe"))
    extra: list[str] = []
    checkpoint = record.get("checkpoint")
    if isinstance(checkpoint, str) and Path(checkpoint).name != "last.pt":
        extra.append(f"@{Path(checkpoint).stem}")
    if config.get("ema") is False:
        extra.append("raw weights")
    evaluator = record.get("evaluator")
    if isinstance(evaluator, dict) and evaluator.get("features", "classifier") != "classifier":
        extra.append(f"{evaluator['features']} features")
    extra.extend(_guidance(record.get("guidance_scale")))
    key = Evaluation(
        False, _text(record.get("sampler")), calls, _text(record.get("num_samples")), tuple(extra)
    )
    return Measured(key, None if node is None else _flat(node), record["metrics"],
                    path.stat().st_mtime)  # fmt: skip


def _sampler_choice(path: Path, overrides: list[str]) -> str:
    """The run's conf/sampler option: Hydra's record of its choices, else a ``sampler=``
    override; UNKNOWN when neither says (a search trial keeps no hydra.yaml)."""
    hydra_file = path / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        choice = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices.sampler")
        if choice is not None:
            return str(choice)
    picked = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("sampler=")]
    return picked[-1] if picked else UNKNOWN


def _from_training(path: Path, summary: dict[str, Any], overrides: list[str]) -> Measured | None:
    """The quality the run measured at its end (``trainer.eval_every``): ``trainer.eval_samples``
    images from the run's own sampler, read from its saved config."""
    metrics = {k: summary[k] for k, _, _ in QUALITY if k in summary}
    if not metrics:
        return None
    config_file = path / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_file) if config_file.is_file() else OmegaConf.create()
    samples = OmegaConf.select(cfg, "trainer.eval_samples", default=None)
    calls, guidance, settings = UNKNOWN, (), None
    try:
        node = OmegaConf.to_container(cfg.sampler, resolve=True)
        settings = _flat(node)
        sampler = _built_sampler(cfg)
        calls = "adaptive" if node.get("_target_") == ADAPTIVE else _text(sampler.nfe)
        if OmegaConf.select(cfg, "model.num_classes", default=None) is not None:
            guidance = _guidance(sampler.guidance_scale)
    except Exception as err:  # noqa: BLE001 - an old or odd config: its calls stay unknown
        log.warning("compare: %s: the sampler of its config did not build (%s)", path, err)
    key = Evaluation(True, _sampler_choice(path, overrides), calls, _text(samples), guidance)
    summary_file = path / "summary.json"
    return Measured(key, settings, metrics, summary_file.stat().st_mtime)


def _built_sampler(cfg: DictConfig) -> Any:
    """The run's sampler on its process's grid, as training built it (its calls per image)."""
    from ddpm.configs.presets import build
    from ddpm.configs.run_config import build_process

    return build(cfg.sampler, schedule=build_process(cfg).grid)


def load_job(path: Path) -> Job:
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    overrides = [str(o) for o in overrides]
    summary_file, failed_file = path / "summary.json", path / "FAILED"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    metrics = read_metrics(path) if (path / "metrics.jsonl").is_file() else []
    failure = failed_file.read_text().strip() if failed_file.is_file() else None
    # Quality measured during training, and after it (python -m ddpm.evaluate): each its own.
    measured = [_from_training(path, summary, overrides)]
    measured += [_from_eval_file(p) for p in sorted((path / "eval").glob("*.json"))]
    if failure is None and not summary:
        failure = "no summary.json (still running, or killed)"
    job = Job(path, overrides, summary, metrics, failure)
    job.measured = [m for m in measured if m is not None]
    return job


def settle(jobs: list[Job]) -> None:
    """Each job's ``evals``: evaluations whose sampler/calls/samples agree but whose sampler
    settings differ (``eta``, ``spacing``, ...) get those settings into their key, so they
    land in separate columns; a record without settings (an older file) gets a column of its
    own. Of two evaluations with one key in a job (measured again), the newest is shown."""
    groups: dict[Evaluation, list[Measured]] = {}
    for m in (m for job in jobs for m in job.measured):
        groups.setdefault(m.key, []).append(m)
    for group in groups.values():
        known = [m.settings for m in group if m.settings is not None]
        names = sorted({k for s in known for k in s})
        differing = [k for k in names if len({s.get(k, UNKNOWN) for s in known}) > 1]
        for m in group:
            if m.settings is None:  # apart from those that say theirs: it may be any of them
                extra = ("sampler settings unknown",) if known else ()
            else:
                extra = tuple(f"{k}={m.settings.get(k, UNKNOWN)}" for k in differing)
            m.key = replace(m.key, extra=(*m.key.extra, *extra))
    for job in jobs:
        job.evals = {}
        for m in sorted(job.measured, key=lambda m: m.newest):
            if m.key in job.evals:
                log.warning("compare: %s: two evaluations as %s; the newest is shown",
                            job.path, m.key.label)  # fmt: skip
            job.evals[m.key] = m.metrics


def find_jobs(sweep_dir: Path) -> list[Job]:
    if not sweep_dir.is_dir():
        raise UserError(f"sweep dir {str(sweep_dir)!r} does not exist")
    dirs = [d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()]
    if not dirs:
        raise UserError(f"sweep dir {str(sweep_dir)!r} holds no job folders (with .hydra/)")
    jobs = [load_job(d) for d in sorted(dirs, key=lambda d: (len(d.name), d.name))]
    settle(jobs)
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


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def quality_columns(jobs: list[Job]) -> list[tuple[Evaluation, str, str, str]]:
    """(evaluation, metric key, header, format) for every metric some job has under that
    evaluation: the FIDs side by side first, then KID, ...; within one metric the
    training-time evaluation first, then the others by name."""
    keys = sorted({k for j in jobs for k in j.evals}, key=Evaluation.order)
    return [
        (e, k, f"{title} [{e.label}]", fmt)
        for k, title, fmt in QUALITY
        for e in keys
        if any(k in j.evals.get(e, {}) for j in jobs)
    ]


def table(jobs: list[Job]) -> str:
    """A markdown table: one row per job; the loss, one column per quality metric and
    evaluation, then the other summary columns present in at least one summary."""
    loss, rest = ([c for c in cs if any(c[0] in j.summary for j in jobs)] for cs in (LOSS, COLUMNS))
    quality = quality_columns(jobs)
    head = ["job", "overrides", *(c[1] for c in loss), *(q[2] for q in quality)]
    head += [*(c[1] for c in rest), "status"]
    rows = [
        [
            j.path.name,
            f"`{j.label}`",
            *(_cell(j.summary.get(k), f) for k, _, f in loss),
            *(_cell(j.evals.get(e, {}).get(k), f) for e, k, _, f in quality),
            *(_cell(j.summary.get(k), f) for k, _, f in rest),
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
