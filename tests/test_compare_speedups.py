"""The comparison's arithmetic on hand-made curves (no training): where a curve crosses a target, the ratios with
and without the range test's cost and the intervals the evaluation grid allows, the rows and the tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from superconv.comparison import speedups
from superconv.comparison.report import CompareReport
from superconv.comparison.runner import MIN_EVALUATIONS, coarse_grid_warning, range_test_updates
from superconv.comparison.runs import Crossing, Curve, Run


def _curve(steps: list[int], accuracy: list[float], seconds_per_update: float = 0.1) -> Curve:
    return Curve(
        steps=steps,
        epochs=[s / 10 for s in steps],
        seconds=[s * seconds_per_update for s in steps],
        accuracy=accuracy,
    )


def _run(schedule: str, role: str, curve: Curve, *, seed: int = 0, rt_updates: int = 0, rt_seconds: float = 0.0) -> Run:
    return Run(
        schedule=schedule, lr=0.1, seed=seed, role=role, val_accuracy=0.5, final_accuracy=curve.accuracy[-1],
        best_checkpoint_accuracy=max(curve.accuracy[1:]), best_epoch=1, peak_accuracy=max(curve.accuracy),
        total_steps=curve.steps[-1], train_seconds=curve.seconds[-1], range_test_updates=rt_updates,
        range_test_seconds=rt_seconds, curve=curve,
    )  # fmt: skip


# One-cycle: 10 updates evaluated every 5, range test 10 updates / 2 s. The baseline: 20 updates, every 5.
ONE_CYCLE = _run("one-cycle", "one-cycle", _curve([0, 5, 10], [0.1, 0.8, 0.9]), rt_updates=10, rt_seconds=2.0)
BASELINE = _run("constant", "tuned", _curve([0, 5, 10, 15, 20], [0.1, 0.5, 0.7, 0.85, 0.95]))


class TestCrossing:
    def test_between_the_evaluation_below_and_the_one_at_or_above(self) -> None:
        assert BASELINE.curve.crossing(0.9) == Crossing(updates=(16, 20), seconds=(1.5, 2.0))
        assert BASELINE.curve.crossing(0.5) == Crossing(updates=(1, 5), seconds=(0.0, 0.5))

    def test_exact_where_every_update_is_evaluated(self) -> None:
        curve = _curve([0, 1, 2, 3], [0.1, 0.4, 0.6, 0.7])
        assert curve.crossing(0.6) == Crossing(updates=(2, 2), seconds=(0.2, 0.2))

    def test_at_the_initial_weights_and_never(self) -> None:
        assert BASELINE.curve.crossing(0.1) == Crossing(updates=(0, 0), seconds=(0.0, 0.0))
        assert BASELINE.curve.crossing(0.96) is None

    def test_a_curve_without_the_initial_evaluation_starts_its_interval_at_update_one(self) -> None:
        assert _curve([4, 8], [0.7, 0.9]).crossing(0.7) == Crossing(updates=(1, 4), seconds=(0.0, 0.4))


class TestRatio:
    def test_point_at_the_evaluations_interval_from_the_ends(self) -> None:
        assert speedups.ratio_interval((16, 20), (6, 10)) == pytest.approx((2.0, 1.6, 20 / 6))

    def test_unbounded_above_when_one_cycle_may_have_needed_nothing(self) -> None:
        assert speedups.ratio_interval((1.5, 2.0), (0.0, 1.0)) == (2.0, 1.5, math.inf)

    def test_none_when_one_cycle_reached_the_target_before_training(self) -> None:
        assert speedups.ratio_interval((16, 20), (0, 0)) is None


class TestRows:
    def test_range_test_cost_is_added_to_one_cycle_only(self) -> None:
        rows = speedups.rows([ONE_CYCLE, BASELINE], ["constant"])
        assert [(r["schedule"], r["role"]) for r in rows] == [("one-cycle", "one-cycle"), ("constant", "tuned")]
        assert rows[0]["baseline_peak"] is None and rows[0]["range_test_updates"] == 10
        final = rows[1]["one_cycle_final"]  # one-cycle's 0.9: updates 6-10 (+10), the baseline's 16-20
        assert final["target"] == 0.9
        assert final["one_cycle_updates"] == [6, 10] and final["other_updates"] == [16, 20]
        assert final["updates"]["ratio"] == pytest.approx(2.0)
        assert final["updates"]["interval"] == pytest.approx([1.6, 20 / 6])
        assert final["updates_with_range_test"]["ratio"] == pytest.approx(20 / 20)
        assert final["updates_with_range_test"]["interval"] == pytest.approx([16 / 20, 20 / 16])
        assert final["seconds"]["interval"] == pytest.approx([1.5 / 1.0, 2.0 / 0.5])
        assert final["seconds_with_range_test"]["ratio"] == pytest.approx(2.0 / 3.0)
        assert final["seconds_with_range_test"]["interval"] == pytest.approx([1.5 / 3.0, 2.0 / 2.5])
        peak = rows[1]["baseline_peak"]  # 0.95: one-cycle never gets there
        assert peak["one_cycle_updates"] is None and peak["updates"] is None and peak["updates_with_range_test"] is None

    def test_several_seeds_average_the_ratios_and_the_intervals_ends(self) -> None:
        one_b = _run("one-cycle", "one-cycle", _curve([0, 5, 10], [0.1, 0.9, 0.9]), seed=1, rt_updates=10)
        base_b = _run("constant", "tuned", _curve([0, 5, 10, 15, 20], [0.1, 0.5, 0.9, 0.9, 0.9]), seed=1)
        rows = speedups.rows([ONE_CYCLE, BASELINE, one_b, base_b], ["constant"])
        final = rows[1]["one_cycle_final"]
        # seed 0: 20/10 in [16/10, 20/6]; seed 1 (target 0.9): 10/5 in [6/5, 10/1]
        assert final["updates"]["per_seed"] == pytest.approx([2.0, 2.0])
        assert final["updates"]["interval"] == pytest.approx([(1.6 + 1.2) / 2, (20 / 6 + 10) / 2])
        assert rows[1]["final_accuracy_range"] == [0.9, 0.95]

    def test_no_ratio_for_a_target_reached_before_training(self) -> None:
        # one-cycle's final accuracy is at or below the baseline's initial accuracy: both reach it at update 0
        low = _run("one-cycle", "one-cycle", _curve([0, 5, 10], [0.2, 0.15, 0.1]), rt_updates=10)
        row = speedups.rows([low, BASELINE], ["constant"])[1]["one_cycle_final"]
        assert row["other_updates"] == [0, 0]
        assert all(row[name] is None for name in speedups.RATIOS)

    def test_a_missing_seed_leaves_the_mean_out(self) -> None:
        assert speedups.mean([1.0, None]) is None and speedups.mean([1.0, 3.0]) == 2.0
        assert speedups.mean_interval([[1, 2], None]) is None


def test_markdown_reports_both_accuracies_and_both_costs() -> None:
    report = CompareReport(
        runs=[ONE_CYCLE, BASELINE], one_cycle_epochs=1, baseline_epochs=2, optimizer="sgd", seeds=[0], tuned=True,
        eval_every=5, rows=speedups.rows([ONE_CYCLE, BASELINE], ["constant"]),
    )  # fmt: skip
    md = report.markdown()
    assert "| final acc (final weights) | best-val checkpoint acc | peak test acc seen |" in md
    assert "| one-cycle needs x fewer updates | incl. range test | x fewer seconds | incl. range test |" in md
    # one-cycle's final (90%): one-cycle at update 6-10, the baseline at 16-20; 2.00 [1.60, 3.33], with the range
    # test's 10 updates 1.00 [0.80, 1.25]
    assert (
        "| constant | tuned | one-cycle's final | 90.00% | 6–10 | 16–20 | 2.00 [1.60, 3.33] | 1.00 [0.80, 1.25] |" in md
    )
    assert "| constant | tuned | its peak | 95.00% | not reached | 16–20 | - | - | - | - |" in md
    assert "range test's cost (10 updates, 2.0 s)" in md and "evaluated every 5 updates" in md
    data = report.to_dict()
    assert data["eval_every"] == 5 and data["runs"][1]["best_checkpoint_accuracy"] == 0.95


def test_range_test_cost_in_training_updates() -> None:
    def result(lrs: int, accumulation: int, skipped: int = 0, stop: str = "completed") -> SimpleNamespace:
        sweep = SimpleNamespace(
            lrs=[0.1] * lrs, skipped_steps=skipped, accumulation_steps=accumulation, stop_reason=stop
        )
        return SimpleNamespace(range_test=sweep)

    assert range_test_updates(SimpleNamespace(range_test=None), 1) == 0  # type: ignore[arg-type]
    assert range_test_updates(result(37, 1), 1) == 37  # type: ignore[arg-type]
    assert range_test_updates(result(37, 1, skipped=3), 1) == 40  # type: ignore[arg-type]
    assert range_test_updates(result(37, 1, stop="non-finite"), 1) == 38  # type: ignore[arg-type]
    # 20 sweep updates of 4 batches = 80 batches = 40 updates of a run accumulating 2
    assert range_test_updates(result(20, 4), 2) == 40  # type: ignore[arg-type]


def test_coarse_grid_warns_and_says_what_to_use() -> None:
    assert coarse_grid_warning(100, 5) == []  # 20 evaluations
    assert coarse_grid_warning(10, 1) == []  # every update: as fine as it gets
    (warning,) = coarse_grid_warning(100, 10)
    assert "only 10 test evaluations (eval_every=10, 100 updates)" in warning
    assert f"Use eval_every <= 5 (or leave it unset) for at least {MIN_EVALUATIONS}" in warning
