"""superconv.compare / `superconv compare` on tiny data: the report's structure, its numbers' consistency with the
runs, the evaluation grid, and which weights each accuracy is of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from superconv.cli.main import cli
from superconv.comparison.runner import MIN_EVALUATIONS, USUAL_DEFAULT_LR, compare
from superconv.data import load_data
from superconv.errors import ConfigError
from superconv.models import build_model
from superconv.schedule.steps import total_steps
from superconv.train.evaluation import evaluate
from superconv.train.events import Callback

FIT = {"precision": "fp32", "range_test_kwargs": {"num_iter": 20}}


def _make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)


@pytest.fixture(scope="module")
def report():
    d = load_data("digits", batch_size=64, seed=0, subset=800)
    return compare(
        _make_model,
        d.train,
        d.val,
        d.test,
        epochs=1,
        budget_factor=2,
        schedules=["constant", "step"],
        grid_factors=(0.3, 1.0),
        seeds=[0, 1],
        eval_every=3,
        fit_kwargs=FIT,
    )


def test_runs_roles_and_budgets(report) -> None:
    one = [r for r in report.runs if r.schedule == "one-cycle"]
    assert len(one) == 2 and all(r.role == "one-cycle" for r in one)
    for schedule in ("constant", "step"):
        grid = [r for r in report.runs if r.schedule == schedule and r.seed == 0]
        lrs = {r.lr for r in grid}
        assert USUAL_DEFAULT_LR["adamw"] in lrs and one[0].lr in lrs  # default and range-test LR in the grid
        tuned = [r for r in grid if r.role == "tuned"]
        assert len(tuned) == 1 and tuned[0].val_accuracy == max(r.val_accuracy for r in grid)
        assert any(r.role == "default" and r.lr == USUAL_DEFAULT_LR["adamw"] for r in grid)
        assert all(r.total_steps == 2 * one[0].total_steps for r in grid)
        # later seeds reuse the tuned LR
        assert {r.lr for r in report.runs if r.schedule == schedule and r.seed == 1 and r.role == "tuned"} == {
            tuned[0].lr
        }


def test_rows_are_consistent_with_the_runs(report) -> None:
    rows = {(r["schedule"], r["role"]): r for r in report.rows}
    assert set(rows) == {
        ("one-cycle", "one-cycle"),
        ("constant", "tuned"),
        ("constant", "default"),
        ("step", "tuned"),
        ("step", "default"),
    }
    one_cycle = {r.seed: r for r in report.runs if r.schedule == "one-cycle"}
    for (schedule, role), row in rows.items():
        runs = [r for r in report.runs if r.schedule == schedule and r.role == role]
        assert row["final_accuracy"] == pytest.approx(sum(r.final_accuracy for r in runs) / len(runs))
        assert row["final_accuracy_range"][0] <= row["final_accuracy"] <= row["final_accuracy_range"][1]
        if schedule == "one-cycle":
            assert row["baseline_peak"] is None and row["one_cycle_final"] is None
            continue
        peak = row["baseline_peak"]
        assert peak["target"] == pytest.approx(sum(r.peak_accuracy for r in runs) / len(runs))
        for name, target_of in (("baseline_peak", lambda r: r.peak_accuracy), ("one_cycle_final", None)):
            figures = row[name]
            expected: dict[str, list[float]] = {"updates": [], "updates_with_range_test": []}
            for r in runs:
                oc = one_cycle[r.seed]
                target = target_of(r) if target_of else oc.final_accuracy
                i_b, i_o = r.curve.first_reaching(target), oc.curve.first_reaching(target)
                if i_b is None or i_o is None or oc.curve.steps[i_o] == 0:
                    break
                expected["updates"].append(r.curve.steps[i_b] / oc.curve.steps[i_o])
                cost = oc.curve.steps[i_o] + oc.range_test_updates
                expected["updates_with_range_test"].append(r.curve.steps[i_b] / cost)
            else:
                for key, values in expected.items():
                    assert figures[key]["ratio"] == pytest.approx(sum(values) / len(values))
                    low, high = figures[key]["interval"]
                    assert low <= figures[key]["ratio"] <= high
                continue
            assert figures["updates"] is None
    for run in report.runs:
        assert run.curve.steps[0] == 0 and run.curve.steps[-1] == run.total_steps  # initial and final weights
        assert run.curve.steps == sorted(run.curve.steps) and run.curve.seconds == sorted(run.curve.seconds)
        assert run.curve.seconds[0] == 0.0
        assert run.peak_accuracy == max(run.curve.accuracy) and run.final_accuracy == run.curve.accuracy[-1]


def test_range_test_cost_is_counted_on_one_cycle_only(report) -> None:
    for run in report.runs:
        if run.schedule == "one-cycle":
            # num_iter=20: the sweep's updates, or fewer when it stopped on divergence
            assert 1 <= run.range_test_updates <= 20 and run.range_test_seconds > 0
        else:
            assert run.range_test_updates == 0 and run.range_test_seconds == 0.0


def test_outputs(report, tmp_path: Path) -> None:
    md = report.markdown()
    assert "| one-cycle |" in md and "| constant |" in md and "tuned" in md and "default" in md
    assert "best-val checkpoint acc" in md and "incl. range test" in md and "evaluated every 3 updates" in md
    json.dumps(report.to_dict())
    assert report.plot(tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def _untuned_two_epochs(d, **kwargs):
    """One-cycle (2 epochs) against constant at the usual default LR (2 epochs)."""
    return compare(_make_model, d.train, d.val, d.test, epochs=2, budget_factor=1, schedules=["constant"], tune=False,
                   **{"fit_kwargs": FIT, **kwargs})  # fmt: skip


def test_untuned_comparison_says_so_loudly_and_the_default_grid_is_fine() -> None:
    d = load_data("digits", batch_size=16, seed=0, subset=800)
    rep = _untuned_two_epochs(d)
    assert "WARNING: baselines were NOT tuned" in rep.markdown()
    assert rep.warnings
    # The default grid: one-cycle gets at least MIN_EVALUATIONS test evaluations besides the initial one.
    updates = total_steps(2, len(d.train))
    assert rep.eval_every == updates // MIN_EVALUATIONS > 1
    one = next(r for r in rep.runs if r.schedule == "one-cycle")
    assert len(one.curve.steps) - 1 >= MIN_EVALUATIONS
    assert not any("test evaluations" in w for w in rep.warnings)


class _Sabotage(Callback):
    """Wrecks the weights once training of the last epoch is done: validation then prefers an earlier epoch."""

    def on_train_epoch_end(self, state) -> None:
        if state.epoch == state.epochs - 1:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.zero_()


class _Capture(Callback):
    """Copies each run's weights after its first epoch and at the end of training (``on_fit_end``)."""

    def __init__(self) -> None:
        self.first_epoch: list[dict] = []
        self.final: list[dict] = []

    def on_epoch_end(self, state, metrics) -> None:
        if metrics["epoch"] == 1:
            self.first_epoch.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})

    def on_fit_end(self, state) -> None:
        self.final.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})


