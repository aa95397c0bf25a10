"""``python -m ddpm.search``: an Optuna study over the training config, one run per trial.

Optuna is driven here rather than through Hydra's ``hydra-optuna-sweeper``: that plugin
(1.3.0, the newest) requires ``optuna<3.0.0``, so it cannot be installed beside a current
Optuna (5.x), and the Optuna it pulls in (2.10.1, 2021) cannot open an SQLite storage under
SQLAlchemy 2 (``AssertionError`` in ``get_current_version``) unless SQLAlchemy<2 and
alembic<1.14 are pinned by hand.

Each trial composes the training config (``conf/config.yaml``) with ``+experiment=search``
(the trial's budget; ``search.experiment`` names another), the command line's training
overrides and the trial's values for the keys in ``search.space``, trains it with
:func:`ddpm.run.run` in ``<study dir>/<trial number>/`` (its own W&B run; ``ddpm.compare
<study dir>`` reads the trials like a sweep) and reports :func:`ddpm.run.objective`. The study
dir gets ``best.json`` (best value, params, and the overrides that train it again) and
``trials.md``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from ddpm.configs.run_config import check_command_line, one_line, validate
from ddpm.configs.unread import named_process
from ddpm.errors import UserError, fail, is_int, is_number, require
from ddpm.frontend.cli import hydra_command
from ddpm.run import objective, run
from ddpm.training.loop import Interrupted
from ddpm.training.state import NonFiniteLoss

log = logging.getLogger("ddpm")
Value = None | bool | int | float | str
# Keys whose choice changes the loss's scale: the final loss cannot rank trials across them.
LOSS_SCALE_KEYS = ("schedule", "process", "model.prediction", "trainer.loss_weighting")


@dataclass(frozen=True)
class Choice:
    """Categorical: Optuna picks one of ``values`` (a group option or a key's value)."""

    values: tuple[Value, ...]

    def suggest(self, trial: Any, key: str) -> Value:
        return trial.suggest_categorical(key, list(self.values))

    def probes(self) -> tuple[Value, ...]:
        return self.values


@dataclass(frozen=True)
class Range:
    """A number in [low, high]; ``log`` samples its logarithm uniformly, ``int`` whole numbers."""

    low: float
    high: float
    log: bool = False
    int: bool = False

    def suggest(self, trial: Any, key: str) -> Value:
        if self.int:
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, self.low, self.high, log=self.log)

    def probes(self) -> tuple[Value, ...]:
        kind = int if self.int else float
        return kind(self.low), kind(self.high)


def parse_space(node: DictConfig, prefix: str = "") -> dict[str, Choice | Range]:
    """``search.space`` flattened to ``{"optimizer.lr": Range(...), "schedule": Choice(...)}``.

    A list is a set of choices, a mapping with ``low`` and ``high`` a range, any other
    mapping a level of keys (``optimizer: {lr: ...}``).
    """
    space: dict[str, Choice | Range] = {}
    for name, value in node.items():
        key = f"{prefix}{name}"
        where = f"search.space.{key}"
        if isinstance(value, ListConfig):
            values = tuple(OmegaConf.to_container(value))
            if not values or not all(
                v is None or isinstance(v, bool | int | float | str) for v in values
            ):
                fail(
                    where, list(values), "a non-empty list of null, true/false, numbers or strings"
                )
            space[key] = Choice(values)
        elif isinstance(value, DictConfig) and ("low" in value or "high" in value):
            extra = set(value) - {"low", "high", "log", "int"}
            low, high = value.get("low"), value.get("high")
            require(
                not extra and is_number(low) and is_number(high) and low < high,
                where,
                OmegaConf.to_container(value),
                "{low: <number>, high: <larger number>, log: bool, int: bool}",
            )
            require(
                not value.get("log", False) or low > 0, f"{where}.low", low, "> 0 for a log range"
            )
            space[key] = Range(
                float(low),
                float(high),
                bool(value.get("log", False)),
                bool(value.get("int", False)),
            )
        elif isinstance(value, DictConfig) and len(value):
            space.update(parse_space(value, f"{key}."))
        else:
            fail(where, value, "a list of choices or {low, high}")
    if not prefix and not space:
        raise UserError("search.space is empty: name at least one key to search")
    return space


def override(key: str, value: Value) -> str:
    """``key=value`` as Hydra parses it back to ``value``."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str) and not re.fullmatch(r"[\w./-]+", value):
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{key}={text}"


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _is_search_key(arg: str) -> bool:
    """``search.n_trials=4``: the study's own setting, not a training override."""
    return _key(arg) == "search" or _key(arg).startswith("search.")


def compose_trial(overrides: Sequence[str]) -> DictConfig:
    """The trial's training config, its ``hydra`` node kept (tags and names come from it)."""
    try:
        return hydra.compose(
            config_name="config", overrides=list(overrides), return_hydra_config=True
        )
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors, said in one line
        raise UserError(one_line(err)) from None


def training_part(cfg: DictConfig) -> DictConfig:
    """``cfg`` without its ``hydra`` node: what :func:`ddpm.run.run` takes."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def check_space(space: dict[str, Choice | Range], base: Sequence[str]) -> None:
    """Composes and validates every choice and both ends of every range before any training,
    so a typo (``schedule: [linear, cosin]``) stops the study in one line."""
    for key, dist in space.items():
        for value in dist.probes():
            arg = override(key, value)
            check_command_line(["-m", arg])  # "-m": the group option only, composed below
            validate(training_part(compose_trial([*base, arg])))


@contextmanager
def hydra_job(cfg: DictConfig) -> Iterator[None]:
    """The trial's Hydra config while it runs, as a launcher sets it for a sweep job: the W&B
    tracker takes the run's tags (``schedule:cosine``) from its choices."""
    hc = HydraConfig.instance()
    before = hc.cfg
    hc.set_config(cfg)
    try:
        yield
    finally:
        hc.cfg = before


