"""The confidence of a suggestion: from the curve (flat, noisy, coarse, still falling), from the probes (clear
winner, tie, edge, diverged), combined, and as plain data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from superconv.finder import confidence as conf
from superconv.finder.suggest import analyze


def curve(n: int = 100, noise: float = 0.0, hi: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flat at 2.3, descends around 1e-2, explodes above 0.5 (when the sweep reaches it)."""
    lrs = np.logspace(-7, hi, n)
    x = np.log10(lrs)
    loss = 1.3 - np.tanh(1.5 * (x + 2.0)) + np.where(lrs > 0.5, 20 * (lrs - 0.5), 0.0)
    return lrs, loss + noise * np.random.default_rng(seed).standard_normal(n)


def test_a_clean_curve_is_high_confidence() -> None:
    c = analyze(*curve()).confidence
    assert c.level == "high" and c.score >= conf.HIGH and c.advice == ""
    assert c.reason == "a clean descent and a clear minimum"


def test_a_flat_curve_is_low_confidence_and_says_to_widen_the_sweep() -> None:
    lrs = np.logspace(-7, 1, 100)
    c = analyze(lrs, 2.3 + 1e-4 * np.sin(np.arange(100))).confidence
    assert c.level == "low" and c.score < conf.MEDIUM
    assert c.reason.startswith("the curve is flat") and "widen the sweep" in c.advice


def test_a_noisy_curve_is_low_confidence_and_says_what_to_do() -> None:
    c = analyze(*curve(noise=0.6)).confidence
    assert c.level == "low"
    assert "noisy" in c.reason and "larger batch" in c.advice and "num_iter" in c.advice


def test_moderate_noise_lowers_an_ok_curve_below_high() -> None:
    analysis = analyze(*curve(noise=0.25, seed=2))
    assert analysis.quality == "ok"  # not flagged noisy, yet the confidence drops
    ratio = analysis.noise / analysis.depth
    assert 0.15 < ratio < conf.NOISE_HALF
    assert analysis.confidence.score == pytest.approx(1 - 0.5 * (ratio / conf.NOISE_HALF) ** 2, abs=1e-3)
    assert analysis.confidence.level == "medium" and "larger batch" in analysis.confidence.advice


def test_a_loss_still_falling_at_the_end_of_the_sweep_asks_for_a_wider_range() -> None:
    c = analyze(*curve(hi=-1.0)).confidence  # the sweep stops at 0.1, before the loss turns up
    assert c.level != "high" and "still falling" in c.reason and "end_lr higher" in c.advice


def test_a_coarse_descent_asks_for_more_iterations() -> None:
    c = conf.from_curve(quality="ok", warning="", noise_ratio=0.0, descent_points=5, min_at_end=False)
    assert c.level == "medium" and c.reason == "the descent spans only 5 points" and "num_iter" in c.advice


def test_too_short_and_diverged_immediately_are_low() -> None:
    assert analyze(np.logspace(-3, -1, 5), np.ones(5)).confidence.level == "low"
    short = analyze(np.logspace(-3, -1, 5), [2.0, 1.9, 1.8, 5.0, 50.0], stopped_early=True).confidence
    assert short.level == "low" and "diverged-immediately" in short.reason


@pytest.mark.parametrize(("noise", "level"), [(0.5, "high"), (2.0, "high"), (5.0, "medium"), (math.nan, "medium")])
def test_probes_clear_winner_tie_and_unknown_noise(noise: float, level: str) -> None:
    c = conf.from_probes(lrs=[0.01, 0.03, 0.1], values=[80.0, 85.0, 81.0], higher_is_better=True, chosen=1,
                         runner_up=2, noise=noise, unit=" pt")  # fmt: skip
    assert c.reason.startswith("4 pt ahead of 0.1")
    assert c.level == level
    if noise == 5.0:
        assert "within the noise" in c.reason and "val_batches" in c.advice


def test_probes_winner_at_the_edge_is_less_sure_and_says_where_to_look() -> None:
    inside = conf.from_probes(lrs=[0.01, 0.03, 0.1], values=[0.9, 0.5, 0.8], higher_is_better=False, chosen=1,
                              runner_up=2, noise=0.05, unit=" loss")  # fmt: skip
    edge = conf.from_probes(lrs=[0.01, 0.03, 0.1], values=[0.9, 0.8, 0.5], higher_is_better=False, chosen=2,
                            runner_up=1, noise=0.05, unit=" loss")  # fmt: skip
    assert edge.score == pytest.approx(0.7 * inside.score, abs=1e-3)
    assert "highest candidate" in edge.reason and "candidates further out" in edge.advice


def test_probes_that_all_diverged_or_only_one_finished() -> None:
    none = conf.from_probes(lrs=[1.0, 3.0], values=[math.nan, math.nan], higher_is_better=False, chosen=0,
                            runner_up=None, noise=math.nan, unit=" loss")  # fmt: skip
    assert none.level == "low" and none.reason == "every probe diverged" and "lower start_lr" in none.advice
    one = conf.from_probes(lrs=[0.1, 3.0], values=[0.4, math.nan], higher_is_better=False, chosen=0,
                           runner_up=None, noise=math.nan, unit=" loss")  # fmt: skip
    assert one.level == "low" and one.reason == "only one probe finished"


def test_combine_weighs_the_probes_above_the_curve() -> None:
    combined = conf.combine(conf.make(0.2, "noisy curve", "larger batch"), conf.make(0.9, "clear winner"))
    assert combined.score == pytest.approx(conf.PROBE_WEIGHT * 0.9 + (1 - conf.PROBE_WEIGHT) * 0.2)
    assert combined.reason == "probes: clear winner; curve: noisy curve" and combined.advice == "larger batch"


def test_levels_scores_and_plain_data() -> None:
    assert [conf.level_of(s) for s in (0.0, conf.MEDIUM, conf.HIGH, 1.0)] == ["low", "medium", "high", "high"]
    assert conf.make(1.7, "r").score == 1.0 and conf.make(math.nan, "r").score == 0.0
    c = conf.make(0.5, "close call", "more val batches")
    assert json.loads(json.dumps(c.to_dict())) == {"level": "medium", "score": 0.5, "reason": "close call",
                                                   "advice": "more val batches"}  # fmt: skip
    assert c.summary() == "confidence medium (0.50): close call; more val batches"
