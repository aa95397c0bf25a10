"""Is the run stored in a folder the run this job would train? Asked before a job skips a
finished folder or resumes from the folder's ``last.pt``, so a sweep whose jobs share a folder
(two seeds under one subdir) is refused instead of reporting one job's result as another's.

The stored side is the resolved config inside the folder's checkpoint (what the run trained);
the job's side is the same record of its own config. Keys that may change on resume, the
budget, where to resume from, where to log and the post-hoc EMA's snapshots, are left out of
the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddpm.configs.later_keys import LATER_KEYS
from ddpm.errors import UserError
from ddpm.runs import checkpoint

# Keys that a continued run may change: its budget, the resume source, its tracker, and the
# post-hoc EMA's profiles (one switched on mid-run starts at the resume step).
MAY_DIFFER = (
    "trainer.max_steps",
    "trainer.max_minutes",
    "trainer.epochs",
    "trainer.resume",
    "trainer.posthoc_ema_stds",
    "trainer.posthoc_ema_every",
    "logger",
)
SHOWN = 4  # differing keys named in the message


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"trainer.seed": 0, ...}`` (lists are values)."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flat(value, f"{prefix}{key}."))
    return out


def differing_keys(stored: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two run records, less :data:`MAY_DIFFER`."""
    a, b = flat(stored), flat(job)
    for key, value in LATER_KEYS.items():  # a run written before the key existed
        if key not in a and b.get(key, value) == value:
            a[key] = b[key] = value
    keep = [k for k in sorted(a.keys() | b.keys()) if not _may_differ(k)]
    return [k for k in keep if a.get(k, "<absent>") != b.get(k, "<absent>")]


def _may_differ(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_DIFFER)


class ForeignRunDir(UserError):
    """A job's folder holds another config's run: the job fails and leaves the folder as is
    (no ``FAILED`` mark: the run there did not fail)."""


def check_same_run(stored: dict[str, Any], job: dict[str, Any], run_dir: Path) -> None:
    """Refuses, in one line, to continue or skip ``run_dir`` for a job of another config."""
    keys = differing_keys(stored, job)
    if not keys:
        return
    a, b = flat(stored), flat(job)
    shown = ", ".join(
        f"{k} {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:SHOWN]
    )
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    raise ForeignRunDir(
        f"{run_dir}: holds a run of another config ({shown}{more}); nothing was changed there. "
        "Give this job its own folder (hydra.run.dir=..., or a sweep subdir that names every "
        "swept key), or trainer.resume=never in an empty folder"
    )


def stored_record(run_dir: Path) -> dict[str, Any] | None:
    """The config recorded in ``run_dir/checkpoints/last.pt``, or None when there is none."""
    path = run_dir / "checkpoints" / "last.pt"
    return checkpoint.load(path).get("config") if path.is_file() else None
