"""Argument checks, written once: each raises :class:`~superconv.errors.ConfigError` (or the error class given)
with a message that names the argument, the value given and what is expected.

Example:
    >>> positive_int("epochs", 3)
    3
    >>> positive_int("epochs", 0)
    Traceback (most recent call last):
    ...
    superconv.errors.ConfigError: Expected epochs to be a positive integer, but got 0
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

from superconv.errors import ConfigError

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` is an ``int`` in Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(name: str, value: Any, error: type[Exception] = ConfigError, *, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (1 by default)."""
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise error(f"Expected {name} to be {what}, but got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any, error: type[Exception] = ConfigError) -> int:
    """``value`` if it is an integer >= 0."""
    if not is_int(value) or value < 0:
        raise error(f"Expected {name} to be a non-negative integer, but got {value!r}")
    return int(value)


def positive_float(name: str, value: Any, error: type[Exception] = ConfigError, *, hint: str = "") -> float:
    """``value`` as a float if it is a finite number > 0."""
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise error(f"Expected {name} to be a positive, finite number{hint and f' ({hint})'}, but got {value!r}")
    return float(value)


def fraction(
    name: str,
    value: Any,
    error: type[Exception] = ConfigError,
    *,
    low_open: bool = False,
    high_open: bool = True,
    hint: str = "",
) -> float:
    """``value`` as a float if it lies in [0, 1) (the interval's ends as asked)."""
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise error(f"Expected {name} in {interval}{hint and f' ({hint})'}, but got {value!r}")
    return float(value)


def one_of(name: str, value: T, choices: Collection[T], error: type[Exception] = ConfigError) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise error(f"Unknown {name} {value!r}: expected one of {', '.join(map(str, choices))}")
    return value