def test_final_accuracy_is_the_final_weights_and_the_best_checkpoint_is_reported_apart() -> None:
    d = load_data("digits", batch_size=16, seed=0, subset=1000)
    capture = _Capture()
    rep = _untuned_two_epochs(
        d,
        eval_every=len(d.train),  # the last evaluation of the loop falls on the last update, before the sabotage
        # a range test that ends at a moderate LR: one-cycle's first epoch must learn something
        fit_kwargs={**FIT, "range_test_kwargs": {"num_iter": 20, "end_lr": 0.03}, "callbacks": [_Sabotage(), capture]},
    )
    trained = [r for r in rep.runs if r.role != "default"]  # "default" is the tuned run listed again
    assert len(trained) == len(capture.final) == 2

    def accuracy(seed: int, weights: dict) -> float:
        model = _make_model(seed)
        model.load_state_dict(weights)
        return evaluate(model, d.test, torch.device("cpu"))[1]

    for run, first, final in zip(trained, capture.first_epoch, capture.final):
        assert run.final_accuracy == pytest.approx(accuracy(run.seed, final), abs=1e-12)
        assert run.best_epoch == 1  # the wrecked last epoch lost on validation
        assert run.best_checkpoint_accuracy == pytest.approx(accuracy(run.seed, first), abs=1e-12)
        assert run.best_checkpoint_accuracy > run.final_accuracy + 0.2
    row = next(r for r in rep.rows if r["schedule"] == "constant")
    assert row["best_checkpoint_accuracy"] == trained[1].best_checkpoint_accuracy
    assert row["final_accuracy"] == trained[1].final_accuracy


