"""The one exception type for bad input a user can fix (config, files, paths).

Entry points print its message as a single line and exit non-zero, with no traceback.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input: the message names the key or file, its value, and what is allowed."""


def one_line_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Wraps a command's entry: a UserError ends it with ``error: <message>`` and exit code 1."""

    @functools.wraps(fn)
    def entry(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            sys.exit(f"error: {err}")

    return entry
