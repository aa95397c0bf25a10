"""``comparison.png``: a sweep's loss curves per setting (mean over seeds, min-max band); when
measured, one FID column per setting with its 95% interval; and when runs measured FID during
training at two or more steps, FID against training minutes. Plain data in, a figure out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ddpm.comparison.stats import Summary
from ddpm.runs.viz import Figure, plt


@dataclass
class Curve:
    """One setting's logged losses: ``step -> the loss of each seed that logged that step``."""

    label: str
    losses: dict[int, list[float]]
    color: str | None = None  # a setting's colour, the same in both panels
    failed: bool = False  # a failed job's own curve: dashed, in no band


def wrapped(label: str, width: int = 60) -> str:
    """A long override list on several lines (after a comma), so the legend fits the figure."""
    lines = [""]
    for part in label.split(","):
        sep = "," if lines[-1] else ""
        if lines[-1] and len(lines[-1]) + len(part) + 1 > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] += sep + part
    return "\n".join(lines)


Point = tuple[str, Summary, str | None]  # a setting's label, FID statistics and colour


@dataclass
class Progress:
    """One setting's quality during training: ``step -> (training minutes, FID)`` per seed."""

    label: str
    points: dict[int, list[tuple[float, float]]]
    color: str | None = None


def _draw_curves(ax: plt.Axes, curves: Sequence[Curve]) -> None:
    for curve in curves:
        if not curve.losses:
            continue
        steps = sorted(curve.losses)
        mean = [math.fsum(curve.losses[t]) / len(curve.losses[t]) for t in steps]
        style = "--" if curve.failed else "-"
        # markers, so a run with a single logged point still shows
        (line,) = ax.plot(
            steps,
            mean,
            style,
            label=wrapped(curve.label),
            color=curve.color,
            lw=1.3,
            marker="o",
            ms=3,
        )
        if any(len(v) > 1 for v in curve.losses.values()):  # a band needs two seeds
            low = [min(curve.losses[t]) for t in steps]
            high = [max(curve.losses[t]) for t in steps]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over seeds; band: min-max)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw_points(ax: plt.Axes, points: Sequence[Point], header: str) -> None:
    """A point per setting at its mean; error bars its 95% interval (none at n=1)."""
    for x, (_, s, color) in enumerate(points):
        below = 0.0 if s.low is None else s.mean - s.low
        above = 0.0 if s.high is None else s.high - s.mean
        ax.errorbar([x], [s.mean], yerr=[[below], [above]], fmt="o", capsize=4, color=color)
    ax.set_xticks(range(len(points)))
    ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_xticklabels(
        [f"{wrapped(label, 30)}\nn={s.n}" for label, s, _ in points],
        rotation=30,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel(f"{header.split(' [')[0]} (mean, 95% CI)")
    ax.set_title(header, fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def _draw_progress(ax: plt.Axes, progress: Sequence[Progress], header: str) -> None:
    """Each setting's FID at each measured step against the training minutes it took (both
    means over its seeds; band: the seeds' min-max FID)."""
    for p in progress:
        steps = sorted(p.points)
        minutes = [math.fsum(m for m, _ in p.points[s]) / len(p.points[s]) for s in steps]
        fid = [math.fsum(f for _, f in p.points[s]) / len(p.points[s]) for s in steps]
        n = max(len(v) for v in p.points.values())
        (line,) = ax.plot(minutes, fid, "-o", ms=3, lw=1.3, color=p.color,
                          label=f"{wrapped(p.label, 40)} (n={n})")  # fmt: skip
        if n > 1:
            low = [min(f for _, f in p.points[s]) for s in steps]
            high = [max(f for _, f in p.points[s]) for s in steps]
            ax.fill_between(minutes, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("training minutes (the trainer's clock: evaluations excluded)")
    ax.set_ylabel("FID (mean over seeds; band: min-max)")
    ax.set_yscale("log")
    ax.set_title(header, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def comparison_figure(
    curves: Sequence[Curve],
    title: str,
    points: Sequence[Point] = (),
    header: str = "",
    progress: Sequence[Progress] = (),
    progress_header: str = "",
) -> Figure:
    """The loss panel (first axes); when ``points`` are given, the FID panel; when some
    ``progress`` has two or more steps, the FID-against-training-minutes panel last."""
    over_time = any(len(p.points) > 1 for p in progress)
    panels = 1 + bool(points) + over_time
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels + 2, 5), squeeze=False)
    ax, *others = axes[0]
    if points:
        _draw_points(others.pop(0), points, header)
    if over_time:
        _draw_progress(others.pop(0), progress, progress_header)
    _draw_curves(ax, curves)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
