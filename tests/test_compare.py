"""superconv.compare / `superconv compare` on tiny data: the report's structure and its numbers' consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from superconv.cli.main import cli
from superconv.comparison.runner import USUAL_DEFAULT_LR, compare
from superconv.data import load_data
from superconv.errors import ConfigError
from superconv.models import build_model

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
    for (schedule, role), row in rows.items():
        runs = [r for r in report.runs if r.schedule == schedule and r.role == role]
        assert row["final_accuracy"] == pytest.approx(sum(r.final_accuracy for r in runs) / len(runs))
        assert row["final_accuracy_range"][0] <= row["final_accuracy"] <= row["final_accuracy_range"][1]
        if schedule == "one-cycle":
            continue
        assert row["target"] == pytest.approx(sum(r.best_accuracy for r in runs) / len(runs))
        if row["speedup_updates"] is not None:
            per_seed = []
            for r in runs:
                oc = next(o for o in report.runs if o.schedule == "one-cycle" and o.seed == r.seed)
                i_b, i_o = r.curve.first_reaching(r.best_accuracy), oc.curve.first_reaching(r.best_accuracy)
                per_seed.append(r.curve.steps[i_b] / oc.curve.steps[i_o])
            assert row["speedup_updates"] == pytest.approx(sum(per_seed) / len(per_seed))
    for run in report.runs:
        assert run.curve.steps == sorted(run.curve.steps) and run.curve.steps[-1] == run.total_steps
        assert run.best_accuracy == max(run.curve.accuracy)


def test_outputs(report, tmp_path: Path) -> None:
    md = report.markdown()
    assert "| one-cycle |" in md and "| constant |" in md and "tuned" in md and "default" in md
    json.dumps(report.to_dict())
    assert report.plot(tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_untuned_comparison_says_so_loudly() -> None:
    d = load_data("digits", batch_size=64, seed=0, subset=400)
    rep = compare(
        _make_model,
        d.train,
        d.val,
        d.test,
        epochs=1,
        budget_factor=1,
        schedules=["constant"],
        tune=False,
        fit_kwargs=FIT,
    )
    assert "WARNING: baselines were NOT tuned" in rep.markdown()
    assert rep.warnings


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedules": ["linear"]}, r"Unknown schedule\(s\) \['linear'\]"),
        ({"epochs": 0}, r"epochs to be a positive integer"),
        ({"budget_factor": 0}, r"budget_factor to be a positive integer"),
        ({"optimizer": "rmsprop"}, r"Unknown optimizer 'rmsprop'"),
        ({"seeds": []}, r"at least one seed"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    d = load_data("digits", batch_size=64, seed=0, subset=200)
    with pytest.raises(ConfigError, match=match):
        compare(_make_model, d.train, d.val, d.test, **kwargs)


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
    assert (tmp_path / "compare.png").exists() and "| cosine |" in (tmp_path / "compare.md").read_text()
