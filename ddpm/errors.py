"""The one exception type for bad input a user can fix (config, files, paths), and the small
checks constructors use to raise it.

Entry points print its message as a single line and exit 1, with no traceback. Each rule
(a range, a set of choices) is checked once, by the constructor that uses the value, with
:func:`require`, so the message always reads ``<key>=<value>: <what is allowed>``.
"""

from __future__ import annotations

from typing import NoReturn


class UserError(Exception):
    """Bad input: the message names the key or file, its value, and what is allowed."""


def fail(key: str, value: object, allowed: str) -> NoReturn:
    raise UserError(f"{key}={value!r}: {allowed}")


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raises ``UserError('<key>=<value>: <allowed>')`` unless ``ok``."""
    if not ok:
        fail(key, value, allowed)


def is_int(value: object, low: int | None = None) -> bool:
    """An int (not a bool), at least ``low`` when given."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    return ok and (low is None or value >= low)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plain(value: object) -> object:
    """OmegaConf containers as plain lists/dicts, so messages and checks see Python values."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
