"""The comparison's figures: one row per (schedule, role), with its accuracies and how many times fewer updates and
seconds one-cycle needs to reach two targets — the other run's peak test accuracy and one-cycle's own final accuracy.

Every ratio comes twice, without and with the LR range test's cost added to one-cycle's side, and always with the
interval its evaluation grid allows: a curve first reaches a target somewhere between two evaluations
(:meth:`superconv.comparison.runs.Curve.crossing`), so a ratio of two crossings lies in
``[low_other / high_one_cycle, high_other / low_one_cycle]``. Over several seeds a row shows means; the interval of
a mean is the mean of the intervals' ends.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from superconv.comparison.runs import Crossing, Run

#: The targets a row is measured against: name -> target accuracy for (other run, one-cycle run).
TARGETS: dict[str, Callable[[Run, Run], float]] = {
    "baseline_peak": lambda other, one_cycle: other.peak_accuracy,
    "one_cycle_final": lambda other, one_cycle: one_cycle.final_accuracy,
}
RATIOS = ("updates", "updates_with_range_test", "seconds", "seconds_with_range_test")
ROLES = ("one-cycle", "tuned", "default")


def ratio_interval(other: tuple[float, float], one_cycle: tuple[float, float]) -> tuple[float, float, float] | None:
    """``(ratio, low, high)`` of two costs given as ``(low, high)``; None when one-cycle's cost is zero.

    The ratio itself reads both at the evaluation that saw the target (the intervals' high ends); ``high`` is
    infinite when one-cycle's low end is zero (it reached the target at its first evaluation after the start).
    """
    if one_cycle[1] <= 0:
        return None
    high = other[1] / one_cycle[0] if one_cycle[0] > 0 else math.inf
    return other[1] / one_cycle[1], other[0] / one_cycle[1], high


def seed_ratios(other: Crossing, one_cycle: Crossing, run: Run) -> dict[str, tuple[float, float, float] | None]:
    """The four ratios of one seed; ``run`` is the one-cycle run (its range test's cost)."""
    updates_rt, seconds_rt = run.range_test_updates, run.range_test_seconds
    o_updates, o_seconds = one_cycle.updates, one_cycle.seconds
    return {
        "updates": ratio_interval(other.updates, o_updates),
        "updates_with_range_test": ratio_interval(
            other.updates, (o_updates[0] + updates_rt, o_updates[1] + updates_rt)
        ),
        "seconds": ratio_interval(other.seconds, o_seconds),
        "seconds_with_range_test": ratio_interval(
            other.seconds, (o_seconds[0] + seconds_rt, o_seconds[1] + seconds_rt)
        ),
    }


def mean(values: Sequence[float | None]) -> float | None:
    """The mean, or None when any value is missing."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present and len(present) == len(values) else None


def mean_interval(values: Sequence[Sequence[float] | None]) -> list[float] | None:
    """The element-wise mean of ``[low, high]`` pairs (None when any is missing)."""
    if not values or any(v is None for v in values):
        return None
    return [statistics.fmean(float(v[k]) for v in values if v is not None) for k in (0, 1)]


def to_target(pairs: list[tuple[Run, Run]], target_of: Callable[[Run, Run], float]) -> dict[str, Any]:
    """One target's figures for a row: ``pairs`` are ``(other run, one-cycle run)`` of each seed."""
    targets = [target_of(other, one) for other, one in pairs]
    crossings = [(other.curve.crossing(t), one.curve.crossing(t)) for (other, one), t in zip(pairs, targets)]
    per_seed: dict[str, list[tuple[float, float, float] | None]] = {name: [] for name in RATIOS}
    for (_, one), (b, o) in zip(pairs, crossings):
        # A target reached before any training (at the initial weights) says nothing about speed: no ratio.
        if b is not None and o is not None and b.updates[1] > 0 and o.updates[1] > 0:
            ratios = seed_ratios(b, o, one)
        else:
            ratios = dict.fromkeys(RATIOS)
        for name in RATIOS:
            per_seed[name].append(ratios[name])
    out: dict[str, Any] = {
        "target": statistics.fmean(targets),
        "one_cycle_updates": mean_interval([o.updates if o else None for _, o in crossings]),
        "other_updates": mean_interval([b.updates if b else None for b, _ in crossings]),
        "range_test_updates": statistics.fmean(one.range_test_updates for _, one in pairs),
        "range_test_seconds": statistics.fmean(one.range_test_seconds for _, one in pairs),
    }
    for name, values in per_seed.items():
        ratio = mean([v[0] if v else None for v in values])
        out[name] = None if ratio is None else {
            "ratio": ratio,
            "interval": mean_interval([v[1:] if v else None for v in values]),
            "per_seed": [v[0] if v else None for v in values],
        }  # fmt: skip
    return out


def summarize(runs: list[Run], one_cycle: dict[int, Run], schedule: str, role: str) -> dict[str, Any] | None:
    """The row of (``schedule``, ``role``) over its seeds; None when no run has them."""
    present = [r for r in runs if r.schedule == schedule and r.role == role]
    if not present:
        return None
    row: dict[str, Any] = {
        "schedule": schedule,
        "role": role,
        "lr": statistics.fmean(r.lr for r in present),
        "total_steps": present[0].total_steps,
        "final_accuracy": statistics.fmean(r.final_accuracy for r in present),
        "final_accuracy_range": [min(r.final_accuracy for r in present), max(r.final_accuracy for r in present)],
        "best_checkpoint_accuracy": mean([r.best_checkpoint_accuracy for r in present]),
        "peak_accuracy": statistics.fmean(r.peak_accuracy for r in present),
        "range_test_updates": statistics.fmean(r.range_test_updates for r in present),
        "range_test_seconds": statistics.fmean(r.range_test_seconds for r in present),
    }
    is_reference = schedule == "one-cycle" and role == "one-cycle"
    pairs = [(r, one_cycle[r.seed]) for r in present]
    for name, target_of in TARGETS.items():
        row[name] = None if is_reference else to_target(pairs, target_of)
    return row


def rows(runs: list[Run], others: Sequence[str]) -> list[dict[str, Any]]:
    """One-cycle's row first, then each other schedule's rows by role (one-cycle variants, tuned, default)."""
    one_cycle = {r.seed: r for r in runs if r.schedule == "one-cycle" and r.role == "one-cycle"}
    keys = [("one-cycle", "one-cycle")] + [(schedule, role) for schedule in others for role in ROLES]
    found = (summarize(runs, one_cycle, schedule, role) for schedule, role in keys)
    return [row for row in found if row is not None]
