"""One interface for everything a run reports: metrics, images, a final summary.

:class:`Tracker` always writes ``metrics.jsonl`` (one JSON object per logged step) and
``summary.json`` in the run dir; experiment trackers (W&B) subclass it and forward the same
calls. The ``logger`` config group picks the class.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from ddpm.errors import require

log = logging.getLogger("ddpm")
WandbMode = Literal["auto", "online", "offline", "disabled"]
TAGGED_GROUPS = ("model", "schedule", "process", "sampler", "optimizer")
RUN_FOLDER = re.compile(r"^(?:offline-)?run-(?P<stamp>\d{8}_\d{6})-(?P<id>[A-Za-z0-9_-]+)$")


class Tracker:
    """Local files only: ``metrics.jsonl`` and ``summary.json``."""

    def __init__(
        self,
        run_dir: str | Path,
        run_config: dict[str, Any] | None = None,
        resume_step: int | None = None,
        resume_id: str | None = None,
    ) -> None:
        """``resume_step``: continuing from a checkpoint at that step, so rows logged after it
        by the interrupted process are dropped (they will be logged again, identically)."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_config = run_config or {}
        path = self.run_dir / "metrics.jsonl"
        if resume_step is not None and path.is_file():
            kept = [r for r in read_metrics(self.run_dir) if r["step"] <= resume_step]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, path)
        self._metrics = path.open("a", encoding="utf-8")

    @property
    def run_id(self) -> str | None:
        """The experiment tracker's id for this run (kept in checkpoints to resume it)."""
        return None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._metrics.write(json.dumps({"step": step, **metrics}) + "\n")
        self._metrics.flush()

    def log_image(self, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
        """An image file already written into the run dir (local tracking keeps it there)."""

    def log_checkpoint(self, path: str | Path, step: int) -> None:
        """A checkpoint file already written into the run dir."""

    def summary(self, values: dict[str, Any]) -> None:
        path = self.run_dir / "summary.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**current, **values}, indent=2) + "\n")

    def finish(self, exit_code: int = 0) -> None:
        self._metrics.close()

    @classmethod
    def add_to_run(
        cls,
        run_dir: Path,
        run_id: str | None,
        metrics: dict[str, float],
        step: int | None,
        options: dict[str, Any],
    ) -> None:
        """Numbers measured after training (``ddpm.evaluate``) into the run's own record.

        ``options`` is the run's ``logger`` config. Local tracking keeps these numbers in the
        evaluation's JSON (the run's ``metrics.jsonl`` and ``summary.json`` stay training's).
        """

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc is None else getattr(exc, "exit_code", 1))