class _Interrupt(Callback):
    """What fit's signal handler does on Ctrl-C or SIGTERM: the run stops cleanly at an update, marked interrupted."""

    def on_batch_end(self, state) -> None:
        if state.step == 2 and state.updated:
            state.result.interrupted = True
            state.stop("interrupted", "interrupted")


def test_an_interrupted_run_stops_the_comparison() -> None:
    d = load_data("digits", batch_size=64, seed=0, subset=400)
    runs: list[str] = []
    with pytest.raises(KeyboardInterrupt, match=r"the one-cycle run \(seed 0\) was interrupted"):
        compare(
            _make_model, d.train, d.val, d.test, epochs=1, budget_factor=1, schedules=["constant"], tune=False,
            fit_kwargs={**FIT, "callbacks": [_Interrupt()]}, progress=runs.append,
        )  # fmt: skip
    assert runs == []  # no run after it, not even the interrupted one reported as finished


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedules": ["linear"]}, r"Unknown schedule 'linear': expected one of one-cycle, "),
        ({"epochs": 0}, r"Expected epochs to be a positive integer, but got 0"),
        ({"budget_factor": 0}, r"Expected budget_factor to be a positive integer, but got 0"),
        ({"optimizer": "rmsprop"}, r"Unknown optimizer 'rmsprop': expected one of adamw, sgd"),
        ({"seeds": []}, r"at least one seed, but got an empty list: give seeds=\[0\]"),
        ({"eval_every": 0}, r"Expected eval_every to be a positive integer, but got 0"),
        ({"grid_factors": (1.0, -3.0)}, r"Expected each of grid_factors to be a positive, finite number .*got -3.0"),
        ({"val_loader": None}, r"needs a validation set, but val_loader is None: give val_loader .* or tune=False"),
        ({"fit_kwargs": {"epochs": 3}}, r"fit_kwargs without epochs, .* but got \['epochs'\]: remove them"),
        ({"train_loader": iter([])}, r"Expected a train_loader with a length .* but got a list_iterator"),
        ({"fit_kwargs": {"accumulation_steps": 0}}, r"Expected accumulation_steps to be a positive integer"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    d = load_data("digits", batch_size=64, seed=0, subset=200)
    loaders = {"train_loader": d.train, "val_loader": d.val, "test_loader": d.test}
    loaders.update({k: kwargs.pop(k) for k in list(kwargs) if k in loaders})
    with pytest.raises(ConfigError, match=match):
        compare(_make_model, **loaders, **kwargs)


def test_compare_command(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "compare",
            "--dataset",
            "digits",
            "--subset",
            "400",
            "--batch-size",
            "64",
            "--width",
            "8",
            "--epochs",
            "1",
            "--budget-factor",
            "2",
            "--schedules",
            "cosine",
            "--precision",
            "fp32",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "compare.json").read_text())
    assert [r["schedule"] for r in data["rows"]] == ["one-cycle", "cosine", "cosine"]
    assert data["rows"][1]["one_cycle_final"]["range_test_updates"] == data["rows"][0]["range_test_updates"] > 0
    md = (tmp_path / "compare.md").read_text()
    assert (tmp_path / "compare.png").exists() and "| cosine |" in md and "incl. range test" in md
