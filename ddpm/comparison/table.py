"""``ddpm.compare``'s markdown: one row per setting (a metric's mean ± std [95% CI] over its
seeds), one column per quality metric and evaluation, and the comparisons below it that say
which differences are established (:mod:`ddpm.comparison.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ddpm.comparison.jobs import QUALITY, Evaluation, Job, Setting, settings
from ddpm.comparison.stats import ALPHA, Test, Verdict, holm, summarize, verdict
from ddpm.errors import require

# Summary keys shown when any job has them (training's own numbers): the loss before the
# quality columns, the rest after them.
LOSS = [("final_loss", "final loss", "{:.4f}")]
COLUMNS = [
    ("steps", "steps", "{:d}"),
    ("images_per_s", "train img/s", "{:.0f}"),
    ("wall_time_s", "wall s", "{:.0f}"),
]
HIGHER_IS_BETTER = {"precision", "recall"}  # the others: lower is better
LEGEND = (
    "A setting of n >= 2 seeds reads `mean ± std [95% CI of the mean]`; `(n=k)`: only k of "
    "its seeds measured that metric."
)


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
    """One setting of a quality column against another: ``best - other``. Against a named
    baseline, ``best`` is the setting tested and ``other`` the baseline."""

    metric: Metric
    best: Setting
    other: Setting
    difference: float
    verdict: Verdict
    ratio: float  # other's mean / best's (lower-is-better metrics), else best's / other's
    p_holm: float | None = None  # the test's p, Holm-adjusted over the metric's comparisons


def _holm_family(items: list[Comparison]) -> list[Comparison]:
    """One metric's comparisons with their p-values Holm-adjusted over the ones that ran a
    test: several settings tested at 0.05 each would find a lucky win far more often than 1
    in 20. A win whose adjusted p is not below 0.05 is not established."""
    raw = [None if c.verdict.test is None else c.verdict.test.p for c in items]
    tested = [p for p in raw if p is not None]
    adjusted = iter(holm(tested))
    out = []
    for c, p_raw in zip(items, raw, strict=True):
        p = None if p_raw is None else next(adjusted)
        said = c.verdict
        if said.win and p is not None and p >= ALPHA:
            said = Verdict(False, said.test, f"{said.reason}, but Holm-adjusted over "
                           f"{len(tested)} tests p={p:.3g}")  # fmt: skip
        out.append(replace(c, verdict=said, p_holm=p))
    return out


def comparisons(jobs: list[Job], baseline: str | None = None) -> list[Comparison]:
    """For each quality column (FID first) measured by two or more settings: the best by mean
    against every other, or, with ``baseline`` (a setting's label), every setting against the
    baseline; each with the test that says whether the gap is real."""
    out = []
    found = settings(jobs)
    if baseline is not None:
        labels = [s.label for s in found]
        require(baseline in labels, "baseline", baseline, f"a setting's label: {labels}")
    for metric in metrics(jobs)[1]:
        measured = [(s, v) for s in found if (v := s.values(metric.read))]
        if len(measured) < 2:
            continue
        means = {s.label: summarize(list(v.values())).mean for s, v in measured}
        family: list[Comparison] = []
        pick = min if metric.lower_is_better else max
        if baseline is None:
            ref, ref_values = pick(measured, key=lambda sv: means[sv[0].label])
            pairs = [(ref, ref_values, s, v) for s, v in measured if s is not ref]
        else:
            base = [(s, v) for s, v in measured if s.label == baseline]
            if not base:
                continue
            pairs = [(s, v, *base[0]) for s, v in measured if s.label != baseline]
        for tested, tested_values, other, values in pairs:
            said = verdict(tested_values, values, metric.lower_is_better)
            diff = means[tested.label] - means[other.label]
            if said.test is not None:
                diff = said.test.difference
            a, b = means[tested.label], means[other.label]
            ratio = (b / a if metric.lower_is_better else a / b) if a and b else math.nan
            family.append(Comparison(metric, tested, other, diff, said, ratio))
        out += _holm_family(family)
    return out


def _test_name(test: Test | None) -> str:
    if test is None:
        return "none (a side has n=1)"
    if isinstance(test.n, tuple):
        return f"{test.name} (n={test.n[0]}, {test.n[1]})"
    return f"{test.name} ({test.n} seeds)"


def comparisons_text(items: list[Comparison], baseline: str | None = None) -> str:
    """The markdown section below the table: which differences are real."""
    if not items:
        return (
            "## Comparisons\n\nNo quality metric was measured by two or more settings: nothing "
            "to compare (`python -m ddpm.evaluate` or `trainer.eval_every` measure FID)."
        )
    who = (
        "Each quality column's best setting (by mean) against every other."
        if baseline is None
        else f"Every setting against the baseline `{baseline}`; `x baseline`: how many times "
        "better its mean is (the baseline's FID over the setting's)."
    )
    lines = [
        "## Comparisons",
        "",
        f"{who} A difference is a **win** only when a paired t-test over the seeds both share "
        "says so (p < 0.05, its 95% CI excluding 0) or, without 2 shared seeds, when the two "
        "95% intervals do not overlap; otherwise it is **not established**. With several "
        "comparisons of one metric, their p-values are Holm-adjusted together (`Holm p`) and a "
        "win needs that below 0.05 too.",
        "",
    ]
    pair = ("best", "other") if baseline is None else ("setting", "baseline")
    head = ["metric", *pair, f"{pair[0]} - {pair[1]}", "95% CI", "test", "p", "Holm p", "verdict"]
    if baseline is not None:
        head.insert(4, "x baseline")
    rows = []
    for c in items:
        t, fmt = c.verdict.test, c.metric.fmt
        interval = "-" if t is None else f"[{_cell(t.low, fmt)}, {_cell(t.high, fmt)}]"
        p = "-" if t is None else f"{t.p:.3g}"
        p_holm = "-" if c.p_holm is None else f"{c.p_holm:.3g}"
        word = f"**{c.verdict.word}**" if c.verdict.win else c.verdict.word
        row = [c.metric.header, f"`{c.best.label}`", f"`{c.other.label}`",
               _cell(c.difference, fmt), interval, _test_name(t), p, p_holm,
               f"{word}: {c.verdict.reason}"]  # fmt: skip
        if baseline is not None:
            row.insert(4, f"{c.ratio:.2f}x")
        rows.append(row)
    return "\n".join([*lines, markdown(head, rows)])
