"""The one exception type for bad input a user can fix (config, files, paths).

Entry points print its message as a single line and exit non-zero, with no traceback.
"""


class UserError(Exception):
    """Bad input: the message names the key or file, its value, and what is allowed."""
