"""What a config may say, checked before anything is built, downloaded or trained.

Each rule raises :class:`~ddpm.errors.UserError` with one line naming the key, its value
and what is allowed. Keys of an instantiated group must be parameters of its ``_target_``,
so a typo (``+model.chanels=...``) is refused instead of silently ignored.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ddpm.diffusion.objective import LOSS_WEIGHTINGS, PREDICTIONS
from ddpm.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Arguments the code passes at build time, so they are not config keys.
PASSED_AT_BUILD = {
    "sampler": {"schedule"},
    "logger": {"run_dir", "run_config", "resume_step", "resume_id"},
    "optimizer": {"params"},
}
TRAINER_KEYS = {
    "batch_size",
    "epochs",
    "max_steps",
    "max_minutes",
    "grad_clip",
    "loss_weighting",
    "seed",
    "device",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "num_samples",
    "keep_last",
    "resume",
    "eval_every",
    "eval_samples",
    "ema_decay",
    "precision",
    "compile",
    "channels_last",
    "label_dropout",
}
TOP_LEVEL = {
    "model",
    "schedule",
    "optimizer",
    "sampler",
    "dataset",
    "logger",
    "trainer",
    "experiment_name",
}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Hydra groups whose options are our presets (conf/hydra/launcher/) plus installed plugins'.
PLUGIN_GROUPS = ("hydra/launcher", "hydra/sweeper")


def _fail(key: str, value: object, allowed: str) -> None:
    raise UserError(f"{key}={value!r}: {allowed}")


def _is_number(value: object, kinds: type | tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _int(key: str, value: object, low: int, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not (_is_number(value, int) and value >= low):
        _fail(key, value, f"an integer >= {low}" + (", or null" if nullable else ""))


def _positive(
    key: str, value: object, *, nullable: bool = False, below: float | None = None
) -> None:
    if value is None and nullable:
        return
    ok = _is_number(value, (int, float)) and value > 0 and (below is None or value < below)
    if not ok:
        bound = f" and < {below}" if below is not None else ""
        _fail(key, value, f"a number > 0{bound}" + (", or null" if nullable else ""))


def _known_keys(group: str, node: DictConfig) -> None:
    """Every key of an instantiated group is a parameter of its ``_target_``."""
    from hydra.utils import get_object

    try:
        target = get_object(node._target_)
    except Exception:  # noqa: BLE001 - any import failure means the same thing to the user
        _fail(f"{group}._target_", node._target_, "an importable class or function")
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = set(params) - PASSED_AT_BUILD.get(group, set())
    for key in node:
        if key not in allowed and key not in HYDRA_KEYS:
            _fail(
                f"{group}.{key}", node[key], f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )


def validate(cfg: DictConfig) -> None:
    """Checks the composed config; raises UserError on the first problem found."""
    for key in cfg:
        if key not in TOP_LEVEL:
            _fail(str(key), cfg[key], f"unknown key; allowed: {', '.join(sorted(TOP_LEVEL))}")
    for group in ("model", "schedule", "optimizer", "sampler", "dataset", "logger"):
        _known_keys(group, cfg[group])
    for key in cfg.trainer:
        if key not in TRAINER_KEYS:
            _fail(
                f"trainer.{key}",
                cfg.trainer[key],
                f"unknown key; allowed: {', '.join(sorted(TRAINER_KEYS))}",
            )
    validate_model(cfg.model)
    validate_schedule(cfg.schedule)
    validate_trainer(cfg.trainer)
    o = cfg.optimizer
    _positive("optimizer.lr", o.lr)
    if o.get("weight_decay") is not None and not (
        _is_number(o.weight_decay, (int, float)) and o.weight_decay >= 0
    ):
        _fail("optimizer.weight_decay", o.weight_decay, "a number >= 0")
    validate_sampler(cfg.sampler, cfg.schedule.timesteps)
    classes = cfg.dataset.get("classes")
    if classes is not None and not (
        OmegaConf.is_list(classes)
        and len(classes) > 0
        and all(_is_number(c, int) and 0 <= c <= 9 for c in classes)
    ):
        _fail("dataset.classes", classes, "null or a non-empty list of digits 0..9")
    mode = cfg.logger.get("mode")
    if mode is not None and mode not in ("auto", "online", "offline", "disabled"):
        _fail("logger.mode", mode, "one of auto, online, offline, disabled")


def validate_model(m: DictConfig) -> None:
    channels = m.channels
    if (
        not OmegaConf.is_list(channels)
        or not channels
        or not all(_is_number(c, int) and c >= 1 for c in channels)
    ):
        _fail("model.channels", channels, "a non-empty list of positive integer widths")
    channels = list(channels)
    _int("model.norm_groups", m.norm_groups, 1)
    for c in channels:
        if c % m.norm_groups:
            _fail(
                "model.channels",
                channels,
                f"every width divisible by model.norm_groups={m.norm_groups}",
            )
    if not (_is_number(m.time_dim, int) and m.time_dim >= 4 and m.time_dim % 2 == 0):
        _fail("model.time_dim", m.time_dim, "an even integer >= 4")
    _int("model.in_channels", m.in_channels, 1)
    _int("model.image_size", m.image_size, 1)
    if m.image_size % 2 ** (len(channels) - 1):
        _fail(
            "model.image_size",
            m.image_size,
            f"divisible by 2^(levels-1)={2 ** (len(channels) - 1)} for {len(channels)} widths",
        )
    if m.get("prediction", "eps") not in PREDICTIONS:
        _fail("model.prediction", m.prediction, f"one of {', '.join(PREDICTIONS)}")
    _int("model.num_classes", m.get("num_classes"), 1, nullable=True)


def validate_schedule(s: DictConfig) -> None:
    _int("schedule.timesteps", s.timesteps, 1)
    if "beta_start" in s:
        for key in ("beta_start", "beta_end"):
            if not _is_number(s[key], (int, float)):
                _fail(f"schedule.{key}", s[key], "a number in (0, 1)")
        if not 0 < s.beta_start < s.beta_end < 1:
            _fail(
                "schedule.beta_start", s.beta_start, f"0 < beta_start < beta_end={s.beta_end} < 1"
            )
    if "max_beta" in s and not (_is_number(s.max_beta, (int, float)) and 0 < s.max_beta <= 1):
        _fail("schedule.max_beta", s.max_beta, "a number in (0, 1]")
    if "s" in s and not (_is_number(s.s, (int, float)) and s.s >= 0):
        _fail("schedule.s", s.s, "a number >= 0")


def validate_trainer(t: DictConfig) -> None:
    _int("trainer.batch_size", t.batch_size, 1)
    _int("trainer.max_steps", t.max_steps, 1, nullable=True)
    if t.max_steps is None:
        _int("trainer.epochs", t.epochs, 1)
    _positive("trainer.max_minutes", t.max_minutes, nullable=True)
    _positive("trainer.grad_clip", t.grad_clip)
    _int("trainer.seed", t.seed, 0)
    _int("trainer.log_every", t.log_every, 1)
    _int("trainer.sample_every", t.sample_every, 0)
    _int("trainer.checkpoint_every", t.checkpoint_every, 0)
    _int("trainer.num_samples", t.num_samples, 1)
    _int("trainer.keep_last", t.keep_last, 1, nullable=True)
    _int("trainer.eval_every", t.eval_every, 0)
    if t.ema_decay is not None and not (
        _is_number(t.ema_decay, (int, float)) and 0 < t.ema_decay < 1
    ):
        _fail("trainer.ema_decay", t.ema_decay, "a number in (0, 1), or null for no EMA")
    _int("trainer.eval_samples", t.eval_samples, 4)
    if t.loss_weighting not in LOSS_WEIGHTINGS:
        _fail("trainer.loss_weighting", t.loss_weighting, f"one of {', '.join(LOSS_WEIGHTINGS)}")
    if t.precision not in ("fp32", "bf16", "fp16"):
        _fail("trainer.precision", t.precision, "one of fp32, bf16, fp16")
    for key in ("compile", "channels_last"):
        if not isinstance(t[key], bool):
            _fail(f"trainer.{key}", t[key], "true or false")
    if not (isinstance(t.device, str) and DEVICE.match(t.device)):
        _fail("trainer.device", t.device, "auto, cpu, mps, cuda or cuda:<index>")
    dropout = t.get("label_dropout", 0.0)
    if not (_is_number(dropout, (int, float)) and 0 <= dropout < 1):
        _fail("trainer.label_dropout", dropout, "a probability in [0, 1)")
    if t.resume is not None and not isinstance(t.resume, str):
        _fail("trainer.resume", t.resume, "auto, never, or a checkpoint path")


def validate_sampler(sampler: DictConfig, timesteps: int) -> None:
    """The sampler group's keys, for a schedule of ``timesteps`` steps (also used by
    ``ddpm.sample`` and ``ddpm.denoise``, which read T from a trained run)."""
    steps = sampler.get("steps")
    if steps is not None and not (_is_number(steps, int) and 1 <= steps <= timesteps):
        _fail("sampler.steps", steps, f"null or 1..schedule.timesteps={timesteps}")
    eta = sampler.get("eta")
    if eta is not None and not (_is_number(eta, (int, float)) and eta >= 0):
        _fail("sampler.eta", eta, "a number >= 0 (0 = deterministic DDIM, 1 = ancestral noise)")
    scale = sampler.get("guidance_scale", 1.0)
    if not (_is_number(scale, (int, float)) and scale >= 0):
        _fail(
            "sampler.guidance_scale",
            scale,
            "a number >= 0 (0 = unconditional, 1 = conditional, > 1 = guided)",
        )


def _plugin_options(group: str) -> set[str]:
    """Options the installed Hydra plugins register for ``group`` (``hydra/launcher=joblib``)."""
    if group not in PLUGIN_GROUPS:
        return set()
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports the installed plugins, which register their configs
    return {name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)}


def check_command_line(argv: Sequence[str], groups_dir: Path = CONF_DIR) -> None:
    """Refuses an unknown config-group option (``model=huge``) or key (``trainer.bs=1``) in
    one line, before Hydra composes and prints its multi-line report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except OverrideParseException as err:
        raise UserError(str(err).strip().splitlines()[0]) from None
    for o in overrides:
        group = o.key_or_group
        folder = groups_dir / group
        plugin_group = group in PLUGIN_GROUPS
        if o.is_delete() or (group.startswith("hydra") and not plugin_group):
            continue  # Hydra's own keys and groups (hydra.run.dir, hydra/job_logging)
        if not (plugin_group or folder.is_dir()):
            continue
        options = sorted({p.stem for p in folder.glob("*.yaml")} | _plugin_options(group))
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if str(value) not in options:
                _fail(group, value, f"unknown {group}; allowed: {', '.join(options)}")
    if "-m" in argv or "--multirun" in argv:
        return  # each job is composed (and validated) on its own
    from hydra import compose, initialize_config_dir

    job_args = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(config_dir=str(groups_dir), version_base="1.3"):
            compose(config_name="config", overrides=job_args)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors, said in one line
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise UserError(" ".join(lines[:2])) from None
