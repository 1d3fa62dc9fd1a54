"""The pure core of a range test: its checked settings, the LR of every update, the smoothed loss and when to stop.

Nothing here touches a model, so the sweep's rules can be read and tested on their own. They are
torch-lr-finder's, number for number:

* the LR of update ``i`` of ``num_iter`` is ``start * (end / start) ** r`` ("exp") or ``start + r * (end - start)``
  ("linear"), with ``r = i / (num_iter - 1)``, for each param group from its own start;
* the recorded (smoothed) loss is ``smooth_f * loss + (1 - smooth_f) * previous``, starting from the first loss;
  ``smooth_f=0`` records the raw losses;
* the sweep stops after the first point whose smoothed loss exceeds ``diverge_th * best`` (see :class:`Divergence`
  for losses near or below zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from superconv import checks
from superconv.errors import ConfigError

STEP_MODES = ("exp", "linear")


@dataclass(frozen=True)
class SweepPlan:
    """The checked settings of one range test (see :meth:`superconv.LRFinder.range_test` for each)."""

    start_lrs: tuple[float, ...]  # one per param group
    end_lr: float
    num_iter: int
    step_mode: str
    smooth_f: float
    diverge_th: float
    accumulation_steps: int
    non_blocking: bool
    val_batches: int | None

    def lrs(self, i: int) -> list[float]:
        """The LR of each param group at update ``i`` (torch-lr-finder's formulas, to the last bit)."""
        r = i / (self.num_iter - 1)
        if self.step_mode == "exp":
            return [start * (self.end_lr / start) ** r for start in self.start_lrs]
        return [start + r * (self.end_lr - start) for start in self.start_lrs]

    def schedule(self) -> list[float]:
        """The first param group's LR at every update."""
        return [self.lrs(i)[0] for i in range(self.num_iter)]


def make_plan(
    group_lrs: Sequence[float],
    start_lr: float | Sequence[float] | None,
    end_lr: Any,
    num_iter: Any,
    step_mode: Any,
    smooth_f: Any,
    diverge_th: Any,
    accumulation_steps: Any,
    non_blocking_transfer: Any,
    val_batches: Any,
) -> SweepPlan:
    """Check ``range_test``'s arguments (``ConfigError``, a ``ValueError``, naming each) and build the plan.

    ``group_lrs`` are the optimizer's current LRs: the sweep starts there when ``start_lr`` is None.
    """
    starts = _start_lrs(group_lrs, start_lr)
    end = checks.positive_float("end_lr", end_lr, hint="the last LR of the sweep, e.g. 10")
    if end <= max(starts):
        raise ConfigError(
            f"end_lr={end_lr!r} must be greater than the start LR {max(starts):g}; the sweep goes up from start_lr "
            "(None: the optimizer's LR) to end_lr, e.g. start_lr=1e-7, end_lr=10."
        )
    steps = checks.positive_int("num_iter", num_iter, minimum=2)
    mode = step_mode.lower() if isinstance(step_mode, str) else step_mode
    checks.one_of("step_mode", mode, STEP_MODES)
    smooth = checks.fraction(
        "smooth_f", smooth_f, hint="the weight of the newest loss in the moving average; 0: no smoothing"
    )
    if not checks.is_number(diverge_th) or not math.isfinite(diverge_th) or diverge_th < 1:
        raise ConfigError(
            f"Expected diverge_th to be a number >= 1 (stop when the smoothed loss exceeds diverge_th times the "
            f"best), e.g. 5, but got {diverge_th!r}"
        )
    accumulation = checks.positive_int("accumulation_steps", accumulation_steps)
    if not isinstance(non_blocking_transfer, bool):
        raise ConfigError(f"Expected non_blocking_transfer to be True or False, but got {non_blocking_transfer!r}")
    if val_batches is not None:
        checks.positive_int("val_batches", val_batches)
    return SweepPlan(
        tuple(starts),
        end,
        steps,
        str(mode),
        smooth,
        float(diverge_th),
        accumulation,
        non_blocking_transfer,
        val_batches,
    )


def _start_lrs(group_lrs: Sequence[float], start_lr: float | Sequence[float] | None) -> list[float]:
    if start_lr is None:
        for i, lr in enumerate(group_lrs):
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(
                    f"start_lr=None starts the sweep at the optimizer's LR, but param group {i} has lr={lr!r}; "
                    "pass start_lr (e.g. 1e-7)."
                )
        return list(group_lrs)
    if isinstance(start_lr, (list, tuple)):  # torch-lr-finder also takes one start per param group
        if len(start_lr) != len(group_lrs):
            raise ConfigError(
                f"start_lr has {len(start_lr)} values but the optimizer has {len(group_lrs)} param groups; pass one "
                "value, or one per group."
            )
        return [checks.positive_float("start_lr", v, hint="e.g. 1e-7") for v in start_lr]
    return [checks.positive_float("start_lr", start_lr, hint="e.g. 1e-7")] * len(group_lrs)


class Divergence:
    """torch-lr-finder's smoothing and stop rule, which also holds for losses near or below zero.

    Each :meth:`add` returns the smoothed loss to record. :meth:`diverged` is torch-lr-finder's
    ``smoothed > diverge_th * best`` whenever the best smoothed loss is positive and at least a tenth of the drop
    from the first one (the usual case: then both stop at the same point). Otherwise the threshold is
    ``best + (diverge_th - 1) * max(|best|, 0.1 * |first - best|)``: for a negative best (a log-likelihood, a
    shifted loss) ``diverge_th * best`` would lie below the best and stop at once, and for a best near zero it
    would stop on noise.

    Example:
        >>> watch = Divergence(smooth_f=0.0, diverge_th=5.0)
        >>> [watch.diverged(watch.add(v)) for v in (2.0, 1.0, 4.0, 6.0)]
        [False, False, False, True]
    """

    def __init__(self, smooth_f: float, diverge_th: float) -> None:
        self.smooth_f, self.diverge_th = smooth_f, diverge_th
        self.first = self.best = self.last = math.nan
        self.count = 0

    def add(self, loss: float) -> float:
        """Smooth ``loss`` into the curve and return the value to record."""
        if self.count and self.smooth_f > 0:
            loss = self.smooth_f * loss + (1 - self.smooth_f) * self.last  # torch-lr-finder's expression
        if self.count == 0:
            self.first = self.best = loss
        self.best = min(self.best, loss)
        self.last = loss
        self.count += 1
        return loss

    def diverged(self, smoothed: float) -> bool:
        best, drop = self.best, abs(self.first - self.best)
        if best > 0 and best >= 0.1 * drop:
            return smoothed > self.diverge_th * best
        return smoothed > best + (self.diverge_th - 1) * max(abs(best), 0.1 * drop)
