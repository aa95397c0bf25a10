"""The one front end every command shares: ``--help``, one-line errors, exit codes.

Each command is a Hydra app over a config in ``conf/``. Before Hydra runs, the command line
is checked (an unknown group option or key is one ``error:`` line, exit 1, nothing created);
while the command runs, a :class:`~ddpm.errors.UserError` ends it the same way. In a sweep
(``-m``) a job's error is raised instead, so the sweep reports it after the other jobs.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from ddpm.configs.presets import CONF_DIR
from ddpm.configs.run_config import check_command_line, check_seeds
from ddpm.errors import UserError

Task = Callable[[DictConfig], Any]


def job_folder(*parts: str) -> str:
    """``${job_folder:a,b,...}``: the non-empty parts joined by commas, a ``/`` inside a value
    made ``_`` (one folder, not a tree). A sweep subdir made of a preset's name and
    ``hydra.job.override_dirname`` gives every swept key its own folder and keeps the bare
    name when nothing else is set (conf/experiment/formulations.yaml)."""
    return ",".join(str(p).replace("/", "_") for p in parts if str(p))


OmegaConf.register_new_resolver("job_folder", job_folder, replace=True)


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sampler_choice(default: str = "sampler", group: str = "sampler") -> str:
    """The option picked from the sampler group (``ddim``, ...), when running under Hydra;
    ``group="sampler@student"``: ddpm.distill's student's. ``default`` when none was picked."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        return default if choice is None else str(choice)
    return default


def one_line_errors(task: Task) -> Task:
    """A UserError ends a single job with ``error: <message>`` and exit code 1."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        try:
            if in_sweep():  # a single run's seeds were checked before Hydra ran
                check_seeds(cfg)
            return task(cfg)
        except UserError as err:
            if in_sweep():
                raise  # the sweep names the failed job and goes on with the others
            sys.exit(f"error: {err}")

    return run


def print_help(prog: str, doc: str, config_name: str) -> None:
    """Usage from the command's docstring, then every key with its default."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name)
    print(f"usage: {prog} [key=value ...] [group=option ...] [-m for a sweep]\n")
    print(doc.strip() + "\n")
    print(f"Keys and defaults (conf/{config_name}.yaml; groups are folders of conf/):\n")
    print(OmegaConf.to_yaml(cfg, resolve=False))


NUMBERED = re.compile(r"^(?P<key>[+~]{0,2}(?P<group>\w[\w/]*))=(?P<option>\d+)$")


def numbered_options(args: list[str], conf: Path = CONF_DIR) -> list[str]:
    """``+replicates=3`` as ``+replicates='3'``: Hydra reads a bare number as an int and takes
    no int as a group's option, so an option named by a number (``conf/replicates/3.yaml``)
    is passed on quoted. Any other argument is left as it is."""
    out = []
    for arg in args:
        m = NUMBERED.match(arg)
        if m and (conf / m["group"] / f"{m['option']}.yaml").is_file():
            arg = f"{m['key']}='{m['option']}'"
        out.append(arg)
    return out


def hydra_command(
    prog: str,
    doc: str,
    config_name: str,
    task: Task,
    rewrite: Callable[[list[str]], list[str]] | None = None,
) -> Callable[[Sequence[str] | None], Any]:
    """The console entry of a command: ``python -m ddpm.<name>`` and ``ddpm-<name>``.

    ``rewrite`` turns a convenience form into plain overrides first (``ddpm-compare DIR``).
    """

    def entry(argv: Sequence[str] | None = None) -> Any:
        args = list(sys.argv[1:] if argv is None else argv)
        if rewrite is not None:
            args = rewrite(args)
        args = numbered_options(args)
        if "-h" in args or "--help" in args:
            print_help(prog, doc, config_name)
            return None
        try:
            check_command_line(args, config_name)
        except UserError as err:
            sys.exit(f"error: {err}")
        sys.argv[1:] = args
        app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        return app(one_line_errors(task))()

    return entry
