"""Pure learning-rate estimators on the arrays of an LR range test.

Everything here works on plain sequences of learning rates and losses, so a suggestion can be
recomputed, compared or tested without a model. :class:`superconv.LRFinder` records the arrays and
calls :func:`analyze`.

How a curve becomes a suggestion:

1. Non-finite points are dropped; the suggestion never sees NaN or inf.
2. The raw losses are clipped at a little above their starting level, so the explosion at the end
   of a sweep cannot drag the smoothed curve (the losses there are "bad" and how bad does not matter),
   and a running median (:data:`MEDIAN_WINDOW` points) removes isolated spikes (Adam at high LRs).
3. The curve is smoothed with the bias-corrected exponential moving average (EMA) that the range test
   shows, run forward and then backward. A forward-only EMA lags the raw losses by up to ``(1 - f) / f``
   iterations: with ``smooth_f=0.05`` that is 19 iterations, 1.5 decades of LR in a 100-step sweep
   from 1e-7 to 10, so every estimator read off it (as other finders do) is shifted by that much. The
   backward pass cancels the lag and keeps the minimum in place; the price is a wider kernel, which
   starts the visible descent earlier than the raw losses do.
4. Slopes are taken against ``log10(lr)``: the sweep is geometric, and a slope against the raw LR
   is dominated by the largest LRs (the reason Lightning's tuner suggests LRs far too small).
5. Each estimator returns an LR; :data:`DEFAULT_ESTIMATOR` is "minimum", the LR at the minimum of this
   lag-free, spike-robust curve. ``benchmarks/lr_suggestion.py`` scores it (and its verified form,
   :mod:`superconv.finder.verify`) against torch-lr-finder's steepest gradient and fastai's valley with
   short one-cycle runs: designed on development workloads, reported on held-out ones (see its results).
6. A quality flag says whether the curve supports any suggestion: ``"ok"``, ``"flat"``, ``"noisy"``,
   ``"no-descent"`` (e.g. an already trained model), ``"too-short"`` or ``"diverged-immediately"``.
7. A confidence (:mod:`superconv.finder.confidence`) grades every suggestion: "high", "medium" or "low", a
   score, a reason and what to do; verification probes (:mod:`superconv.finder.verify`) refine it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

import superconv.finder.confidence as conf
from superconv.errors import ConfigError

Quality = Literal["ok", "flat", "noisy", "no-descent", "too-short", "diverged-immediately"]

#: The estimators :func:`analyze` computes, in the order they are reported.
ESTIMATORS = ("minimum", "steepest", "valley", "min_div_10", "min_div_3", "descent")

#: The estimator whose value becomes ``suggestion``: chosen by the benchmark (see the README).
DEFAULT_ESTIMATOR = "minimum"

#: Window of the running median that removes isolated loss spikes before smoothing (odd).
MEDIAN_WINDOW = 11

#: Fewer finite points than this cannot carry a suggestion.
MIN_POINTS = 10

#: ``one_cycle_kwargs()``'s ``div_factor``: max_lr over the LR where the descent starts, kept in this range
#: (never above torch's default of 25: a cycle that starts lower only wastes steps); 25 when not "ok".
DIV_FACTOR_RANGE = (10.0, 25.0)
DEFAULT_DIV_FACTOR = 25.0


def ema(values: Sequence[float] | np.ndarray, smooth_f: float) -> np.ndarray:
    """Bias-corrected exponential moving average, the curve the range test shows.

    ``avg = (1 - smooth_f) * avg + smooth_f * x`` starting from 0, divided by ``1 - (1 - smooth_f)**(i+1)``
    so early points are not pulled towards zero (as Adam corrects its moments).

    Args:
        values: The raw losses, in order.
        smooth_f: Weight of the newest value, in (0, 1]; 1 means no smoothing.

    Returns:
        The smoothed values, same length.

    Example:
        >>> ema([2.0, 2.0, 2.0], 0.05).round(12).tolist()
        [2.0, 2.0, 2.0]
    """
    _check_smooth_f(smooth_f)
    x = np.asarray(values, dtype=np.float64)
    beta = 1.0 - smooth_f
    out = np.empty_like(x)
    avg = 0.0
    for i, v in enumerate(x):
        avg = beta * avg + smooth_f * v
        out[i] = avg / (1.0 - beta ** (i + 1))
    return out


def zero_lag_ema(values: Sequence[float] | np.ndarray, smooth_f: float) -> np.ndarray:
    """The bias-corrected EMA run forward and then backward over its output, which cancels its lag.

    The two passes make a symmetric kernel, so a minimum stays where it is (a single pass moves it right
    by up to ``(1 - smooth_f) / smooth_f`` steps).

    Args:
        values: The raw losses, in order.
        smooth_f: Weight of the newest value, in (0, 1].

    Returns:
        The smoothed values, same length, aligned with ``values`` (no shift to the right).

    Example:
        >>> zero_lag_ema([3.0, 2.0, 1.0], 1.0).tolist()
        [3.0, 2.0, 1.0]
    """
    forward = ema(values, smooth_f)
    return ema(forward[::-1], smooth_f)[::-1].copy()


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` found in one curve.

    Attributes:
        suggestion: The default estimator's LR (always a finite float, even when ``quality`` is not "ok").
        estimates: Every estimator's LR, by name (:data:`ESTIMATORS`).
        quality: "ok", or why the curve does not support a confident suggestion.
        warning: A sentence for the user when ``quality`` is not "ok", else "".
        div_factor: The recommended OneCycleLR ``div_factor`` (max_lr / the LR where the descent starts).
        curve: The lag-free smoothed curve the estimators read, over the finite points (same length as
            ``lrs`` after dropping non-finite losses).
        lrs: The learning rates of ``curve``.
        min_lr: The LR at the curve's minimum.
        noise: A robust estimate of the raw losses' noise (standard deviation) before the minimum.
        depth: How far the curve descends from its starting level to its minimum.
        confidence: How sure the suggestion is, from the curve alone (:func:`superconv.finder.confidence.from_curve`).
    """

    suggestion: float
    estimates: dict[str, float]
    quality: Quality
    warning: str
    div_factor: float
    curve: np.ndarray = field(repr=False)
    lrs: np.ndarray = field(repr=False)
    min_lr: float
    noise: float
    depth: float
    confidence: conf.Confidence


