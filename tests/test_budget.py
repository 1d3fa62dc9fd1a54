"""Sizing a run: the time budget's arithmetic, the measured format, the dataset-aware recipe, and fit under a budget."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from superconv import fit
from superconv.data import load_data
from superconv.errors import ConfigError
from superconv.finder.probe import ProbeOutcome
from superconv.models import build_model
from superconv.train import setup as train_setup
from superconv.train import speed
from superconv.train.budget import MIN_UPDATES, TimeBudget, parse_seconds, plan_updates
from superconv.train.events import Callback
from superconv.train.options import FitOptions
from superconv.train.recipes import CPU, adapt, auto_batch_size, auto_epochs, ema_decay_for
from superconv.train.state import FitState


def test_the_plan_fills_the_budget_and_never_exceeds_it() -> None:
    for remaining in (5.0, 37.3, 100.0, 1000.0):
        plan = plan_updates(remaining, seconds_per_update=0.05, seconds_per_epoch_eval=0.7, updates_per_epoch=40,
                            seconds_final=0.4)  # fmt: skip
        assert plan.seconds <= remaining
        one_more = plan_updates(1e9, seconds_per_update=0.05, seconds_per_epoch_eval=0.7, updates_per_epoch=40)
        assert one_more.updates > plan.updates
        # one update more would not fit
        extra = (plan.updates + 1) * 0.05 + -(-(plan.updates + 1) // 40) * 0.7 + 0.4
        assert extra > remaining


def test_the_cycle_length_follows_the_measured_step_time() -> None:
    fast = plan_updates(60.0, seconds_per_update=0.01, seconds_per_epoch_eval=0.0, updates_per_epoch=100)
    slow = plan_updates(60.0, seconds_per_update=0.04, seconds_per_epoch_eval=0.0, updates_per_epoch=100)
    assert fast.updates == 6000 and slow.updates == 1500


def test_a_budget_too_small_for_a_cycle_says_how_much_is_needed() -> None:
    with pytest.raises(ConfigError, match=r"needs about .* give a larger --time-budget \(at least \d+ s more\)"):
        plan_updates(1.0, seconds_per_update=0.5, seconds_per_epoch_eval=1.0, updates_per_epoch=10)
    assert MIN_UPDATES >= 10


@pytest.mark.parametrize(("text", "seconds"), [("120", 120.0), ("90s", 90.0), ("2m", 120.0), ("1.5min", 90.0),
                                               ("1h", 3600.0), (45, 45.0)])  # fmt: skip
def test_budgets_parse_with_units(text: object, seconds: float) -> None:
    assert parse_seconds(text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["soon", "-5", "0", "2 weeks", "nan", True])
def test_bad_budgets_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"time budget"):
        parse_seconds(bad)  # type: ignore[arg-type]


def test_fit_under_a_budget_ends_within_it_with_the_whole_cycle() -> None:
    d = load_data("digits", batch_size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    # How close the wall time comes to the budget is measured by benchmarks/defaults.py, not asserted here.
    r = fit(model, d.train, d.val, max_lr=0.01, time_budget=TimeBudget(20.0, time.monotonic()), test_loader=d.test,
            verbose=False, progress=False)  # fmt: skip
    assert "length" in r.decisions and "time budget 20 s" in r.decisions["length"]
    # the whole schedule ran: it ends at the one-cycle's final LR, far below the peak
    assert r.steps >= MIN_UPDATES and r.lrs[-1] < 0.01 / 1e4
    assert r.steps == len(r.lrs)


class SlowDown(Callback):
    """The machine turns slower once a fifth of the run is done (another job takes the cores)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.planned = 0

    def on_fit_start(self, state: FitState) -> None:
        self.planned = state.total_steps

    def on_batch_end(self, state: FitState) -> None:
        if state.step > self.planned // 5:
            time.sleep(self.seconds)


