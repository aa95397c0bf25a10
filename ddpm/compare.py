"""``python -m ddpm.compare <multirun dir>``: the offline twin of W&B's run comparison.

Reads each job's ``.hydra/`` files, ``metrics.jsonl``, ``summary.json`` and every
``eval/*.json`` (no network), prints a table of the swept overrides against final loss,
throughput and any quality metrics, and writes ``comparison.md`` and ``comparison.png`` into
the sweep dir.

A FID is comparable only with FIDs of the same sampler, network calls and sample count, so each
quality metric gets one column per :class:`Evaluation` (``FID [ddim/50 calls/1000 samples]``);
the run's own measurement during training (``trainer.eval_every``) is one evaluation too, told
apart by a ``training:`` prefix. What a file does not record reads ``unknown``, never a guess.

Jobs that differ only in ``replicate_keys`` (``trainer.seed``) are one setting: one row with
``n`` seeds and each metric's mean, std and 95% interval (:mod:`ddpm.comparison.stats`);
below the table, each quality column's best setting against every other says whether the gap
is established.
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

from ddpm.comparison.figure import Curve, comparison_figure
from ddpm.comparison.stats import Test, Verdict, summarize, verdict
from ddpm.comparison.wandb_run import log_comparison
from ddpm.errors import UserError, plain, require
from ddpm.frontend.cli import hydra_command
from ddpm.runs.same_run import flat
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
HIGHER_IS_BETTER = {"precision", "recall"}  # the others: lower is better
LEGEND = (
    "A setting of n >= 2 seeds reads `mean ± std [95% CI of the mean]`; `(n=k)`: only k of "
    "its seeds measured that metric."
)
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
    label: str = field(default="")  # the setting's: shared by the seeds of one setting
    replicate: tuple[str, ...] = ()  # which seed (``trainer.seed=1``): pairs across settings
    measured: list[Measured] = field(default_factory=list)
    evals: dict[Evaluation, dict[str, float]] = field(default_factory=dict)


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
    keys = list(_defaults().replicate_keys if replicate_keys is None else replicate_keys)
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
        if not varied:
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


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def stat_cell(values: Sequence[float], fmt: str, n: int) -> str:
    """One setting's metric: its one value, or ``mean ± std [95% CI]`` over its seeds;
    ``(n=k)`` when fewer than the setting's ``n`` jobs measured it."""
    if not values:
        return "-"
    s = summarize(values)
    text = _cell(s.mean, fmt)
    if s.std is not None:
        text += f" ± {_cell(s.std, fmt)} [{_cell(s.low, fmt)}, {_cell(s.high, fmt)}]"
    return text + (f" (n={s.n})" if s.n != n else "")


def mean_cell(values: Sequence[float], fmt: str) -> str:
    """A setting's throughput, steps, time: the mean of its jobs, nothing more."""
    return _cell(math.fsum(values) / len(values), fmt) if values else "-"


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


@dataclass(frozen=True)
class Metric:
    """A table column: its header, how a job's value is read, format, and direction."""

    key: str  # the summary key or the quality metric's key (fid, kid, ...)
    header: str
    fmt: str
    read: Callable[[Job], Any]

    @property
    def lower_is_better(self) -> bool:
        return self.key not in HIGHER_IS_BETTER


def metrics(jobs: list[Job]) -> tuple[list[Metric], list[Metric], list[Metric]]:
    """(loss, quality, other) columns present in at least one job."""

    def summary(key: str) -> Callable[[Job], Any]:
        return lambda j: j.summary.get(key)

    def quality(e: Evaluation, key: str) -> Callable[[Job], Any]:
        return lambda j: j.evals.get(e, {}).get(key)

    loss, rest = (
        [Metric(k, h, f, summary(k)) for k, h, f in cs if any(k in j.summary for j in jobs)]
        for cs in (LOSS, COLUMNS)
    )
    columns = [Metric(k, h, f, quality(e, k)) for e, k, h, f in quality_columns(jobs)]
    return loss, columns, rest


