"""Which learning rates verification probes (:mod:`superconv.finder.verify`): read off one range test's curve.

The default candidates (round 3 of issue 18, ``benchmarks/results/lr_suggestion.md``: chosen on fourteen
development workloads by validation accuracy) are two points of superconv's own lag-free curve:

* the suggestion itself (``result.suggestion``, the minimum of the curve), right for many workloads, and
* the geometric mean of the steepest descent and the minimum: the steepest point alone is far too low on
  workloads whose loss keeps falling steeply over a wide range (a small transformer lost 30 points there), the
  minimum too high where a one-cycle run's long stay near its peak is less stable than the sweep's quick passage
  (an MLP with SGD falls off a cliff just above it, a ResNet trains best well below it): the point between
  covers those.

:func:`lagged_steepest` is torch-lr-finder's suggestion from the same sweep (round 2's second candidate, kept for
comparison); :func:`candidate_lrs` gives the alternative: the suggestion and neighbours a constant factor apart.

Example:
    >>> from superconv.finder.result import RangeTestResult
    >>> lrs = [10 ** (-4 + i / 10) for i in range(40)]
    >>> smoothed = [2.0 - min(i, 30) / 20 for i in range(40)]
    >>> result = RangeTestResult(lrs=lrs, losses=smoothed, smoothed_losses=smoothed, suggestion=0.05)
    >>> [round(x, 4) for x in default_candidates(result)]
    [0.0126, 0.05]
"""

from __future__ import annotations

import math

import numpy as np

import superconv.finder.suggest as suggest
from superconv import checks
from superconv.errors import ConfigError
from superconv.finder.result import RangeTestResult

#: torch-lr-finder's ``plot(skip_start=10, skip_end=5)``: the points its steepest gradient ignores.
SKIP_START, SKIP_END = 10, 5
#: Candidates closer than this ratio are probed once (the lower one is kept).
MIN_RATIO = 1.15
DEFAULT_SPACING = 3.0


def lagged_steepest(result: RangeTestResult) -> float | None:
    """torch-lr-finder's suggestion from this sweep: the LR of the most negative ``np.gradient`` of the smoothed
    losses (its forward-only moving average, ``result.smoothed_losses``) without the first 10 and last 5 points.

    Returns:
        The LR, or ``None`` when the sweep recorded too few points (fewer than 17).

    Example:
        >>> r = RangeTestResult(lrs=[float(i) for i in range(1, 21)], losses=[0.0] * 20,
        ...                     smoothed_losses=[5.0] * 12 + [4.0, 2.0, 1.5, 1.4] + [1.3] * 4, suggestion=1.0)
        >>> lagged_steepest(r)
        13.0
    """
    smoothed = np.asarray(result.smoothed_losses[SKIP_START:-SKIP_END], dtype=np.float64)
    lrs = result.lrs[SKIP_START:-SKIP_END]
    if smoothed.size < 2 or not np.all(np.isfinite(smoothed)):
        return None
    return float(lrs[int(np.argmin(np.gradient(smoothed)))])


def curve_steepest(result: RangeTestResult) -> float | None:
    """superconv's steepest-descent estimate on the result's lag-free curve (re-read from the raw losses, as
    :func:`superconv.finder.suggest.analyze` computes it); ``None`` when the curve gives none."""
    if len(result.lrs) < 2:
        return None
    analysis = suggest.analyze(result.lrs, result.losses, result.smooth_f, stopped_early=result.diverged)
    value = analysis.estimates.get("steepest", math.nan)
    return float(value) if math.isfinite(value) and value > 0 else None


def default_candidates(result: RangeTestResult) -> list[float]:
    """The geometric mean of the curve's steepest point (:func:`curve_steepest`) and the suggestion, and the
    suggestion itself; increasing, probed once when closer than :data:`MIN_RATIO` (the lower one is kept); the
    suggestion alone when the curve has no steepest point.

    Raises:
        ConfigError: When the range test gave no usable suggestion.
    """
    suggestion = result.suggestion
    if not (checks.is_number(suggestion) and np.isfinite(suggestion) and suggestion > 0):
        raise ConfigError(
            f"The range test gave no usable suggestion ({suggestion!r}, quality {result.quality}): "
            "run it again with more iterations, or pass candidates=[...] to verify"
        )
    steepest = curve_steepest(result)
    between = math.sqrt(steepest * float(suggestion)) if steepest is not None else float(suggestion)
    lrs = sorted([between, float(suggestion)])
    return [lrs[0]] if lrs[1] / lrs[0] < MIN_RATIO else lrs


def candidate_lrs(suggestion: float, spacing: float = DEFAULT_SPACING, span: tuple[int, int] = (1, 0)) -> list[float]:
    """The suggestion and ``span = (below, above)`` neighbours a factor ``spacing`` apart, increasing.

    Example:
        >>> [round(x, 4) for x in candidate_lrs(0.03, 3.0, (1, 1))]
        [0.01, 0.03, 0.09]
        >>> [round(x, 4) for x in candidate_lrs(0.03, 3.0, (2, 0))]
        [0.0033, 0.01, 0.03]
    """
    checks.positive_float("suggestion", suggestion, hint="the suggested LR")
    if not checks.is_number(spacing) or not spacing > 1:
        raise ConfigError(f"Expected spacing to be a number > 1 (the candidates' ratio, e.g. 3), but got {spacing!r}")
    ok = isinstance(span, tuple) and len(span) == 2 and all(checks.is_int(k) and k >= 0 for k in span)
    if not ok or sum(span) == 0:
        raise ConfigError(
            f"Expected span to be (below, above): two integers >= 0, not both 0 (how many candidates below and above "
            f"the suggestion), but got {span!r}"
        )
    below, above = span
    return [suggestion * spacing**k for k in range(-below, above + 1)]
