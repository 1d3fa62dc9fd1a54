"""Which learning rates verification probes (:mod:`superconv.finder.verify`): read off one range test's curve.

The default candidates come from two estimators that fail in different places (chosen on the development
workloads of ``benchmarks/lr_suggestion.py`` in round 2 of issue 18, and again in round 4 on nineteen; round 3's
choice, the suggestion and the geometric mean of the curve's steepest point and the suggestion, lost on its
held-out workloads: ``benchmarks/results/lr_suggestion.md``):

* half of superconv's suggestion (``result.suggestion``, the minimum of the lag-free curve): the minimum is too
  high where a one-cycle run's long time near its peak is less stable than the sweep's quick passage (SGD on an
  MLP falls off a cliff just above it; a ResNet trains best 2-10x below it);
* torch-lr-finder's suggestion (:func:`lagged_steepest`): the steepest point of the forward-only moving average
  it plots, read off the SAME sweep. The average lags the raw losses, which moves the steepest point towards the
  minimum; it is often right where the minimum is too low (a small transformer with AdamW), and when it is far too
  high (an MLP with SGD) its probe diverges or loses and is not chosen.

:func:`candidate_lrs` gives the alternative: the suggestion and neighbours a constant factor apart.

Example:
    >>> from superconv.finder.result import RangeTestResult
    >>> lrs = [10 ** (-4 + i / 10) for i in range(40)]
    >>> smoothed = [2.0 - min(i, 30) / 20 for i in range(40)]
    >>> result = RangeTestResult(lrs=lrs, losses=smoothed, smoothed_losses=smoothed, suggestion=0.05)
    >>> [round(x, 4) for x in default_candidates(result)]
    [0.001, 0.025]
"""

from __future__ import annotations

import numpy as np

from superconv import checks
from superconv.errors import ConfigError
from superconv.finder.result import RangeTestResult

#: The default candidates' ratio to ``result.suggestion`` (the lower one); see the module docstring.
SUGGESTION_RATIO = 0.5
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


def default_candidates(result: RangeTestResult) -> list[float]:
    """Half the suggestion and torch-lr-finder's suggestion from the same sweep (:func:`lagged_steepest`),
    increasing, probed once when closer than :data:`MIN_RATIO`; the suggestion itself replaces the second when
    the sweep is too short for it.

    Raises:
        ConfigError: When the range test gave no usable suggestion.
    """
    suggestion = result.suggestion
    if not (checks.is_number(suggestion) and np.isfinite(suggestion) and suggestion > 0):
        raise ConfigError(
            f"The range test gave no usable suggestion ({suggestion!r}, quality {result.quality}): "
            "run it again with more iterations, or pass candidates=[...] to verify"
        )
    steepest = lagged_steepest(result)
    lrs = sorted([SUGGESTION_RATIO * float(suggestion), steepest if steepest is not None else float(suggestion)])
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