def run_trial(
    trial: Any, space: dict[str, Choice | Range], base: Sequence[str], study_dir: Path, group: str
) -> float:
    """One trial: trains ``base`` plus Optuna's picks in ``<study_dir>/<trial number>/`` (with
    ``.hydra/`` files as a sweep job has, for ``ddpm.compare``); returns the objective."""
    params = {key: dist.suggest(trial, key) for key, dist in space.items()}
    picked = [override(k, v) for k, v in params.items()]
    cfg = compose_trial([*base, *picked])
    train_cfg = training_part(cfg)
    if "group" in train_cfg.logger and train_cfg.logger.group is None:
        train_cfg.logger.group = group
    if "name" in train_cfg.logger and train_cfg.logger.name is None:
        train_cfg.logger.name = f"trial {trial.number}: " + ",".join(picked)
    run_dir = study_dir / str(trial.number)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(train_cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create([*base, *picked]), run_dir / ".hydra" / "overrides.yaml")
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("overrides", [*base, *picked])
    log.info("trial %d: %s", trial.number, " ".join(picked))
    try:
        with hydra_job(cfg):
            summary = run(train_cfg, run_dir)
    except Exception as err:
        (run_dir / "FAILED").write_text(f"{type(err).__name__}: {err}".splitlines()[0] + "\n")
        if isinstance(err, NonFiniteLoss):  # a diverging setting is a result, not a bug
            log.warning("trial %d diverged: %s", trial.number, err)
            return math.nan  # Optuna records the trial as failed and goes on
        raise
    return objective(train_cfg, summary)


def trials_table(study: Any, keys: Sequence[str]) -> str:
    """One markdown row per trial: number, state, value, the searched values, run dir."""
    head = ["trial", "state", "value", *keys, "run dir"]
    rows = [
        [
            str(t.number),
            t.state.name,
            "-" if t.value is None else f"{t.value:.6g}",
            *(override(k, t.params[k]).split("=", 1)[1] if k in t.params else "-" for k in keys),
            t.user_attrs.get("run_dir", "-"),
        ]
        for t in study.trials
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def report(study: Any, keys: Sequence[str], metric: str, study_dir: Path) -> dict[str, Any]:
    """Writes ``best.json`` and ``trials.md`` into the study dir and logs the table."""
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    result: dict[str, Any] = {
        "objective": metric,
        "direction": "minimize",
        "trials_complete": len(done),
        "trials_total": len(study.trials),
    }
    if done:
        best = study.best_trial
        result.update(
            best_value=best.value,
            best_params=best.params,
            best_trial=best.number,
            best_run_dir=best.user_attrs.get("run_dir"),
            best_overrides=best.user_attrs.get("overrides", []),
        )
    result["trials"] = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"),
        }
        for t in study.trials
    ]
    (study_dir / "best.json").write_text(json.dumps(result, indent=2) + "\n")
    table = trials_table(study, keys)
    (study_dir / "trials.md").write_text(f"# {study_dir.name}: {metric}\n\n{table}\n")
    log.info("trials (%s, lower is better):\n%s", metric, table)
    if done:
        log.info(
            "best: trial %d, %s=%.6g; train it again with: python -m ddpm.run %s",
            result["best_trial"],
            metric,
            result["best_value"],
            " ".join(result["best_overrides"]),
        )
    return result


def search(settings: DictConfig, cli: Sequence[str], study_dir: Path) -> dict:
    """Runs ``settings.n_trials`` trials; returns what ``best.json`` holds. ``cli``: the
    command line's training overrides, applied to every trial."""
    import optuna

    space = parse_space(settings.space)
    shadowed = [o for o in cli if _key(o) in space]
    if shadowed:
        log.warning("the search sets %s; ignoring %s", ", ".join(space), " ".join(shadowed))
    preset = [f"+experiment={settings.experiment}"] if settings.experiment else []
    base = [*preset, *(o for o in cli if _key(o) not in space)]
    check_space(space, base)
    probe = training_part(compose_trial(base))
    group = f"{probe.experiment_name or 'search'}-{study_dir.name}"
    metric = "fid" if probe.trainer.eval_every else "final_loss"
    if metric == "final_loss" and any(k in space for k in LOSS_SCALE_KEYS):
        log.warning(
            "objective is the final loss, whose scale depends on %s: set "
            "trainer.eval_every to rank these by FID",
            ", ".join(LOSS_SCALE_KEYS),
        )
    n_trials = settings.n_trials
    require(is_int(n_trials, 1), "search.n_trials", n_trials, "an integer >= 1")
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        storage=settings.storage,
        study_name=settings.study_name,
        load_if_exists=settings.storage is not None,
    )
    try:
        study.optimize(
            lambda trial: run_trial(trial, space, base, study_dir, group), n_trials=n_trials
        )
    finally:  # also after Ctrl-C: the finished trials are reported
        result = report(study, list(space), metric, study_dir)
    return result


def main(cfg: DictConfig) -> float:
    """The study; returns the best value (NaN when no trial finished)."""
    hc = HydraConfig.get()
    study_dir = Path(hc.runtime.output_dir)
    cli_overrides = [o for o in hc.overrides.task if not _is_search_key(o)]
    try:
        result = search(cfg.search, cli_overrides, study_dir)
    except Interrupted as err:
        log.warning("stopped by %s; finished trials are in %s", err, study_dir / "best.json")
        sys.exit(err.exit_code)
    return float(result.get("best_value", math.nan))


cli = hydra_command("ddpm-search", __doc__, "search", main, rewrite=named_process)

if __name__ == "__main__":
    cli()
