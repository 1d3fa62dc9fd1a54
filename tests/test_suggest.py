"""The pure suggestion estimators: smoothing, the estimators, the quality flag, bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from superconv.errors import ConfigError
from superconv.finder.suggest import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    MIN_POINTS,
    analyze,
    descent,
    ema,
    steepest,
    valley,
    zero_lag_ema,
)


def range_curve(n: int = 100, lo: float = -7.0, hi: float = 1.0, noise: float = 0.0, seed: int = 0):
    """A typical range-test curve: flat at 2.3, descends around 1e-2, explodes above 0.5."""
    lrs = np.logspace(lo, hi, n)
    x = np.log10(lrs)
    loss = 1.3 - np.tanh(1.5 * (x + 2.0)) + np.where(lrs > 0.5, 20 * (lrs - 0.5), 0.0)
    loss = loss + noise * np.random.default_rng(seed).standard_normal(n)
    return lrs, loss


def test_ema_is_bias_corrected_and_smooth_f_one_is_identity() -> None:
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    assert ema(values, 0.05)[0] == pytest.approx(3.0)  # no pull towards 0 at the start
    np.testing.assert_allclose(ema(values, 1.0), values)
    np.testing.assert_allclose(ema(np.full(50, 2.5), 0.1), 2.5)


def test_zero_lag_ema_does_not_shift_a_step() -> None:
    step = np.r_[np.ones(50), np.zeros(50)]
    forward = ema(step, 0.1)
    centred = zero_lag_ema(step, 0.1)
    # the forward EMA crosses 0.5 well after the step; the lag-free one crosses it at the step
    assert int(np.argmax(forward < 0.5)) >= 55
    assert abs(int(np.argmax(centred < 0.5)) - 50) <= 1


def test_steepest_valley_descent_on_a_known_curve() -> None:
    lrs, loss = range_curve()
    x = np.log10(lrs)
    curve = analyze(lrs, loss).curve  # the lag-free curve over the clipped losses
    imin = int(np.argmin(curve))
    i_steep, i_valley, i_desc = steepest(x, curve), valley(x, curve), descent(x, curve)
    # steepest descent of 1.3 - tanh(1.5 (x + 2)) is at x = -2
    assert abs(x[i_steep] + 2.0) < 0.3
    assert i_valley < imin and i_desc <= imin
    assert x[i_desc] > x[i_steep]  # 80% of the drop is done after the steepest point


def test_analyze_ok_curve() -> None:
    lrs, loss = range_curve(noise=0.02)
    a = analyze(lrs, loss)
    assert a.quality == "ok" and a.warning == ""
    assert set(a.estimates) == set(ESTIMATORS)
    assert a.suggestion == a.estimates[DEFAULT_ESTIMATOR]
    assert 1e-3 < a.suggestion < 0.5
    assert a.estimates["min_div_10"] == pytest.approx(a.min_lr / 10)
    assert 10 <= a.div_factor <= 25


def test_non_finite_points_never_reach_the_estimators() -> None:
    lrs, loss = range_curve(noise=0.02)
    with_nan = loss.copy()
    with_nan[[5, 40]] = [np.nan, np.inf]
    a = analyze(lrs, with_nan)
    assert np.isfinite(a.curve).all() and len(a.curve) == len(lrs) - 2
    assert math.isfinite(a.suggestion)


def test_gradient_is_against_log_lr_so_suggestions_scale_with_the_lr_axis() -> None:
    lrs, loss = range_curve(noise=0.01)
    a = analyze(lrs, loss)
    b = analyze(lrs * 1000, loss)
    for name in ESTIMATORS:
        assert b.estimates[name] == pytest.approx(1000 * a.estimates[name])


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(-50, 50), scale=st.floats(0.1, 10))
def test_estimators_do_not_depend_on_the_losses_offset_or_scale(shift: float, scale: float) -> None:
    lrs, loss = range_curve(noise=0.01)
    a = analyze(lrs, loss)
    b = analyze(lrs, loss * scale + shift)  # negative losses included
    for name in ESTIMATORS:
        assert b.estimates[name] == pytest.approx(a.estimates[name])


def test_flat_curve_is_flagged() -> None:
    lrs = np.logspace(-7, -5, 100)
    a = analyze(lrs, np.full(100, 2.3) + 1e-4 * np.random.default_rng(0).standard_normal(100))
    assert a.quality == "flat" and "widen the sweep" in a.warning
    assert math.isfinite(a.suggestion)


def test_trained_model_that_never_descends_is_flagged() -> None:
    lrs = np.logspace(-7, 1, 100)
    loss = 0.3 + np.where(lrs > 1e-2, 2 * np.log10(lrs / 1e-2) ** 2, 0.0)
    loss = loss + 0.005 * np.random.default_rng(0).standard_normal(100)
    a = analyze(lrs, loss)
    assert a.quality == "no-descent" and "already be trained" in a.warning


def test_noisy_curve_is_flagged() -> None:
    lrs, loss = range_curve(noise=0.6)
    assert analyze(lrs, loss).quality == "noisy"


def test_too_short_and_diverged_immediately() -> None:
    lrs, loss = range_curve(n=MIN_POINTS - 1)
    assert analyze(lrs, loss).quality == "too-short"
    a = analyze(lrs[:3], loss[:3], stopped_early=True)
    assert a.quality == "diverged-immediately" and "start the sweep lower" in a.warning
    assert analyze([], []).quality == "too-short"


@pytest.mark.parametrize("smooth_f", [0, -0.1, 1.5, "0.05", float("nan")])
def test_bad_smooth_f(smooth_f: object) -> None:
    with pytest.raises(ConfigError, match=r"smooth_f=.* must be a number in \(0, 1\].*use e\.g\. 0\.05"):
        analyze(*range_curve(), smooth_f=smooth_f)  # type: ignore[arg-type]


def test_bad_estimator_and_shapes() -> None:
    with pytest.raises(ConfigError, match=r"estimator='best' is not one of minimum, steepest, valley.*pass one of"):
        analyze(*range_curve(), estimator="best")
    with pytest.raises(ConfigError, match=r"lrs and losses must be 1-D and of the same length.*\(3,\) and \(2,\)"):
        analyze([1e-3, 1e-2, 1e-1], [1.0, 2.0])