def steepest(log_lrs: np.ndarray, curve: np.ndarray) -> int:
    """Index of the steepest descent of ``curve`` against ``log_lrs``, looking only before its minimum.

    Args:
        log_lrs: ``log10`` of the learning rates (increasing).
        curve: The smoothed losses.

    Returns:
        An index into the arrays.

    Example:
        >>> steepest(np.array([0.0, 1.0, 2.0, 3.0]), np.array([5.0, 4.0, 1.0, 2.0]))
        1
    """
    stop = int(np.argmin(curve)) + 1
    if len(curve) < 2:
        return 0
    # The slope over the whole curve, so the minimum itself gets a central (not one-sided) difference.
    slope = np.gradient(curve, log_lrs)
    return int(np.argmin(slope[:stop]))


def valley(log_lrs: np.ndarray, curve: np.ndarray) -> int:
    """Index halfway (on the log-LR axis) through the valley: from where the descent starts to the minimum.

    The descent starts where the curve has covered 10% of its drop from the starting level to its minimum
    (see :func:`descent`), so a long flat plateau at small LRs is not counted as part of the valley.

    Args:
        log_lrs: ``log10`` of the learning rates (increasing).
        curve: The smoothed losses.

    Returns:
        An index into the arrays.

    Example:
        >>> valley(np.arange(7.0), np.array([5.0, 5.0, 5.0, 4.0, 3.0, 1.0, 9.0]))
        4
    """
    onset = descent(log_lrs, curve, 0.1)
    imin = int(np.argmin(curve))
    mid = 0.5 * (log_lrs[onset] + log_lrs[imin])
    # the first point at or past the middle (a tolerance, so a tie does not depend on rounding)
    return int(np.searchsorted(log_lrs, mid - 1e-9 * max(1.0, abs(mid))))


