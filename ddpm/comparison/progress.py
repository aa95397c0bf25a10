"""Quality measured during training (``trainer.eval_every``) against the training time it took:
the question a budget asks ("how good after N CPU-minutes?"), which steps alone cannot answer
when two settings' steps cost differently.

A run logs its throughput per window of steps (``images_per_s`` in each ``metrics.jsonl`` row),
so its training time at a step is the sum over the windows before it of steps x batch /
images_per_s: the trainer's own clock (the one ``trainer.max_minutes`` reads), which leaves out
evaluations, pictures and checkpoints. No new log key is needed, so every run ever logged can be
drawn.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

Point = tuple[float, float]  # (training minutes, metric)


def training_minutes(rows: Sequence[dict[str, Any]], batch_size: int) -> dict[int, float]:
    """``step -> training minutes at that step`` for every row that logged its throughput
    (a window's images are its steps times ``batch_size``; the epoch's last, smaller batch is
    counted whole, an error below one batch per epoch)."""
    out: dict[int, float] = {}
    previous, seconds = 0, 0.0
    for row in rows:
        step, rate = row.get("step"), row.get("images_per_s")
        if step is None or not rate or step <= previous:  # an evaluation row, or a re-log
            continue
        seconds += (step - previous) * batch_size / rate
        out[step] = seconds / 60
        previous = step
    return out


def minutes_at(clock: dict[int, float], step: int) -> float | None:
    """The training minutes at ``step``: linear between the logged steps around it (rows
    come every ``log_every`` steps; an evaluation may fall between); None past the last."""
    steps = sorted(clock)
    i = bisect.bisect_left(steps, step)
    if i == len(steps):
        return None
    if steps[i] == step:
        return clock[step]
    before, minutes = (steps[i - 1], clock[steps[i - 1]]) if i else (0, 0.0)
    share = (step - before) / (steps[i] - before)
    return minutes + share * (clock[steps[i]] - minutes)


def quality_over_time(
    rows: Sequence[dict[str, Any]], batch_size: int, key: str = "fid"
) -> dict[int, Point]:
    """``step -> (training minutes, key)`` for each row that measured ``key`` during training."""
    clock = training_minutes(rows, batch_size)
    out: dict[int, Point] = {}
    for row in rows:
        if key in row and (minutes := minutes_at(clock, row["step"])) is not None:
            out[row["step"]] = (minutes, float(row[key]))
    return out
