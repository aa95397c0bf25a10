"""Keys that only some processes read: what a run does with them under the others.

The ``schedule`` group and ``model.prediction`` are DDPM's (``DDPMProcess.reads``); a flow or
EDM run never reads them. ``model.interval_input`` is MeanFlow's, and ``trainer.loss_weighting``
every process's but MeanFlow's (its loss weights itself). So a run refuses them when the
command line names them under such a process (one line that says which process reads them),
and drops the ``schedule`` node a recipe composed from the config it records and logs, so what
a run records is what it ran. Named with no process at all, such a key picks the one process
that reads it (:func:`named_process`): the study note's ``model=small schedule=linear`` trains
DDPM under the flow default.
``model.prediction`` and ``model.interval_input`` stay: the network is built with them, and each
process checks they are what it trains (``eps``; the interval input for MeanFlow only).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from ddpm.configs.presets import CONF_DIR
from ddpm.errors import fail

DROPPED = ("schedule",)  # groups removed from a run's config under a process that ignores them
PICKS_PROCESS = ("process", "recipe", "experiment", "formulation")  # groups that choose one


@functools.cache
def readers() -> dict[str, tuple[str, ...]]:
    """Each key some process reads -> the ``process=`` options that read it (conf/process/)."""
    found: dict[str, list[str]] = {}
    for path in sorted((CONF_DIR / "process").glob("*.yaml")):
        target = get_object(OmegaConf.load(path)._target_)
        for key in getattr(target, "reads", ()):
            found.setdefault(key, []).append(path.stem)
    return {key: tuple(options) for key, options in found.items()}


def _key(override: str) -> tuple[str, str]:
    """``+schedule.timesteps=50`` -> (``schedule.timesteps``, ``50``)."""
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def _under(key: str, group: str) -> bool:
    """Whether ``key`` is ``group`` or a key inside it."""
    return key == group or key.startswith(group + ".")


def named_process(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``process=<p>`` added when ``p`` is the one process that reads every
    process-specific key it names, and it names nothing that picks a process (``process``, a
    recipe, an experiment, a formulation).

    The study note's ``model=small schedule=linear`` names DDPM's schedule, so it trains DDPM
    whichever process the default recipe uses; the run records ``process=ddpm`` among its
    overrides. Keys of several processes, or of none, leave ``argv`` as it is.
    """
    keys = [_key(a)[0] for a in argv if "=" in a and not a.startswith("-")]
    if any(k.split(".")[0] in PICKS_PROCESS for k in keys):
        return list(argv)
    named = [
        set(options) for key in keys for other, options in readers().items() if _under(key, other)
    ]
    common = set.intersection(*named) if named else set()
    if len(common) != 1:
        return list(argv)
    return [*argv, f"process={common.pop()}"]


def process_option(cfg: DictConfig) -> tuple[str, tuple[str, ...]]:
    """The run's process name and the keys it reads (a config without ``process``, an old
    checkpoint's, is a DDPM run)."""
    node = cfg.get("process")
    target = get_object(node._target_ if node is not None else "ddpm.processes.DDPMProcess")
    return target.name, tuple(getattr(target, "reads", ()))


def unread(cfg: DictConfig) -> list[str]:
    """The keys some process reads and this run's process does not."""
    _, reads = process_option(cfg)
    return [key for key in readers() if key not in reads]


def check_named(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Refuses a command-line override (``schedule=cosine``, ``schedule.timesteps=-5``,
    ``model.prediction=x0``) of a key the run's process does not read."""
    name, _ = process_option(cfg)
    skipped = unread(cfg)
    for override in overrides:
        key, value = _key(override)
        for other in skipped:
            if _under(key, other):
                by = ", ".join(f"process={p}" for p in readers()[other])
                fail(key, value, f"read by {by} only; this run trains process={name} (drop it)")


def without_unread(cfg: DictConfig) -> DictConfig:
    """``cfg`` less the groups its process never reads (a copy; ``cfg`` when none)."""
    gone = [key for key in unread(cfg) if key in DROPPED and key in cfg]
    if not gone:
        return cfg
    out = cfg.copy()
    with open_dict(out):
        for key in gone:
            del out[key]
    return out