def descent(log_lrs: np.ndarray, curve: np.ndarray, fraction: float = 0.9) -> int:
    """Index where the curve has covered ``fraction`` of its drop from the starting level to its minimum.

    This is superconv's own estimator. A one-cycle run wants its peak LR high (large LRs regularize),
    but below the point where the loss stops falling; the point where most of the descent is done sits
    there, and unlike the steepest point it does not depend on a noisy derivative.

    Args:
        log_lrs: ``log10`` of the learning rates (increasing).
        curve: The smoothed losses.
        fraction: The share of the drop, in (0, 1).

    Returns:
        An index into the arrays.

    Example:
        >>> descent(np.arange(5.0), np.array([5.0, 5.0, 3.0, 1.0, 4.0]), 0.5)
        2
    """
    imin = int(np.argmin(curve))
    start_level = _start_level(curve[: imin + 1])
    target = start_level - fraction * (start_level - curve[imin])
    below = np.nonzero(curve[: imin + 1] <= target)[0]
    return int(below[0]) if below.size else imin


def analyze(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    smooth_f: float = 0.05,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    stopped_early: bool = False,
) -> Analysis:
    """Turn the raw losses of a range test into a suggestion, every estimator's value and a quality flag.

    Args:
        lrs: The learning rate of each step (increasing).
        losses: The raw loss of each step (non-finite values are dropped).
        smooth_f: The EMA weight of the newest value, in (0, 1].
        estimator: Which of :data:`ESTIMATORS` gives ``suggestion``.
        stopped_early: Whether the test stopped on divergence or a non-finite loss (lets a very short
            curve be reported as "diverged-immediately").

    Returns:
        An :class:`Analysis`.

    Example:
        >>> lrs = np.logspace(-5, 0, 60)
        >>> losses = 2 - np.tanh(3 * (np.log10(lrs) + 2.5)) + np.where(lrs > 0.1, 50 * lrs, 0)
        >>> result = analyze(lrs, losses)
        >>> result.quality, 1e-3 < result.suggestion < 1e-1
        ('ok', True)
    """
    lr_arr, loss_arr = _finite_points(lrs, losses, smooth_f, estimator)
    n = lr_arr.size
    if n < MIN_POINTS:
        return _too_short(lr_arr, loss_arr, stopped_early)

    log_lrs = np.log10(lr_arr)
    curve, first, cap = _lag_free_curve(loss_arr, smooth_f)

    full_curve, full_lrs = curve, lr_arr
    if stopped_early:
        # The loss blew up (or became NaN) right after the last point: a minimum found there is the edge of
        # divergence, not a usable LR, so the last 5% of the sweep is not a candidate.
        curve = curve[: n - max(2, n // 20)]
        lr_arr, log_lrs, loss_arr = lr_arr[: len(curve)], log_lrs[: len(curve)], loss_arr[: len(curve)]
        n = len(curve)
    imin = int(np.argmin(curve))
    start_level = _start_level(curve[: imin + 1])
    depth = float(start_level - curve[imin])
    scale = max(abs(start_level), abs(float(curve[imin])), 1e-12)
    # The spread of the unclipped EMA: clipping would flatten a curve that only rises (a trained model).
    spread = float(np.ptp(first))
    noise = _noise(np.minimum(loss_arr, cap)[: max(imin + 1, MIN_POINTS)])

    estimates = _estimates(lr_arr, log_lrs, curve, imin)
    suggestion = estimates[estimator]
    quality, warning = _flag(lr_arr, spread, depth, scale, start_level, imin, noise)

    i_onset = descent(log_lrs, curve, 0.1)
    confidence = conf.from_curve(
        quality=quality,
        warning=warning,
        noise_ratio=noise / depth if depth > 0 else math.inf,
        descent_points=imin - i_onset,
        # still falling at end_lr: the minimum is the sweep's last point (the range stopped too early)
        min_at_end=not stopped_early and imin >= n - 2,
    )
    # the LR where the descent starts (10% of the drop done) is a natural floor for the cycle
    div_factor = _div_factor(suggestion, float(lr_arr[i_onset])) if quality == "ok" else DEFAULT_DIV_FACTOR

    return Analysis(
        suggestion=suggestion,
        estimates=estimates,
        quality=quality,
        warning=warning,
        div_factor=div_factor,
        curve=full_curve,
        lrs=full_lrs,
        min_lr=float(lr_arr[imin]),
        noise=noise,
        depth=depth,
        confidence=confidence,
    )


def _finite_points(
    lrs: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray, smooth_f: float, estimator: str
) -> tuple[np.ndarray, np.ndarray]:
    """The arguments checked, and the curve's points with a finite loss and a positive LR, as float64 arrays."""
    _check_smooth_f(smooth_f)
    if estimator not in ESTIMATORS:
        raise ConfigError(
            f"estimator={estimator!r} is not one of {', '.join(ESTIMATORS)}; pass one of those names "
            f"(the default is {DEFAULT_ESTIMATOR!r})."
        )
    lr_arr = np.asarray(lrs, dtype=np.float64)
    loss_arr = np.asarray(losses, dtype=np.float64)
    if lr_arr.shape != loss_arr.shape or lr_arr.ndim != 1:
        raise ConfigError(
            f"lrs and losses must be 1-D and of the same length, got shapes {lr_arr.shape} and "
            f"{loss_arr.shape}; pass one loss per learning rate."
        )
    keep = np.isfinite(loss_arr) & np.isfinite(lr_arr) & (lr_arr > 0)
    return lr_arr[keep], loss_arr[keep]


def _noise(losses: np.ndarray) -> float:
    """The losses' noise from their second differences: a smooth trend nearly cancels there, and white noise of
    standard deviation s gives differences of standard deviation s * sqrt(6) (a robust, median-based estimate)."""
    d2 = np.diff(losses, 2)
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def _lag_free_curve(loss_arr: np.ndarray, smooth_f: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The curve the estimators read, the plain EMA the test shows, and the cap the losses were clipped at."""
    # Clip the end-of-sweep explosion a little above where the loss started, so it cannot leak into the
    # smoothed descent (see the module docstring).
    first = ema(loss_arr, smooth_f)
    start_level = _start_level(loss_arr)
    floor = float(first.min())
    cap = start_level + 0.5 * max(start_level - floor, 0.0) + 1e-12 * max(abs(start_level), 1.0)
    # A running median first: Adam's loss spikes at high LRs would otherwise drag the mean (and the
    # minimum) down to a too-small LR. Then the EMA forward and backward, each pass with twice the weight,
    # so the two passes together smooth about as much as the one the test shows.
    curve = zero_lag_ema(rolling_median(np.minimum(loss_arr, cap), MEDIAN_WINDOW), min(1.0, 2.0 * smooth_f))
    return curve, first, cap


def _div_factor(suggestion: float, onset: float) -> float:
    """max_lr over the LR where the descent starts, kept in :data:`DIV_FACTOR_RANGE`."""
    lo, hi = DIV_FACTOR_RANGE
    return float(np.clip(suggestion / onset, lo, hi)) if onset > 0 else DEFAULT_DIV_FACTOR


def _too_short(lr_arr: np.ndarray, loss_arr: np.ndarray, stopped_early: bool) -> Analysis:
    """The analysis of a curve with fewer than :data:`MIN_POINTS` finite points: a guess, flagged."""
    n = lr_arr.size
    quality: Quality = "diverged-immediately" if stopped_early else "too-short"
    fallback = float(lr_arr[0]) if n else math.nan
    if n >= 2:
        fallback = float(lr_arr[int(np.argmin(loss_arr))]) / 10.0
    warning = (
        f"the loss diverged after {n} step(s), at lr={lr_arr[-1] if n else float('nan'):.3g}: start the "
        "sweep lower (start_lr) or check the model and data"
        if quality == "diverged-immediately"
        else f"only {n} usable step(s) (need {MIN_POINTS}); run more iterations (num_iter)"
    )
    return Analysis(
        suggestion=fallback,
        estimates=dict.fromkeys(ESTIMATORS, fallback),
        quality=quality,
        warning=warning,
        div_factor=DEFAULT_DIV_FACTOR,
        curve=loss_arr.copy(),
        lrs=lr_arr,
        min_lr=fallback * 10.0 if n >= 2 else fallback,
        noise=math.nan,
        depth=math.nan,
        confidence=conf.from_curve(
            quality=quality, warning=warning, noise_ratio=math.nan, descent_points=0, min_at_end=False
        ),
    )


def _estimates(lr_arr: np.ndarray, log_lrs: np.ndarray, curve: np.ndarray, imin: int) -> dict[str, float]:
    """Every estimator's LR on the (lag-free, clipped) curve whose minimum is at ``imin``."""
    return {
        "minimum": float(lr_arr[imin]),
        "steepest": float(lr_arr[steepest(log_lrs, curve)]),
        "valley": float(lr_arr[valley(log_lrs, curve)]),
        "min_div_10": float(lr_arr[imin]) / 10.0,
        "min_div_3": float(lr_arr[imin]) / 3.0,
        "descent": float(lr_arr[descent(log_lrs, curve)]),
    }


def _flag(
    lr_arr: np.ndarray, spread: float, depth: float, scale: float, start_level: float, imin: int, noise: float
) -> tuple[Quality, str]:
    """The quality flag of a curve and the sentence that goes with it ("" when "ok")."""
    n = lr_arr.size
    if spread < 0.01 * scale:
        return "flat", (
            f"the loss hardly changed over lr={lr_arr[0]:.3g}..{lr_arr[-1]:.3g} (by {spread:.3g}): widen the "
            "sweep (start_lr lower, end_lr higher) or check that the optimizer updates the model"
        )
    if depth < 0.03 * scale or imin < 0.05 * n:
        return "no-descent", (
            f"the loss never clearly descends (drop {depth:.3g} from {start_level:.3g}): the model may "
            "already be trained, or start_lr is too high; the suggestion is a guess"
        )
    if noise > depth / 4.0:
        return "noisy", (
            f"the loss is noisy (noise {noise:.3g} against a drop of {depth:.3g}): use a larger batch, more "
            "iterations (num_iter), or validation-loss mode (val_loader)"
        )
    return "ok", ""


def rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median (the window shrinks at the ends); ``window <= 1`` returns the values.

    Args:
        values: The series.
        window: The window length (odd).

    Returns:
        The filtered series, same length.

    Example:
        >>> rolling_median(np.array([1.0, 9.0, 1.0, 1.0, 1.0]), 3).tolist()
        [5.0, 1.0, 1.0, 1.0, 1.0]
    """
    if window <= 1:
        return np.asarray(values, dtype=np.float64)
    half = window // 2
    x = np.asarray(values, dtype=np.float64)
    return np.array([np.median(x[max(0, i - half) : i + half + 1]) for i in range(len(x))])


def _start_level(curve: np.ndarray) -> float:
    """The level a curve starts from: the median of its first 10% (at least 3 points)."""
    k = max(3, len(curve) // 10)
    return float(np.median(curve[:k]))


def _check_smooth_f(smooth_f: float) -> None:
    if not (isinstance(smooth_f, (int, float)) and 0.0 < float(smooth_f) <= 1.0):
        raise ConfigError(
            f"smooth_f={smooth_f!r} must be a number in (0, 1] (the weight of the newest loss in the moving "
            "average); use e.g. 0.05, or 1 for no smoothing."
        )
