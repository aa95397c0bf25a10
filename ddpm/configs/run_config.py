"""The composed config: its schema, and how its groups become objects.

Rules live where the values are used: the top level's keys and types in :class:`RunConfig`
(:func:`check_top_level` refuses a stray top-level key), each group's keys in its
``_target_``'s signature, and each range in that target's constructor (which raises
:class:`~ddpm.errors.UserError` with one line). :func:`build_parts` builds the cheap objects,
so building them *is* the validation, before any data is read or file written.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Unpack, get_args, get_origin, get_type_hints

import torch
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from ddpm.configs.later_keys import completed
from ddpm.configs.presets import CONF_DIR, build
from ddpm.errors import UserError, fail, is_int, require
from ddpm.training.lr_schedule import remember_base_lr

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
GROUPS = ("model", "schedule", "process", "optimizer", "sampler", "dataset", "logger", "trainer")
# Arguments the code passes at build time, so they are not config keys.
PASSED_AT_BUILD = {
    "sampler": {"schedule"},
    "process": {"schedule"},
    "logger": {"run_dir", "run_config", "resume_step", "resume_id"},
    "optimizer": {"params"},
}
# Hydra groups whose options are our presets (conf/hydra/launcher/) plus installed plugins'.
PLUGIN_GROUPS = ("hydra/launcher", "hydra/sweeper")


@dataclass
class RunConfig:
    """The top level of a training config: one node per group, plus these keys. Commands
    that extend it (bench, search) add their own; :func:`check_top_level` refuses any other
    key in a training config."""

    model: Any = MISSING
    schedule: Any = MISSING
    process: Any = MISSING
    optimizer: Any = MISSING
    sampler: Any = MISSING
    dataset: Any = MISSING
    logger: Any = MISSING
    trainer: Any = MISSING
    device: str = MISSING  # auto = cuda when present, else cpu; or cpu, mps, cuda, cuda:<n>
    experiment_name: str | None = MISSING  # set by experiment presets; names the W&B group


def check_keys(group: str, node: DictConfig) -> None:
    """Every key of a group is a parameter of its ``_target_`` (a typo is refused, not
    silently ignored)."""
    try:
        target = get_object(node._target_)
    except Exception:  # noqa: BLE001 - any import failure means the same thing to the user
        fail(f"{group}._target_", node.get("_target_"), "an importable class or function")
    params = config_parameters(target)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = set(params) - PASSED_AT_BUILD.get(group, set())
    for key in node:
        if key not in allowed and key not in HYDRA_KEYS:
            fail(f"{group}.{key}", node[key], f"unknown key; allowed: {', '.join(sorted(allowed))}")
    choices = literal_choices(target)
    for key, values in choices.items():
        if key in node and node[key] not in values:
            fail(f"{group}.{key}", node[key], f"one of {', '.join(map(str, values))}")


def config_parameters(target: Any) -> dict[str, inspect.Parameter]:
    """The keys ``target`` takes from a config: its signature's parameters, with a
    ``**options: Unpack[SomeTypedDict]`` spelled out as that dict's keys (keyword-only, no
    default), so options a base class shares are checked like a subclass's own. Any other
    ``**kwargs`` stays open-ended."""
    params = dict(inspect.signature(target).parameters)
    spread = [name for name, p in params.items() if p.kind is p.VAR_KEYWORD]
    if not spread:
        return params
    try:
        hint = get_type_hints(target.__init__ if inspect.isclass(target) else target)[spread[0]]
    except Exception:  # noqa: BLE001 - no resolvable hint: an open-ended **kwargs
        return params
    if get_origin(hint) is not Unpack:
        return params
    del params[spread[0]]
    for key in get_type_hints(get_args(hint)[0]):
        params[key] = inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY)
    return params


def literal_choices(target: Any) -> dict[str, tuple[Any, ...]]:
    """Parameters annotated ``Literal[...]``: their allowed values, checked before the
    target is built (for targets built later, such as the logger that opens the run)."""
    try:
        hints = get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - unresolvable annotations simply carry no choices
        return {}
    return {k: get_args(h) for k, h in hints.items() if get_origin(h) is Literal}


@dataclass
class Parts:
    """The objects a training run is made of, built from its config."""

    settings: Any  # ddpm.training.settings.TrainerSettings
    model: torch.nn.Module
    schedule: Any  # ddpm.diffusion.schedule.NoiseSchedule: the process's grid
    sampler: Any  # ddpm.samplers.base.Sampler
    optimizer: torch.optim.Optimizer
    dataset: Any  # has .load() -> ImageDataset
    logger: Any  # a partial: called with the run dir it opens
    process: Any  # ddpm.processes.Process


def check_top_level(cfg: DictConfig) -> None:
    """A training config holds the fields of :class:`RunConfig` and nothing else."""
    allowed = [f.name for f in fields(RunConfig)]
    for key in cfg:
        if key not in allowed:
            fail(str(key), cfg[key], f"unknown key; allowed: {', '.join(sorted(allowed))}")


def build_process(cfg: DictConfig) -> Any:
    """The run's :class:`~ddpm.processes.Process`: ``cfg.process``, given the built
    ``cfg.schedule`` when its target takes one (``process=ddpm``); configs written before
    processes existed (old checkpoints) have no ``process`` and get the DDPM process."""
    node = cfg.get("process")
    if node is None:
        node = DictConfig({"_target_": "ddpm.processes.DDPMProcess"})
    node = completed("process", node)  # a run saved before a key existed
    target = get_object(node._target_)
    if "schedule" in inspect.signature(target).parameters:
        return build(node, schedule=build(cfg.schedule))
    return build(node)


def build_optimizer(node: DictConfig, model: torch.nn.Module, settings: Any) -> Any:
    """The optimizer group over ``model``'s parameters, its lr scaled for the batch size by
    ``trainer.lr_batch_rule`` (``settings``: the built TrainerSettings)."""
    optimizer = build(node)(model.parameters())
    for group in optimizer.param_groups:
        group["lr"] *= settings.lr_factor()
    remember_base_lr(optimizer)  # the rate trainer.lr_schedule scales step by step
    return optimizer


def build_parts(cfg: DictConfig, device: torch.device | str = "cpu") -> Parts:
    """Builds every group (the model seeded by ``trainer.seed``, on ``device``); any bad key
    or value raises UserError before anything is read or written."""
    for group in GROUPS:
        if group in cfg or group != "schedule":  # no schedule: a process that reads none
            check_keys(group, cfg[group])
    settings = build(cfg.trainer)
    torch.manual_seed(settings.seed)  # before building: initial weights depend on it
    model = build(cfg.model).to(device)
    process = build_process(cfg).to(device)
    process.check_model(model)
    schedule = process.grid
    sampler = build(cfg.sampler, schedule=schedule)
    process.check_sampler(sampler)
    optimizer = build_optimizer(cfg.optimizer, model, settings)
    dataset = build(cfg.dataset)
    logger = build(cfg.logger, _partial_=True)
    return Parts(settings, model, schedule, sampler, optimizer, dataset, logger, process)


def validate(cfg: DictConfig) -> None:
    """Raises UserError on the first bad key or value of ``cfg`` (builds it on the CPU)."""
    from ddpm.hardware.devices import pick_device

    check_top_level(cfg)
    pick_device(cfg.device)
    build_parts(cfg)


def _plugin_options(group: str) -> set[str]:
    """Options the installed Hydra plugins register for ``group`` (``hydra/launcher=joblib``)."""
    if group not in PLUGIN_GROUPS:
        return set()
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports the installed plugins, which register their configs
    return {name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)}


def check_command_line(
    argv: Sequence[str], config_name: str = "config", groups_dir: Path = CONF_DIR
) -> None:
    """Refuses an unknown config-group option (``model=huge``) or key (``trainer.bs=1``) in
    one line, before Hydra composes and prints its multi-line report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except OverrideParseException as err:
        raise UserError(str(err).strip().splitlines()[0]) from None
    # Config folders added with hydra.searchpath=[file://DIR] hold options too (extensions).
    roots = [groups_dir] + [
        Path(str(entry).removeprefix("file://"))
        for o in overrides
        if o.key_or_group == "hydra.searchpath"
        for entry in o.value()
        if str(entry).startswith("file://")
    ]
    for o in overrides:
        group = o.key_or_group
        folders = [root / group for root in roots]
        plugin_group = group in PLUGIN_GROUPS
        if o.is_delete() or (group.startswith("hydra") and not plugin_group):
            continue  # Hydra's own keys and groups (hydra.run.dir, hydra/job_logging)
        if not (plugin_group or any(f.is_dir() for f in folders)):
            continue
        found = {p.stem for f in folders for p in f.glob("*.yaml")}
        options = sorted(found | _plugin_options(group))
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if str(value) not in options:
                fail(group, value, f"unknown {group}; allowed: {', '.join(options)}")
    if "-m" in argv or "--multirun" in argv:
        return  # each job is composed (and validated) on its own
    from hydra import compose, initialize_config_dir

    swept = {a for a, o in zip(args, overrides, strict=True) if o.is_sweep_override()}
    job_args = [
        a
        for a in args
        if (a.startswith("hydra.searchpath") or not a.lstrip("+~").startswith("hydra"))
        and a not in swept
    ]
    try:
        with initialize_config_dir(config_dir=str(groups_dir), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=job_args, return_hydra_config=True)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors, said in one line
        raise UserError(one_line(err)) from None
    if str(OmegaConf.select(cfg, "hydra.mode")) == "RunMode.MULTIRUN":
        return  # a preset made it a sweep (+replicates=3, +experiment=...): each job is checked
    if swept:
        first = sorted(swept)[0]
        fail(first.split("=")[0], first.split("=", 1)[1], "a sweep: add -m (or --multirun)")
    with open_dict(cfg):
        del cfg["hydra"]
    check_seeds(cfg)
    if "_target_" in (cfg.get("process") or {}):  # a training config: no key named in vain
        from ddpm.configs.unread import check_named

        check_named(cfg, job_args)


def seeds(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every ``seed`` key of a config, at any depth (``seed``, ``trainer.seed``, ...)."""
    if not isinstance(node, dict):
        return []
    found = [(f"{prefix}seed", node["seed"])] if "seed" in node else []
    for key, child in node.items():
        found += seeds(child, f"{prefix}{key}.")
    return found


def check_seeds(cfg: DictConfig) -> None:
    """A seed means the same in every command: an integer >= 0 (torch, numpy and Optuna
    take nothing else). Checked before the command reads or writes anything."""
    for key, value in seeds(OmegaConf.to_container(cfg, resolve=False)):
        if not (isinstance(value, str) and value.startswith("${")):  # resolved later
            require(is_int(value, 0), key, value, "an integer >= 0")


def one_line(err: BaseException) -> str:
    """Hydra's multi-line report as one line: its first two lines joined."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return " ".join(lines[:2]) or type(err).__name__
