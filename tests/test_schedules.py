"""The pure core: shape, phase boundaries, presets, validation — no optimizer involved."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from superconv.errors import ConfigError
from superconv.schedule.one_cycle import PRESETS, OneCycleSchedule

configs = st.fixed_dictionaries(
    {
        "max_lr": st.floats(1e-5, 10.0),
        "total_steps": st.integers(10, 2000),
        "pct_start": st.floats(0.05, 0.5),
        "anneal_strategy": st.sampled_from(["cos", "linear"]),
        "div_factor": st.floats(2.0, 1e3),
        "final_div_factor": st.floats(2.0, 1e5),
        "three_phase": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_lr_stays_within_final_and_max(cfg: dict) -> None:
    s = OneCycleSchedule(**cfg)
    lrs = s.lrs()
    tol = 1e-12 * s.max_lr
    assert all(s.final_lr - tol <= lr <= s.max_lr + tol for lr in lrs)
    assert lrs[-1] == pytest.approx(s.final_lr, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_each_phase_is_monotone(cfg: dict) -> None:
    s = OneCycleSchedule(**cfg)
    lrs = s.lrs()
    bounds = [0, *s.phase_boundaries(), s.total_steps]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        seg = lrs[max(a, 0) : b]
        diffs = [y - x for x, y in zip(seg, seg[1:])]
        if i == 0:  # warm-up rises
            assert all(d >= -1e-12 * s.max_lr for d in diffs)
        else:  # every later phase falls
            assert all(d <= 1e-12 * s.max_lr for d in diffs)


@settings(max_examples=100, deadline=None)
@given(configs)
def test_peak_and_boundaries_fall_where_the_fractions_say(cfg: dict) -> None:
    assume(cfg["pct_start"] * cfg["total_steps"] >= 2)  # each phase at least two steps long
    s = OneCycleSchedule(**cfg)
    lrs = s.lrs()
    peak = max(range(s.total_steps), key=lambda i: lrs[i])
    # the peak is at the last step of the warm-up: pct_start * total_steps - 1, rounded to a step
    assert abs(peak - (cfg["pct_start"] * cfg["total_steps"] - 1)) <= 1
    if cfg["three_phase"]:
        down_end = 2 * cfg["pct_start"] * cfg["total_steps"] - 2
        back = s.phase_boundaries()[1] - 1
        assert abs(back - down_end) <= 1
        assert s.lr(s.phases[1].end_step) == pytest.approx(s.initial_lr, rel=1e-9)
        assert s.initial_lr * (1 - 1e-12) <= lrs[back] <= s.max_lr * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(configs)
def test_momentum_moves_inversely_to_the_lr(cfg: dict) -> None:
    s = OneCycleSchedule(**cfg)
    for step in range(0, s.total_steps - 1, max(1, s.total_steps // 50)):
        if s.locate(step)[0] == 2 or s.locate(step)[0] != s.locate(step + 1)[0]:
            continue  # the tail holds momentum at max; across the peak both change direction
        dlr = s.lr(step + 1) - s.lr(step)
        dm = s.momentum(step + 1) - s.momentum(step)  # type: ignore[operator]
        assert dlr * dm <= 1e-15


def test_smith_shape_goes_orders_of_magnitude_below_the_initial_lr() -> None:
    s = OneCycleSchedule.from_bounds(base_lr=0.01, max_lr=0.1, fraction_up=0.4, fraction_down=0.4, total_steps=100)
    lrs = s.lrs()
    assert lrs[0] == pytest.approx(0.01)
    assert max(lrs) == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.01 / 100)  # the seed's default final LR: base_lr / 100
    # the tail starts after 80% of the run, at the initial LR, and only goes down
    assert lrs[79] == pytest.approx(0.01, rel=0.05)
    assert all(b <= a for a, b in zip(lrs[79:], lrs[80:]))


def test_past_the_end_holds_the_final_value_instead_of_extrapolating() -> None:
    s = OneCycleSchedule(max_lr=1.0, total_steps=10)
    assert s.lr(10) == s.lr(9) == s.lr(10_000) == s.final_lr
    assert s.lr(-5) == s.lr(0)


def test_zero_length_warm_up_is_not_a_division_by_zero() -> None:
    s = OneCycleSchedule(max_lr=1.0, total_steps=2, pct_start=0.5)
    assert s.lr(0) == pytest.approx(1.0)
    assert s.lr(1) == pytest.approx(s.final_lr)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name: str) -> None:
    s = OneCycleSchedule.from_preset(name, max_lr=0.5, total_steps=100)
    assert max(s.lrs()) == pytest.approx(0.5, rel=1e-3)
    assert s.lrs()[-1] < s.initial_lr / 50


def test_fastai_preset_matches_fastai_shape() -> None:
    s = OneCycleSchedule.from_preset("fastai", max_lr=1.0, total_steps=1000)
    assert s.initial_lr == pytest.approx(1 / 25)
    assert s.final_lr == pytest.approx(1e-5)  # fastai: lr_max / div_final
    assert s.phase_boundaries() == [250]


def test_to_dict_round_trips() -> None:
    s = OneCycleSchedule.from_preset("smith", max_lr=0.3, total_steps=50)
    assert OneCycleSchedule(**s.to_dict()) == s


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_lr": 0.0}, r"max_lr to be a positive, finite learning rate, but got 0\.0"),
        ({"max_lr": -1.0}, r"max_lr .* but got -1\.0"),
        ({"max_lr": math.nan}, r"max_lr .* but got nan"),
        ({"max_lr": math.inf}, r"max_lr .* but got inf"),
        ({"total_steps": 1}, r"total_steps to be an integer >= 2 .* but got 1"),
        ({"total_steps": 10.5}, r"total_steps .* but got 10\.5"),
        ({"pct_start": 1.5}, r"pct_start to be a fraction of the run between 0 and 1, but got 1\.5"),
        ({"pct_start": -0.1}, r"pct_start .* but got -0\.1"),
        ({"anneal_strategy": "exp"}, r"anneal_strategy to be one of \('cos', 'linear'\), but got 'exp'"),
        ({"div_factor": 0}, r"div_factor to be a positive number"),
        ({"final_div_factor": -2}, r"final_div_factor to be a positive number"),
        ({"pct_down": 0.3}, r"pct_down=0\.3 only applies to the three-phase shape"),
        ({"pct_down": 1.2, "three_phase": True}, r"pct_down to be a fraction .* but got 1\.2"),
        (
            {"pct_start": 0.6, "pct_down": 0.5, "three_phase": True},
            r"pct_start \+ pct_down <= 1 .* pct_start=0\.6 \+ pct_down=0\.5",
        ),
        ({"base_momentum": 1.0}, r"base_momentum to be in \[0, 1\), but got 1\.0"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs: dict, match: str) -> None:
    args = {"max_lr": 0.1, "total_steps": 100, **kwargs}
    with pytest.raises(ConfigError, match=match):
        OneCycleSchedule(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_lr": 0.2}, r"base_lr < max_lr, but got base_lr=0\.2 and max_lr=0\.1"),
        ({"final_lr": 0.05}, r"final_lr < base_lr .* final_lr=0\.05"),
        ({"fraction_up": 2.0}, r"fraction_up to be a fraction .* but got 2\.0"),
        ({"base_lr": -1.0}, r"base_lr to be a positive"),
    ],
)
def test_bounds_validation(kwargs: dict, match: str) -> None:
    args = {"base_lr": 0.01, "max_lr": 0.1, "total_steps": 100, **kwargs}
    with pytest.raises(ConfigError, match=match):
        OneCycleSchedule.from_bounds(**args)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match=r"Unknown schedule preset 'nope': expected one of"):
        OneCycleSchedule.from_preset("nope", max_lr=0.1, total_steps=10)
