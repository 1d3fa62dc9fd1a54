"""A time budget for a run, and the pure arithmetic that turns it into a number of optimizer updates.

The one-cycle policy needs its length up front. With a budget, the length is what fits: after the range test (its
time is spent already), the measured seconds per update and per evaluated example give how many updates, with one
validation pass per epoch and a final test, end within what is left. The whole schedule (warm-up, anneal,
annihilation tail) then lies inside the budget; nothing is cut off mid-cycle.

Example:
    >>> plan = plan_updates(100.0, seconds_per_update=0.1, seconds_per_epoch_eval=2.0, updates_per_epoch=100,
    ...                     seconds_final=1.0)
    >>> plan.updates, plan.epochs, round(plan.seconds, 1)
    (810, 9, 100.0)
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from superconv.errors import ConfigError

#: The fewest updates a budget may give a one-cycle run (below this the cycle is mostly warm-up).
MIN_UPDATES = 20


@dataclass(frozen=True)
class TimeBudget:
    """``seconds`` of wall time counted from ``started`` (a ``time.monotonic()`` reading)."""

    seconds: float
    started: float

    @classmethod
    def starting_now(cls, seconds: float) -> TimeBudget:
        return cls(parse_seconds(seconds), time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()


@dataclass(frozen=True)
class Plan:
    """How many optimizer updates fit, in how many (validation) epochs, and the seconds they should take."""

    updates: int
    epochs: int
    seconds: float
    seconds_per_update: float
    seconds_per_epoch_eval: float

    def describe(self, updates_per_epoch: int) -> str:
        return (
            f"{self.updates} updates ({self.updates / updates_per_epoch:.2f} epochs of {updates_per_epoch}) at "
            f"{1000 * self.seconds_per_update:.1f} ms per update measured, {self.seconds_per_epoch_eval:.1f} s per "
            f"validation: {self.seconds:.0f} s of training"
        )


def plan_updates(
    remaining: float,
    *,
    seconds_per_update: float,
    seconds_per_epoch_eval: float,
    updates_per_epoch: int,
    seconds_final: float = 0.0,
) -> Plan:
    """The most updates whose training, per-epoch validations and final evaluation fit in ``remaining`` seconds.

    Raises:
        ConfigError: when not even :data:`MIN_UPDATES` updates fit; the message says how much time they need.
    """
    if seconds_per_update <= 0 or updates_per_epoch < 1:
        raise ConfigError(
            f"Expected a positive seconds_per_update and updates_per_epoch, but got {seconds_per_update!r} and "
            f"{updates_per_epoch!r}"
        )

    def cost(updates: int) -> float:
        epochs = math.ceil(updates / updates_per_epoch)
        return updates * seconds_per_update + epochs * seconds_per_epoch_eval + seconds_final

    per_update = seconds_per_update + seconds_per_epoch_eval / updates_per_epoch
    updates = max(0, int((remaining - seconds_final) / per_update))
    while updates > 0 and cost(updates) > remaining:
        updates -= 1
    if updates < MIN_UPDATES:
        need = cost(MIN_UPDATES)
        raise ConfigError(
            f"The time budget leaves {max(remaining, 0.0):.1f} s for training, but one cycle of {MIN_UPDATES} updates "
            f"needs about {need:.1f} s here ({1000 * seconds_per_update:.0f} ms per update, "
            f"{seconds_per_epoch_eval:.1f} s per validation): give a larger --time-budget (at least "
            f"{math.ceil(need - remaining) + 1} s more), a smaller model or a smaller batch"
        )
    return Plan(updates, math.ceil(updates / updates_per_epoch), cost(updates), seconds_per_update,
                seconds_per_epoch_eval)  # fmt: skip


_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_seconds(value: float | int | str) -> float:
    """Seconds from a number or a text such as ``"90"``, ``"90s"``, ``"2m"``, ``"1.5min"`` or ``"1h"``.

    Example:
        >>> parse_seconds("2m"), parse_seconds(45)
        (120.0, 45.0)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", str(value).lower())
        if match is None or match.group(2) not in _UNITS:
            raise ConfigError(
                f"Expected a time budget such as 120, 90s, 2m or 1h, but got {value!r}: give seconds, or a number "
                "with the unit s, m or h"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"Expected a positive time budget in seconds, but got {value!r}")
    return seconds