class SilentTracker(Tracker):
    """For data-parallel ranks other than 0: logs nothing and writes nothing."""

    def __init__(self, run_dir: str | Path, **_: Any) -> None:
        self.run_dir = Path(run_dir)
        self.run_config = {}

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged rows of a run, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class HydraJob:
    """What a tracker needs to know about the Hydra job it runs in."""

    overrides: list[str]
    choices: dict[str, str]
    sweep_dir: Path | None  # set in multirun only

    @classmethod
    def current(cls) -> HydraJob | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return cls(
            overrides=list(hc.overrides.task),
            choices={k: str(v) for k, v in hc.runtime.choices.items() if v is not None},
            sweep_dir=Path(hc.sweep.dir) if multirun else None,
        )

    def swept_keys(self) -> set[str]:
        """Keys the sweep varies: sweep overrides (``a=1,2``, ``range(..)``) on its command line
        plus the preset's ``hydra.sweeper.params`` (both recorded in ``multirun.yaml``)."""
        if self.sweep_dir is None or not (self.sweep_dir / "multirun.yaml").is_file():
            return set()
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        saved = OmegaConf.load(self.sweep_dir / "multirun.yaml")
        parsed = OverridesParser.create().parse_overrides(list(saved.hydra.overrides.task))
        keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
        params = OmegaConf.select(saved, "hydra.sweeper.params", default=None) or {}
        return keys | {str(k) for k in params}

    def run_name(self) -> str | None:
        """``model=small,schedule=cosine``: the job's overrides (in a sweep, the swept ones)."""
        swept = self.swept_keys()
        picked = [
            o.lstrip("+~")
            for o in self.overrides
            if not swept or o.split("=", 1)[0].lstrip("+~") in swept
        ]
        return ",".join(picked) or None


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host; never prompts."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    """Local files plus one W&B run per Hydra job; never prompts, never stops training.

    ``mode=auto`` is online when credentials exist and offline otherwise. Run files go to
    ``<run_dir>/wandb``. A failing W&B call warns once; the run goes on with local files only.
    """

    def __init__(
        self,
        run_dir: str | Path,
        run_config: dict[str, Any] | None = None,
        *,
        project: str,
        entity: str | None,
        group: str | None,
        name: str | None,
        tags: Sequence[str],
        mode: WandbMode,
        log_checkpoints: bool,
        init_timeout_s: float,
        resume_step: int | None = None,
        resume_id: str | None = None,
    ) -> None:
        super().__init__(run_dir, run_config, resume_step)
        require(
            mode in get_args(WandbMode),
            "logger.mode",
            mode,
            "one of auto, online, offline, disabled",
        )
        import wandb

        self._wandb = wandb
        self.log_checkpoints = log_checkpoints
        job = HydraJob.current()
        if group is None and job is not None and job.sweep_dir is not None:
            experiment = self.run_config.get("experiment_name")
            group = f"{experiment}-{job.sweep_dir.name}" if experiment else job.sweep_dir.name
        if name is None and job is not None:
            name = job.run_name()
        auto_tags = [  # a group the run does not read (a flow run's schedule) is no tag
            f"{g}:{job.choices[g]}"
            for g in TAGGED_GROUPS
            if job and g in job.choices and (g in self.run_config or not self.run_config)
        ]
        if mode == "auto":
            mode = "online" if has_wandb_credentials() else "offline"
        init = dict(
            project=project,
            entity=entity,
            group=group,
            name=name,
            tags=[*auto_tags, *tags],
            config=self.run_config,
            dir=str(self.run_dir),
            reinit="finish_previous",  # jobs in one process never share a run
            id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(silent=True, init_timeout=init_timeout_s),
        )
        try:
            self.run = wandb.init(mode=mode, **init)
        except Exception as err:  # noqa: BLE001 - an unreachable server must not stop training
            if mode != "online":
                raise
            warnings.warn(
                f"W&B online init failed ({type(err).__name__}: {err}); logging offline instead",
                RuntimeWarning,
                stacklevel=2,
            )
            mode = "offline"
            self.run = wandb.init(mode=mode, **init)
        self.mode = mode
        self._broken = False

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self._broken:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any W&B failure must not stop training
            self._broken = True
            warnings.warn(
                f"W&B logging failed ({type(err).__name__}: {err}); "
                f"training goes on, metrics stay in {self.run_dir / 'metrics.jsonl'}",
                RuntimeWarning,
                stacklevel=3,
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        super().log(metrics, step)
        self._call(self.run.log, metrics, step=step)

    def log_image(self, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
        self._call(
            lambda: self.run.log({key: self._wandb.Image(str(path), caption=caption)}, step=step)
        )

    def log_checkpoint(self, path: str | Path, step: int) -> None:
        if not self.log_checkpoints:
            return

        def upload() -> None:
            art = self._wandb.Artifact(
                f"{self.run.id}-checkpoint", type="model", metadata={"step": step}
            )
            art.add_file(str(path), name=Path(path).name)
            self.run.log_artifact(art, aliases=["latest", f"step-{step}"])

        self._call(upload)

    def summary(self, values: dict[str, Any]) -> None:
        super().summary(values)
        self._call(self.run.summary.update, values)

    def finish(self, exit_code: int = 0) -> None:
        super().finish(exit_code)
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"W&B run did not finish cleanly: {err}", RuntimeWarning, stacklevel=2)
        if self.mode == "offline":
            log.info(
                "W&B offline run saved; upload it later with: wandb sync %s", self.run_dir_wandb
            )

    @classmethod
    def add_to_run(
        cls,
        run_dir: Path,
        run_id: str | None,
        metrics: dict[str, float],
        step: int | None,
        options: dict[str, Any],
    ) -> None:
        """Reopens the run's W&B run offline (``resume="allow"`` on its id) and logs
        ``metrics`` as history at ``step`` and summary; ``wandb sync`` uploads the new folder
        into the same run. A W&B failure only warns: the numbers are in the JSON anyway."""
        if run_id is None:
            return
        # Folders are named by the second: one started in the same second as the newest would
        # be the same folder, and the reopened run would overwrite that run's log.
        stamps = [
            m["stamp"]
            for f in (run_dir / "wandb").glob("*run-*")
            if (m := RUN_FOLDER.match(f.name))
        ]
        deadline = time.monotonic() + 2.0  # never wait on a stamp from the future
        while (
            stamps and time.strftime("%Y%m%d_%H%M%S") <= max(stamps) and time.monotonic() < deadline
        ):
            time.sleep(0.1)

        def write(run: Any) -> None:
            run.log(metrics, **({} if step is None else {"step": step}))
            run.summary.update(metrics)

        init = {"id": run_id, "resume": "allow", "dir": str(run_dir)}
        init |= {"project": options.get("project"), "entity": options.get("entity")}
        folder = offline_run(init, write, f"W&B logging into run {run_id} failed")
        if folder is not None:
            log.info("W&B: logged into run %s; upload with: wandb sync %s", run_id, folder)

    @property
    def run_id(self) -> str | None:
        return self.run.id

    @property
    def run_dir_wandb(self) -> Path:
        """The run's own folder under ``<run_dir>/wandb`` (what ``wandb sync`` takes)."""
        return Path(self.run.dir).parent


def offline_run(init: dict[str, Any], write: Callable[[Any], object], failure: str) -> Path | None:
    """Opens a W&B run offline (never prompts, never waits on a server) with ``init``, lets
    ``write`` log into it and finishes it; returns its folder (what ``wandb sync`` takes). A
    W&B failure only warns (``failure``, then the error) and returns None: the caller's own
    files hold the same numbers."""
    try:
        import wandb

        run = wandb.init(mode="offline", settings=wandb.Settings(silent=True), **init)
        try:
            write(run)
        finally:
            run.finish()
    except Exception as err:  # noqa: BLE001 - W&B trouble must not lose the caller's numbers
        warnings.warn(f"{failure} ({type(err).__name__}: {err})", RuntimeWarning, stacklevel=3)
        return None
    return Path(run.dir).parent
