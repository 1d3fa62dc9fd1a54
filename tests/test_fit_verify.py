"""fit's verification of the range test's suggestion (FitOptions.verify) on tiny real data (digits)."""

from __future__ import annotations

import pytest
import torch

from superconv import fit
from superconv.data import load_data
from superconv.errors import ConfigError
from superconv.finder.candidates import default_candidates
from superconv.finder.verify import DEFAULT_PROBE_FRACTION, MIN_PROBE_STEPS
from superconv.models import build_model
from superconv.schedule.steps import total_steps
from superconv.train.options import FitOptions


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)


def _fit(**kw: object):
    d = load_data("digits", batch_size=64, seed=0)
    torch.manual_seed(1)
    epochs = kw.pop("epochs_override", 2)
    return fit(_model(), d.train, kw.pop("val", d.val), epochs=epochs, verbose=False, precision="fp32",
               range_test_kwargs={"num_iter": 30}, **kw)  # fmt: skip


def test_fit_trains_at_the_verified_lr_from_exactly_the_initial_state() -> None:
    verified = _fit(verify=True)
    assert verified.range_test is not None
    assert any(verified.max_lr == pytest.approx(lr) for lr in default_candidates(verified.range_test))
    decision = verified.decisions["max_lr"]
    assert decision.startswith(f"range test suggested {verified.range_test.suggestion:.3g}; verified max_lr=")
    assert "2 probes" in decision or "1 probes" in decision
    # the probes left nothing behind: the same run with that LR given outright trains identically
    given = _fit(max_lr=verified.max_lr, schedule_kwargs={"div_factor": verified.range_test.div_factor})
    assert [h["train_loss"] for h in given.history] == [h["train_loss"] for h in verified.history]
    assert given.history[-1]["val_accuracy"] == verified.history[-1]["val_accuracy"]
    # its seconds count with the range test's (and so in a time budget)
    assert verified.range_test_seconds > verified.range_test.elapsed_s


def test_probes_are_sized_from_the_runs_updates() -> None:
    d = load_data("digits", batch_size=64, seed=0)
    r = _fit(verify=True, accumulation_steps=2, epochs_override=20)
    run_steps = total_steps(20, len(d.train), 2)  # as run_length counts them: 20 epochs, 2 batches per update
    probe = max(MIN_PROBE_STEPS, round(DEFAULT_PROBE_FRACTION * run_steps))
    assert probe > MIN_PROBE_STEPS  # long enough that the run's length shows
    assert f" probes of {probe} updates, " in r.decisions["max_lr"]


def test_without_validation_data_verification_is_skipped_and_said_so() -> None:
    r = _fit(verify=True, val=None)
    assert r.max_lr == r.range_test.suggestion
    assert r.decisions["max_lr"].endswith("verification skipped: no validation loader to choose with")


def test_on_by_default_and_off_when_asked() -> None:
    default, asked = _fit(), _fit(verify=True)
    assert "verified max_lr=" in default.decisions["max_lr"] and default.max_lr == asked.max_lr
    r = _fit(verify=False)
    assert r.max_lr == r.range_test.suggestion
    assert r.decisions["max_lr"] == f"range test suggested {r.max_lr:.3g} (verification off)"


def test_a_non_one_cycle_schedule_is_not_verified() -> None:
    r = _fit(verify=True, schedule="cosine")
    assert "verification skipped: the 'cosine' schedule is not a one-cycle" in r.decisions["max_lr"]


def test_verify_must_be_a_bool_or_none() -> None:
    with pytest.raises(ConfigError, match=r"Expected verify to be True, False or None .* but got 'yes': pass verify="):
        FitOptions(verify="yes")  # type: ignore[arg-type]


def test_with_a_time_budget_the_probes_are_sized_from_what_fits_and_counted_in_it() -> None:
    import time

    from superconv.train.budget import TimeBudget

    budget = TimeBudget(15.0, time.monotonic())
    r = _fit(verify=True, time_budget=budget)
    assert "verified max_lr=" in r.decisions["max_lr"] and "% of the run" in r.decisions["max_lr"]
    assert "time budget 15 s" in r.decisions["length"]
    assert budget.elapsed() < 15.0 + 5.0  # the probes came out of the budget, not on top of it