def table_rows(jobs: list[Job]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per setting (its jobs' folders, ``n`` seeds), the loss, one
    column per quality metric and evaluation, then the other summary columns present in at
    least one summary; a failed job keeps a row of its own and counts in no setting."""
    loss, quality, rest = metrics(jobs)
    head = ["job", "overrides", "n", *(m.header for m in (*loss, *quality, *rest)), "status"]
    rows, done = [], set()
    groups = {s.label: s for s in settings(jobs)}
    for job in jobs:
        if job.failure is not None:
            cells = [_cell(m.read(job), m.fmt) for m in (*loss, *quality, *rest)]
            rows.append([job.path.name, f"`{job.label}`", "-", *cells, f"failed: {job.failure}"])
            continue
        if job.label in done:
            continue
        done.add(job.label)
        s = groups[job.label]
        n = len(s.jobs)
        stats = [stat_cell(list(s.values(m.read).values()), m.fmt, n) for m in (*loss, *quality)]
        means = [mean_cell(list(s.values(m.read).values()), m.fmt) for m in rest]
        rows.append([jobs_cell(s.jobs), f"`{s.label}`", str(n), *stats, *means, "ok"])
    return head, rows


def jobs_cell(jobs: list[Job]) -> str:
    """A setting's jobs: one job's folder; replicates by their values (``trainer.seed=0,1,2``,
    shorter than folders named by their overrides); else the folders."""
    reps = [j.replicate for j in jobs]
    if len(jobs) == 1 or not all(reps) or len({len(r) for r in reps}) != 1:
        return ", ".join(j.path.name for j in jobs)
    keys = [r.split("=", 1)[0] for r in reps[0]]
    values = [[r[i].split("=", 1)[-1] for r in reps] for i in range(len(keys))]
    return " ".join(f"{k}={','.join(v)}" for k, v in zip(keys, values, strict=True))


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def table(jobs: list[Job]) -> str:
    """The markdown table of :func:`table_rows`."""
    return markdown(*table_rows(jobs))


@dataclass(frozen=True)
class Comparison:
    """The best setting of one quality column against another: ``best - other``."""

    metric: Metric
    best: Setting
    other: Setting
    difference: float
    verdict: Verdict


def comparisons(jobs: list[Job]) -> list[Comparison]:
    """For each quality column (FID first) measured by two or more settings: the best by mean
    against every other, with the test that says whether the gap is real."""
    out = []
    for metric in metrics(jobs)[1]:
        measured = [(s, v) for s in settings(jobs) if (v := s.values(metric.read))]
        if len(measured) < 2:
            continue
        means = {s.label: summarize(list(v.values())).mean for s, v in measured}
        pick = min if metric.lower_is_better else max
        best, best_values = pick(measured, key=lambda sv: means[sv[0].label])
        for other, values in measured:
            if other is best:
                continue
            said = verdict(best_values, values, metric.lower_is_better)
            diff = means[best.label] - means[other.label]
            if said.test is not None:
                diff = said.test.difference
            out.append(Comparison(metric, best, other, diff, said))
    return out


def _test_name(test: Test | None) -> str:
    if test is None:
        return "none (a side has n=1)"
    if isinstance(test.n, tuple):
        return f"{test.name} (n={test.n[0]}, {test.n[1]})"
    return f"{test.name} ({test.n} seeds)"


def comparisons_text(items: list[Comparison]) -> str:
    """The markdown section below the table: which differences are real."""
    if not items:
        return (
            "## Comparisons\n\nNo quality metric was measured by two or more settings: nothing "
            "to compare (`python -m ddpm.evaluate` or `trainer.eval_every` measure FID)."
        )
    lines = [
        "## Comparisons",
        "",
        "Each quality column's best setting (by mean) against every other. A difference is a "
        "**win** only when a paired t-test over the seeds both share says so (p < 0.05, its "
        "95% CI excluding 0) or, without 2 shared seeds, when the two 95% intervals do not "
        "overlap; otherwise it is **not established**.",
        "",
    ]
    head = ["metric", "best", "other", "best - other", "95% CI", "test", "p", "verdict"]
    rows = []
    for c in items:
        t, fmt = c.verdict.test, c.metric.fmt
        interval = "-" if t is None else f"[{_cell(t.low, fmt)}, {_cell(t.high, fmt)}]"
        p = "-" if t is None else f"{t.p:.3g}"
        word = f"**{c.verdict.word}**" if c.verdict.win else c.verdict.word
        row = [c.metric.header, f"`{c.best.label}`", f"`{c.other.label}`",
               _cell(c.difference, fmt), interval, _test_name(t), p,
               f"{word}: {c.verdict.reason}"]  # fmt: skip
        rows.append(row)
    return "\n".join([*lines, markdown(head, rows)])


def loss_figure(jobs: list[Job], title: str) -> Figure:
    """Loss curves, one colour per setting (mean over its seeds, a min-max band), labelled by
    its overrides, a failed job's own curve dashed; beside them, when any FID was measured,
    the first FID column per setting with its 95% interval."""
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
    return comparison_figure(curves, title, points, fids[0].header)


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


def _defaults() -> DictConfig:
    """conf/compare.yaml, the one home of the defaults the Python API falls back on."""
    from ddpm.configs.presets import CONF_DIR

    return OmegaConf.load(CONF_DIR / "compare.yaml")


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
) -> Report:
    """Reads the sweep, writes comparison.md and comparison.png into ``out_dir`` (default:
    the sweep dir) and, with ``wandb``, one offline W&B run; None = conf/compare.yaml's."""
    defaults = _defaults()
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
    result = Report(markdown(head, rows), comparisons_text(comparisons(jobs)), seeds)
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
    print(report(cfg.sweep_dir, cfg.out_dir, cfg.replicate_keys, cfg.wandb).text)
    out = Path(cfg.out_dir or cfg.sweep_dir)
    print(f"wrote {out / 'comparison.md'} and comparison.png")


def folder_as_key(argv: list[str]) -> list[str]:
    """``ddpm-compare DIR`` reads as ``sweep_dir=DIR``."""
    return [a if "=" in a or a.startswith("-") else f"sweep_dir={a}" for a in argv]


cli = hydra_command("ddpm-compare", __doc__, "compare", main, rewrite=folder_as_key)

if __name__ == "__main__":
    cli()
