"""A sweep as ``ddpm.compare`` reads it: each job folder's overrides, summary, loss curve and
evaluations (:class:`Job`), each quality number keyed by what makes it comparable
(:class:`Evaluation`), and jobs that differ only in replicate keys grouped into one
:class:`Setting` (its seeds).

A FID is comparable only with FIDs of the same sampler, network calls and sample count; what a
file does not record reads ``unknown``, never a guess.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddpm.errors import UserError
from ddpm.runs.same_run import flat
from ddpm.runs.tracking import read_metrics

log = logging.getLogger("ddpm")

# Quality metrics, one column per evaluation that measured them.
QUALITY = [
    ("fid", "FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
]
ADAPTIVE = "ddpm.samplers.adaptive.AdaptiveODESampler"  # its calls are an outcome, not a setting
UNKNOWN = "unknown"
NO_OVERRIDES = "base"  # the label of a setting with no override the others lack (a baseline)


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
    label: str = field(default="")  # the setting's: shared by the seeds of one setting
    replicate: tuple[str, ...] = ()  # which seed (``trainer.seed=1``): pairs across settings
    measured: list[Measured] = field(default_factory=list)
    evals: dict[Evaluation, dict[str, float]] = field(default_factory=dict)
    batch_size: int | None = None  # its saved trainer.batch_size: the clock of its metrics rows


def _text(value: Any) -> str:
    """A number or setting as a label shows it (``50``, not ``50.0``); None is unknown."""
    if value is None:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flat(node: Any) -> dict[str, str]:
    """A sampler config as ``key -> text`` (nested keys dotted), the guidance scale left out:
    it is a part of the key of its own."""
    out: dict[str, str] = {}
    for name, v in flat(node or {}).items():
        if name == "_target_":
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
    if config.get("posthoc_ema") is not None:
        extra.append(f"post-hoc EMA {_text(config['posthoc_ema'])}")
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


def _from_training(
    path: Path, summary: dict[str, Any], overrides: list[str], cfg: DictConfig
) -> Measured | None:
    """The quality the run measured at its end (``trainer.eval_every``): ``trainer.eval_samples``
    images from the run's own sampler, read from its saved config ``cfg``."""
    metrics = {k: summary[k] for k, _, _ in QUALITY if k in summary}
    if not metrics:
        return None
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
    config_file = path / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_file) if config_file.is_file() else OmegaConf.create()
    # Quality measured during training, and after it (python -m ddpm.evaluate): each its own.
    measured = [_from_training(path, summary, overrides, cfg)]
    measured += [_from_eval_file(p) for p in sorted((path / "eval").glob("*.json"))]
    if failure is None and not summary:
        failure = "no summary.json (still running, or killed)"
    job = Job(path, overrides, summary, metrics, failure)
    job.measured = [m for m in measured if m is not None]
    job.batch_size = OmegaConf.select(cfg, "trainer.batch_size", default=None)
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


def _key(override: str) -> str:
    """The key an override sets: ``+trainer.seed=1`` -> ``trainer.seed``."""
    return override.split("=", 1)[0].lstrip("+~")


def _replicate_id(job: Job, keys: Sequence[str]) -> tuple[str, ...]:
    """Which replicate a job is (``trainer.seed=1``): its override, else the value its saved
    config holds, so a job that kept the default seed pairs with one that named it."""
    named = {_key(o): o.split("=", 1)[1] for o in job.overrides if _key(o) in keys and "=" in o}
    config_file = job.path / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_file) if config_file.is_file() else None
    out = []
    for key in keys:
        value = named.get(key)
        if value is None and cfg is not None:
            value = _text(OmegaConf.select(cfg, key, default=None))
        out.append(f"{key}={value}")
    return tuple(out)


def find_jobs(sweep_dir: Path, replicate_keys: Sequence[str] | None = None) -> list[Job]:
    """Every job folder of the sweep, read and labelled. Jobs that differ only in
    ``replicate_keys`` (their seeds; None = conf/compare.yaml's) share one label: they are one
    setting. Jobs with the same overrides throughout (a repeated run) are told apart by folder."""
    if not sweep_dir.is_dir():
        raise UserError(f"sweep dir {str(sweep_dir)!r} does not exist")
    dirs = [d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()]
    if not dirs:
        raise UserError(f"sweep dir {str(sweep_dir)!r} holds no job folders (with .hydra/)")
    jobs = [load_job(d) for d in sorted(dirs, key=lambda d: (len(d.name), d.name))]
    settle(jobs)
    keys = list(compare_defaults().replicate_keys if replicate_keys is None else replicate_keys)
    fixed = {id(j): frozenset(o for o in j.overrides if _key(o) not in keys) for j in jobs}
    full = [frozenset(j.overrides) for j in jobs]
    groups: dict[tuple[frozenset[str], str], list[Job]] = {}
    for job, overrides in zip(jobs, full, strict=True):
        job.replicate = _replicate_id(job, keys) if keys else ()
        repeated = full.count(overrides) > 1  # the same run again: not a replicate
        groups.setdefault((fixed[id(job)], job.path.name if repeated else ""), []).append(job)
    # Label each setting by the overrides that differ between settings: what the sweep varied.
    sets = [key[0] for key in groups]
    common = frozenset.intersection(*sets) if len(groups) > 1 else frozenset()
    for (_, repeat), members in groups.items():
        varied = ",".join(o for o in members[0].overrides if o in fixed[id(members[0])] - common)
        if not varied and len(groups) > 1:  # the setting the others add their overrides to
            label = f"{NO_OVERRIDES} (#{repeat})" if repeat else NO_OVERRIDES
        elif not varied:
            label = "+".join(j.path.name for j in members)
        else:
            label = f"{varied} (#{repeat})" if repeat else varied
        for job in members:
            job.label = label
    return jobs


@dataclass
class Setting:
    """The finished jobs of one setting (one per seed): one table row, a mean per metric."""

    label: str
    jobs: list[Job]

    def values(self, value: Callable[[Job], Any]) -> dict[Hashable, float]:
        """``value`` of each job that has it, keyed by replicate (its seeds) for pairing; by
        folder when two jobs claim one replicate, so nothing pairs by mistake."""
        ids = [j.replicate for j in self.jobs]
        out: dict[Hashable, float] = {}
        for job in self.jobs:
            v = value(job)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            key = job.replicate if ids.count(job.replicate) == 1 else f"#{job.path.name}"
            out[key] = float(v)
        return out


def settings(jobs: list[Job]) -> list[Setting]:
    """The finished jobs grouped by label (what :func:`find_jobs` gave each setting), in the
    order of their first job; failed jobs belong to none."""
    out: dict[str, Setting] = {}
    for job in jobs:
        if job.failure is None:
            out.setdefault(job.label, Setting(job.label, [])).jobs.append(job)
    return list(out.values())


def compare_defaults() -> DictConfig:
    """conf/compare.yaml, the one home of the defaults the Python API falls back on."""
    from ddpm.configs.presets import CONF_DIR

    return OmegaConf.load(CONF_DIR / "compare.yaml")
