"""``ddpm.compare wandb=true``: one offline W&B run holding a sweep's comparison, beside the
sweep's own runs (same project and group, ``job_type="compare"``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ddpm.runs.tracking import offline_run

log = logging.getLogger("ddpm")


def log_comparison(
    out: Path,
    init: dict[str, Any],
    summary: dict[str, Any],
    columns: list[str],
    rows: list[list[str]],
) -> Path | None:
    """Writes the run under ``<out>/wandb`` offline (never prompts, never waits on a server):
    ``summary`` as its summary, the table as a ``wandb.Table`` named ``comparison``. Returns
    the run's folder (what ``wandb sync`` takes); a W&B failure only warns and returns None:
    comparison.md holds the same."""

    def write(run: Any) -> None:
        import wandb

        run.summary.update(summary)
        run.log({"comparison": wandb.Table(columns=columns, data=rows)})

    init = {"dir": str(out), "job_type": "compare", "reinit": "finish_previous", **init}
    folder = offline_run(init, write, "compare: W&B logging failed")
    if folder is not None:
        log.info("W&B: compare run saved offline; upload with: wandb sync %s", folder)
    return folder