def test_a_machine_that_slows_down_gets_the_cycle_compressed_not_the_budget_overrun() -> None:
    d = load_data("digits", batch_size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    slow = SlowDown(0.03)
    budget = TimeBudget(10.0, time.monotonic())
    r = fit(model, d.train, d.val, max_lr=0.01, time_budget=budget, test_loader=d.test, callbacks=[slow],
            verbose=False, progress=False)  # fmt: skip
    assert "deadline" in r.decisions, r.decisions
    assert r.steps < slow.planned
    assert r.lrs[-1] < 0.01 / 1e4  # the compressed cycle still ends with its annihilation tail
    assert r.steps == len(r.lrs)
    # without the compression the slowed updates alone would take several times the budget
    assert (slow.planned - slow.planned // 5) * slow.seconds > 2 * budget.seconds
    assert budget.elapsed() < 1.5 * budget.seconds  # loose: the benchmark measures how close it comes


class SlowPhase(Callback):
    """The machine is slow for a while early in the run, then fast again (a neighbour's job ends)."""

    def __init__(self, seconds: float, start: int, stop: int) -> None:
        self.seconds, self.start, self.stop = seconds, start, stop
        self.planned = 0
        self.shortest = 0  # the earliest end the cycle was given

    def on_fit_start(self, state: FitState) -> None:
        self.planned = self.shortest = state.total_steps

    def on_batch_end(self, state: FitState) -> None:
        self.shortest = min(self.shortest, state.total_steps)
        if self.start <= state.step < self.stop:
            time.sleep(self.seconds)


def test_a_machine_fast_again_gets_back_the_updates_a_speed_up_took() -> None:
    d = load_data("digits", batch_size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    slow = SlowPhase(0.03, start=40, stop=160)
    budget = TimeBudget(12.0, time.monotonic())
    r = fit(model, d.train, d.val, max_lr=0.01, time_budget=budget, test_loader=d.test, callbacks=[slow],
            verbose=False, progress=False)  # fmt: skip
    assert "slowed down again" in r.decisions.get("deadline", ""), r.decisions
    assert slow.shortest < r.steps <= slow.planned  # given back, never beyond the planned cycle
    assert r.lrs[-1] < 0.01 / 1e4  # the cycle still ends with its annihilation tail
    assert max(r.lrs) == pytest.approx(0.01, rel=0.05)  # and its peak was played
    assert r.steps == len(r.lrs)
    assert budget.elapsed() < 1.5 * budget.seconds  # loose: the benchmark measures how close it comes


def test_a_budget_is_planned_with_the_probes_measured_speed() -> None:
    d = load_data("digits", batch_size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    r = fit(model, d.train, d.val, time_budget=6, verbose=False, progress=False)
    length = r.decisions["length"]
    assert "speed from the probes'" in length, length
    batches = int(length.split("speed from the probes' ")[1].split(" batches")[0])
    assert batches >= train_setup.MIN_PROBE_BATCHES_FOR_SPEED
    unverified = fit(build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8), d.train, d.val,
                     time_budget=6, verify=False, verbose=False, progress=False)  # fmt: skip
    assert "speed from" not in unverified.decisions["length"]


def test_the_probes_speed_is_their_training_time_per_batch() -> None:
    def probe(updates: int, seconds: float) -> ProbeOutcome:
        return ProbeOutcome(0.1, 1.0, None, [1.0], [], 1.0, updates, False, seconds + 5.0, train_seconds=seconds)

    check = SimpleNamespace(earlier=(probe(10, 1.0),), candidates=(probe(30, 4.0), probe(20, 3.0)))
    options = replace(FitOptions(), time_budget=TimeBudget(60.0, time.monotonic()), accumulation_steps=2)
    setup = SimpleNamespace(seconds_per_update=0.5, speed_source="")
    train_setup._speed_from_probes(setup, check, options)
    assert setup.seconds_per_update == pytest.approx(8.0 / (60 * 2))  # validation time is not counted
    assert setup.speed_source == "the probes' 120 batches"
    few = SimpleNamespace(seconds_per_update=0.5, speed_source="")
    train_setup._speed_from_probes(few, SimpleNamespace(earlier=(), candidates=(probe(5, 1.0),)), options)
    assert few.seconds_per_update == 0.5 and not few.speed_source  # too few updates to say more than the timing
    no_budget = SimpleNamespace(seconds_per_update=0.5, speed_source="")
    train_setup._speed_from_probes(no_budget, check, FitOptions())
    assert no_budget.seconds_per_update == 0.5


def test_epochs_and_a_budget_take_the_smaller() -> None:
    d = load_data("digits", batch_size=32, seed=0)
    r = fit(build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8), d.train, d.val, epochs=2,
            max_lr=0.01, time_budget=600, verbose=False, progress=False)  # fmt: skip
    assert r.steps == 2 * len(d.train) and "2 epochs" in r.decisions["length"]


def test_the_recipe_adapts_to_the_dataset_and_says_why() -> None:
    digits, digits_why = adapt(CPU, train_size=1294, flip_invariant=False, device_type="cpu", given={})
    assert digits.batch_size == 32 and digits.epochs == auto_epochs(1294 // 32)
    assert digits.tta is False and "flip" in digits_why["tta"]
    fmnist, _ = adapt(CPU, train_size=54000, flip_invariant=True, device_type="cpu", given={})
    assert fmnist.batch_size == 256 and fmnist.tta is True and fmnist.epochs == 3
    assert set(digits_why) >= {"batch_size", "epochs", "tta", "range_test_iters"}


def test_explicit_options_beat_adapted_defaults() -> None:
    given = {"batch_size": 128, "epochs": 7, "tta": True, "range_test_iters": 50}
    recipe, why = adapt(replace(CPU, **given), train_size=1294, flip_invariant=False, device_type="cpu", given=given)
    assert (recipe.batch_size, recipe.epochs, recipe.tta, recipe.range_test_iters) == (128, 7, True, 50)
    assert why == {}


def test_batch_and_ema_rules() -> None:
    assert [auto_batch_size(n, "cpu") for n in (100, 1294, 2250, 54000, 10**7)] == [16, 32, 32, 256, 256]
    assert auto_batch_size(10**7, "cuda") == 512
    assert ema_decay_for(200) is None and ema_decay_for(1688) == 0.979


def test_the_fastest_format_is_measured_and_cached(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERCONV_CPU_FORMAT", raising=False)
    d = load_data("digits", batch_size=32, seed=0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    opt = torch.optim.AdamW(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    fmt, cached, how = speed.fastest_cpu_format(model, opt, d.train, cache_dir=tmp_path)
    assert not cached and fmt.seconds_per_update > 0 and how.startswith("fastest of ")
    entry = next(iter(json.loads((tmp_path / "speed.json").read_text()).values()))
    timed = set(entry["seconds_per_update"])
    assert {"fp32", "fp32 + channels_last"} <= timed <= {"fp32", "fp32 + channels_last", "bf16", "bf16 + channels_last"}
    assert len(timed) == 4 or entry["bf16_forward_ratio"] > speed.PRUNE  # bf16 is timed unless screened out
    again, cached, how = speed.fastest_cpu_format(model, opt, d.train, cache_dir=tmp_path)
    assert cached and (again.autocast_dtype, again.channels_last) == (fmt.autocast_dtype, fmt.channels_last)
    assert how == "cached choice, timed again"
    # measured on a copy: the model, its optimizer and the RNG are untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not opt.state and torch.equal(torch.get_rng_state(), rng_before)


class _SlowInBf16(torch.nn.Module):
    """A classifier that is 20 ms slower per forward under CPU autocast, as bf16 is where it is emulated (with
    ``training_only``, only where gradients are recorded: a forward pass alone does not show it)."""

    forwards = 0  # counted on the class: the timing trains deep copies

    def __init__(self, training_only: bool = False) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        self.training_only = training_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).forwards += 1
        if torch.is_autocast_enabled("cpu") and (torch.is_grad_enabled() or not self.training_only):
            time.sleep(0.02)
        return self.net(x)


def test_a_far_slower_format_is_dropped_after_its_warm_up(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = load_data("digits", batch_size=32, seed=0)
    model = _SlowInBf16(training_only=True)
    calls = []
    real = speed.time_updates

    def counted(probe_model, *args, **kwargs):  # the copies the timing trains are deep copies: count their calls
        result = real(probe_model, *args, **kwargs)
        calls.append((args[3], kwargs.get("give_up_after")))
        return result

    monkeypatch.setattr(speed, "time_updates", counted)
    # The forward pass alone is not slow here (training_only), but on a CPU that emulates bf16 even this tiny
    # model's bf16 forward pass can be over PRUNE times fp32's under load: the screen is the next test's subject.
    monkeypatch.setattr(speed, "screen_bf16", lambda model, loader, candidates: (candidates, 1.0))
    fmt, _, how = speed.fastest_cpu_format(
        model, torch.optim.SGD(model.parameters(), lr=0.1), d.train, cache_dir=tmp_path
    )
    assert fmt.autocast_dtype is None and how == "fastest of 4 timed on this CPU"
    bf16_timings = [limit for dtype, limit in calls if dtype is torch.bfloat16]
    assert len(bf16_timings) == 2 and all(limit is not None for limit in bf16_timings)  # one each, not three
    assert sum(1 for dtype, _ in calls if dtype is None) >= 2 + 2  # the fp32 formats: timed again in later rounds
    entry = next(iter(json.loads((tmp_path / "speed.json").read_text()).values()))
    assert entry["seconds_per_update"]["bf16"] > 0.02 > entry["seconds_per_update"]["fp32"]


def test_bf16_is_not_timed_where_its_forward_pass_is_far_slower(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = load_data("digits", batch_size=32, seed=0)
    model = _SlowInBf16()
    timed = []
    real = speed.time_updates
    monkeypatch.setattr(speed, "time_updates", lambda *a, **k: timed.append(a[4]) or real(*a, **k))
    fmt, _, how = speed.fastest_cpu_format(
        model, torch.optim.SGD(model.parameters(), lr=0.1), d.train, cache_dir=tmp_path
    )
    assert fmt.autocast_dtype is None and timed and torch.bfloat16 not in timed
    assert how.startswith("fastest of 2 timed on this CPU; bf16 not timed: a forward pass in bf16 took ")
    entry = next(iter(json.loads((tmp_path / "speed.json").read_text()).values()))
    assert set(entry["seconds_per_update"]) == {"fp32", "fp32 + channels_last"}
    assert entry["bf16_forward_ratio"] > speed.PRUNE
    assert speed.screen_bf16(model, d.train, ((None, False),)) == (((None, False),), None)  # no bf16 asked for


def test_a_slow_warm_up_gives_up_early_with_its_time() -> None:
    d = load_data("digits", batch_size=32, seed=0)
    model = _SlowInBf16()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _SlowInBf16.forwards = 0
    seconds = speed.time_updates(model, opt, d.train, torch.device("cpu"), torch.bfloat16, False, 4, give_up_after=0.01)
    assert seconds > 0.02 and _SlowInBf16.forwards == speed.WARMUP_UPDATES  # gave up after the warm-up
    _SlowInBf16.forwards = 0
    full = speed.time_updates(model, opt, d.train, torch.device("cpu"), None, False, 4, give_up_after=1.0)
    assert 0 < full < 1.0 and _SlowInBf16.forwards == speed.WARMUP_UPDATES + 4  # fast enough: timed in full


def test_fit_records_the_measured_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERCONV_CPU_FORMAT", raising=False)
    d = load_data("digits", batch_size=32, seed=0)
    r = fit(build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8), d.train, d.val, epochs=1,
            max_lr=0.01, verbose=False, progress=False)  # fmt: skip
    assert "ms per update" in r.decisions["format"] and r.precision in ("fp32", "bf16")


def test_a_bad_pinned_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERCONV_CPU_FORMAT", "fp8")
    d = load_data("digits", batch_size=32, seed=0)
    with pytest.raises(ConfigError, match=r"SUPERCONV_CPU_FORMAT to be one of fp32, .*unset it"):
        fit(build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8), d.train, d.val, epochs=1,
            max_lr=0.01, verbose=False, progress=False)  # fmt: skip
