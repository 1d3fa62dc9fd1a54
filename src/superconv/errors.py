"""The errors superconv raises for bad input.

Every message says what was expected, what was given, and what to do. The CLI turns these
into one line on stderr and exit status 2.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad argument or option: the message names it, the value, and what is expected."""


class DataError(ConfigError):
    """A dataset that cannot be found, read, or used as asked."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not match the run it is loaded into."""
