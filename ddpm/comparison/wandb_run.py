"""``ddpm.compare wandb=true``: one offline W&B run holding a sweep's comparison, beside the
sweep's own runs (same project and group, ``job_type="compare"``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

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
    try:
        import wandb

        run = wandb.init(
            mode="offline",
            dir=str(out),
            job_type="compare",
            reinit="finish_previous",
            settings=wandb.Settings(silent=True),
            **init,
        )
        try:
            run.summary.update(summary)
            run.log({"comparison": wandb.Table(columns=columns, data=rows)})
        finally:
            run.finish()
    except Exception as err:  # noqa: BLE001 - W&B trouble must not lose the comparison
        warnings.warn(
            f"compare: W&B logging failed ({type(err).__name__}: {err})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    folder = Path(run.dir).parent
    log.info("W&B: compare run saved offline; upload with: wandb sync %s", folder)
    return folder
