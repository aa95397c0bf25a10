"""Adds evaluation numbers to the W&B run a training run already has (offline, never prompts).

The run id is read off the newest ``<run_dir>/wandb/[offline-]run-<date>_<time>-<id>`` folder;
``wandb.init(id=..., resume="allow", mode="offline")`` then writes a new offline folder with
the same id, which ``wandb sync`` uploads into that run.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("ddpm")
RUN_FOLDER = re.compile(r"^(?:offline-)?run-(?P<stamp>\d{8}_\d{6})-(?P<id>[A-Za-z0-9_-]+)$")


def _newest_run(run_dir: str | Path) -> tuple[str, str] | None:
    """(start stamp, id) of the newest W&B run folder under ``<run_dir>/wandb``."""
    found = []
    wandb_dir = Path(run_dir) / "wandb"
    if wandb_dir.is_dir():
        for folder in wandb_dir.iterdir():
            match = RUN_FOLDER.match(folder.name)
            if match and folder.is_dir() and not folder.is_symlink():
                found.append((match["stamp"], match["id"]))
    return max(found) if found else None


def find_run_id(run_dir: str | Path) -> str | None:
    """The id of the newest W&B run folder under ``<run_dir>/wandb``, or None."""
    newest = _newest_run(run_dir)
    return newest[1] if newest else None


def log_into_run(
    run_dir: str | Path,
    metrics: dict[str, float],
    step: int | None = None,
    project: str | None = None,
    entity: str | None = None,
) -> Path | None:
    """Logs ``metrics`` (history at ``step`` and summary) into the run's W&B run.

    Returns the new offline folder, or None when the run has no W&B run or W&B fails (which
    only warns: the numbers are in the eval JSON either way).
    """
    newest = _newest_run(run_dir)
    if newest is None:
        return None
    stamp, run_id = newest
    # Folders are named by the second: one started in the same second as the newest would be
    # the same folder, and the resumed run would overwrite that run's log.
    deadline = time.monotonic() + 2.0  # never wait on a stamp from the future
    while time.strftime("%Y%m%d_%H%M%S") <= stamp and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        import wandb

        run = wandb.init(
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode="offline",
            project=project,
            entity=entity,
            settings=wandb.Settings(silent=True),
        )
        try:
            kwargs: dict[str, Any] = {} if step is None else {"step": step}
            run.log(metrics, **kwargs)
            run.summary.update(metrics)
        finally:
            run.finish()
        folder = Path(run.dir).parent
    except Exception as err:  # noqa: BLE001 - W&B trouble must not lose the evaluation
        warnings.warn(
            f"W&B logging into run {run_id} failed ({type(err).__name__}: {err})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    log.info("W&B: logged into run %s; upload with: wandb sync %s", run_id, folder)
    return folder
