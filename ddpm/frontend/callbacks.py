"""Hydra callbacks: sweep bookkeeping that belongs to no single job."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ddpm.runs.same_run import ForeignRunDir

log = logging.getLogger("ddpm")


class ReportFailures(Callback):
    """Names each failed job as it ends and leaves ``FAILED`` (the error) in its run dir;
    a job that succeeds on a rerun of the sweep removes its old ``FAILED``.

    Hydra's basic launcher runs every job of a sweep and then raises the first failure, so
    the sweep exits non-zero; this makes every failure visible, also to ``ddpm.compare``.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status != JobStatus.FAILED:
            (run_dir / "FAILED").unlink(missing_ok=True)  # a resumed sweep reran it
            return
        err = job_return._return_value  # the exception (return_value would raise it)
        foreign = isinstance(err, ForeignRunDir)  # the folder holds another job's run
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        overrides = " ".join(job_return.overrides or [])
        log.error("job #%s (%s) failed: %s", config.hydra.job.num, overrides, message)
        if run_dir.is_dir() and not foreign:
            (run_dir / "FAILED").write_text(message + "\n")
