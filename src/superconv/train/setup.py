"""Setting a run up, before its first update: device and numeric format (measured on the CPU), optimizer, peak LR
(given, saved, or from the range test), and the run's length (epochs, or what fits a time budget)."""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import superconv.distributed as distributed
from superconv.device import resolve_device, resolve_precision, use_channels_last
from superconv.errors import ConfigError
from superconv.schedule.baselines import ONE_CYCLE_SCHEDULES, build_scheduler
from superconv.schedule.steps import UpdateCounter
from superconv.schedule.steps import total_steps as count_total_steps
from superconv.train.budget import MIN_UPDATES, TimeBudget, plan_updates
from superconv.train.checkpointing import PRECISION_NAMES
from superconv.train.optim import make_optimizer
from superconv.train.options import FitOptions
from superconv.train.progress import progress_enabled
from superconv.train.speed import CPU_CANDIDATES, Format, fastest_cpu_format, time_eval, time_updates
from superconv.train.state import FitResult, FitState

DTYPES = {name: dtype for dtype, name in PRECISION_NAMES.items()}
#: The range test's share of a time budget at most, and its fewest updates.
RANGE_TEST_SHARE, MIN_RANGE_TEST_ITERS = 0.15, 20
MIN_PROBE_BATCHES_FOR_SPEED = 20  # fewer probe batches than this: the format's timing stays the plan's speed
#: Set to pin the CPU format instead of measuring it: the same numbers on every machine.
FORMAT_ENV = "SUPERCONV_CPU_FORMAT"
#: Whether ``fit`` verifies the range test's suggestion when ``verify=None`` (and it can: a validation loader and a
#: one-cycle schedule). On: on the held-out workloads of ``benchmarks/lr_suggestion.py`` the verified LR avoided the
#: curve's blow-ups where the probes learn (a ResNet with SGD: 0.88 / 1.26 test points from a grid's best against
#: the curve's 5.19 / 15.08), it is no better than a coin toss on tasks a run only learns late (then its confidence
#: is low and says why), and its two probes cost 10-19% of the run's wall time (15% of its updates).
VERIFY_BY_DEFAULT = True
PINNED_FORMATS = {
    "fp32": (None, False),
    "fp32+channels_last": (None, True),
    "bf16": (torch.bfloat16, False),
    "bf16+channels_last": (torch.bfloat16, True),
}


@dataclass
class Setup:
    """What the range test and the schedule need before the run's state exists."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    forward_model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    seconds_per_update: float | None = None  # measured when the format was chosen by timing
    speed_source: str = ""  # where seconds_per_update came from, when not the format's timing
    eval_model: nn.Module | None = None  # what evaluates: forward_model without the DistributedDataParallel wrapper
    decisions: dict[str, str] = field(default_factory=dict)


def prepare(
    model: nn.Module, train_loader: Any, val_loader: Any, options: FitOptions, saved: dict[str, Any] | None
) -> FitState:
    """Device, format, optimizer, LR (range test or checkpoint), length, schedule: the run's state at update 0."""
    setup = build(model, train_loader, options, saved)
    if saved is None and isinstance(options.time_budget, TimeBudget):
        _check_budget(setup, model, train_loader, options)
    saved_max_lr = float(saved["max_lr"]) if saved is not None else None
    max_lr, shape, range_result, range_seconds = choose_max_lr(setup, train_loader, options, saved_max_lr, val_loader)
    batches = len(train_loader)
    # Under several processes rank 0's plan is every process's (their clocks differ by a few milliseconds).
    epochs, total = distributed.broadcast(run_length(setup, model, train_loader, val_loader, options, saved))
    # A resumed run's schedule has the length it was built with (early stopping may have shortened the run since).
    schedule_steps = int(saved["scheduler"].get("total_steps", total)) if saved is not None else total
    scheduler = build_scheduler(options.schedule, setup.optimizer, max_lr, schedule_steps, **shape)
    result = FitResult(
        history=[], max_lr=max_lr, epochs=0, steps=0, device=str(setup.device),
        precision=PRECISION_NAMES[setup.autocast_dtype], train_seconds=0.0, range_test_seconds=range_seconds,
        schedule=options.schedule, ema=None, range_test=range_result, decisions=setup.decisions,
        channels_last=setup.channels_last,
    )  # fmt: skip
    return FitState(
        model=model, optimizer=setup.optimizer, scheduler=scheduler, device=setup.device, history=result.history,
        forward_model=setup.forward_model, eval_model=setup.eval_model, train_loader=train_loader,
        val_loader=val_loader, criterion=setup.criterion, scaler=setup.scaler, autocast_dtype=setup.autocast_dtype,
        channels_last=setup.channels_last, tta=options.tta, accumulation_steps=options.accumulation_steps,
        epochs=epochs, batches_per_epoch=batches, total_steps=total, max_lr=max_lr, result=result,
        update_counter=UpdateCounter(setup.optimizer) if setup.scaler is not None else None,
    )  # fmt: skip


def build(model: nn.Module, train_loader: Any, options: FitOptions, saved: dict[str, Any] | None) -> Setup:
    """The device, the numeric format, the criterion, the optimizer and (fp16) the GradScaler."""
    device = resolve_device(options.device)
    if distributed.active() and device.type == "cuda":
        device = distributed.local_device("cuda")  # one GPU per process: LOCAL_RANK's
    model.to(device)
    criterion = (options.criterion or nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)).to(device)
    optimizer = options.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = make_optimizer(
            model, optimizer, lr=options.max_lr or 1e-3, weight_decay=options.weight_decay,
            momentum=options.momentum, device=device,
        )  # fmt: skip
    setup = Setup(device, None, False, model, criterion, optimizer, None)
    _choose_format(setup, model, train_loader, options, saved)
    if distributed.active():
        _same_format_everywhere(setup)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if distributed.active():
        setup.forward_model = distributed.wrap(model, device)  # after the layout change: DDP views the gradients
    setup.eval_model = torch.compile(model) if options.compile else model  # type: ignore[assignment]
    if options.compile:
        setup.forward_model = (
            torch.compile(setup.forward_model) if distributed.active() else setup.eval_model  # type: ignore[assignment]
        )
    if setup.autocast_dtype is torch.float16:
        setup.scaler = torch.amp.GradScaler(device.type)
    return setup


def _choose_format(
    setup: Setup, model: nn.Module, loader: Any, options: FitOptions, saved: dict[str, Any] | None
) -> None:
    """fp32/bf16 and channels_last: as given, as the resumed run trained, or (CPU, "auto") the fastest measured."""
    device = setup.device
    if saved is not None and "precision" in saved:  # a resumed run keeps its format, for bit-identical weights
        setup.autocast_dtype, setup.channels_last = DTYPES[saved["precision"]], bool(saved["channels_last"])
        return
    auto_dtype, auto_layout = options.precision == "auto", options.channels_last == "auto"
    if device.type != "cpu" or not (auto_dtype or auto_layout):
        setup.autocast_dtype = resolve_precision(options.precision, device)
        setup.channels_last = use_channels_last(options.channels_last, device)
        return
    pinned = os.environ.get(FORMAT_ENV, "").strip().lower()
    if pinned:
        _pin_format(setup, pinned, options)
        return
    given_dtype = None if auto_dtype else resolve_precision(options.precision, device)
    candidates = tuple(
        (dtype, layout)
        for dtype, layout in CPU_CANDIDATES
        if (auto_dtype or dtype is given_dtype) and (auto_layout or layout == bool(options.channels_last))
    )
    best, _cached, how = fastest_cpu_format(model, setup.optimizer, loader, candidates)
    setup.autocast_dtype, setup.channels_last = best.autocast_dtype, best.channels_last
    setup.seconds_per_update = best.seconds_per_update
    setup.decisions["format"] = f"{best.name}: {1000 * best.seconds_per_update:.1f} ms per update ({how})"
    if options.verbose:
        print(f"format: {setup.decisions['format']}")


def _same_format_everywhere(setup: Setup) -> None:
    """Rank 0's format (and its measured speed) on every process: DDP needs the same layout everywhere."""
    chosen = (PRECISION_NAMES[setup.autocast_dtype], setup.channels_last, setup.seconds_per_update)
    name, setup.channels_last, setup.seconds_per_update = distributed.broadcast(chosen)
    setup.autocast_dtype = DTYPES[name]


def _seconds_per_update(setup: Setup, model: nn.Module, loader: Any) -> float:
    """One optimizer update's seconds, measured; under several processes the slowest process's."""
    seconds = time_updates(model, setup.optimizer, loader, setup.device, setup.autocast_dtype, setup.channels_last)
    return distributed.slowest(seconds)


def _pin_format(setup: Setup, pinned: str, options: FitOptions) -> None:
    """The CPU format named by ``SUPERCONV_CPU_FORMAT`` (reproducible runs across machines), for what is "auto"."""
    if pinned not in PINNED_FORMATS:
        raise ConfigError(
            f"Expected {FORMAT_ENV} to be one of {', '.join(PINNED_FORMATS)}, but got {pinned!r}; unset it to let "
            "superconv measure the fastest format"
        )
    dtype, layout = PINNED_FORMATS[pinned]
    setup.autocast_dtype = dtype if options.precision == "auto" else resolve_precision(options.precision, setup.device)
    setup.channels_last = layout if options.channels_last == "auto" else bool(options.channels_last)
    setup.decisions["format"] = f"{pinned} (pinned by {FORMAT_ENV})"


def choose_max_lr(
    setup: Setup, train_loader: Any, options: FitOptions, saved: float | None, val_loader: Any = None
) -> tuple[float, dict[str, Any], Any, float]:
    """The peak LR and the one-cycle shape: given, saved in the checkpoint, or from the LR range test (then checked
    by verification probes on ``val_loader`` when ``options.verify`` asks for it).

    The shape follows one rule: an explicit ``schedule_kwargs`` value wins, then the range test's recommendation
    (its ``div_factor``), then the preset's. The returned seconds are the range test's and the verification's.
    """
    shape = dict(options.schedule_kwargs or {}) if options.schedule in ONE_CYCLE_SCHEDULES else {}
    if saved is not None or options.max_lr is not None:
        return float(saved if saved is not None else options.max_lr), shape, None, 0.0  # type: ignore[arg-type]
    from superconv.finder import LRFinder
    from superconv.finder.lr_finder import DEFAULT_START_LR

    range_kwargs = dict(options.range_test_kwargs or {})
    _cap_range_test(setup, options, range_kwargs)
    t0 = time.perf_counter()
    finder = LRFinder(setup.forward_model, setup.optimizer, setup.criterion, device=setup.device)
    result = finder.range_test(
        train_loader,
        **{
            "autocast_dtype": setup.autocast_dtype,
            "grad_scaler": setup.scaler,  # fp16: the range test scales its losses as training will (state restored)
            "progress": progress_enabled(options.progress),
            "accumulation_steps": options.accumulation_steps,  # the LR for the batch the run will train with
            "start_lr": DEFAULT_START_LR,  # (torch-lr-finder's None would start at the optimizer's LR)
            **range_kwargs,
        },
    )
    suggested = result.one_cycle_kwargs()
    max_lr = float(suggested.pop("max_lr"))
    if options.schedule in ONE_CYCLE_SCHEDULES:
        for key, value in suggested.items():
            shape.setdefault(key, value)
    if result.quality != "ok" and options.verbose:
        warnings.warn(f"LR range test: {result.warning}", UserWarning, stacklevel=5)
    if options.verbose:
        print(f"LR range test: suggested max_lr={max_lr:.3g} ({time.perf_counter() - t0:.1f} s)")
    max_lr = _verified_max_lr(setup, finder, train_loader, val_loader, options, shape, max_lr)
    return max_lr, shape, result, time.perf_counter() - t0


def _verified_max_lr(
    setup: Setup, finder: Any, train_loader: Any, val_loader: Any, options: FitOptions, shape: dict[str, Any],
    suggested: float,
) -> float:  # fmt: skip
    """The verification's LR (see :func:`superconv.finder.verify.verify`), or ``suggested`` when it is off; the
    decision goes to ``setup.decisions["max_lr"]``."""
    wanted = options.verify if options.verify is not None else VERIFY_BY_DEFAULT
    head = f"range test suggested {suggested:.3g}"
    if not wanted:
        setup.decisions["max_lr"] = f"{head} (verification off)"
        return suggested
    skip = ""
    if val_loader is None:
        skip = "no validation loader to choose with"
    elif distributed.active():
        skip = "not under several processes yet (each would choose on its own part of the validation data)"
    elif options.schedule not in ONE_CYCLE_SCHEDULES:
        skip = f"the {options.schedule!r} schedule is not a one-cycle (the probes are short one-cycle runs)"
    if skip:
        setup.decisions["max_lr"] = f"{head}; verification skipped: {skip}"
        if options.verify and options.verbose:
            print(f"LR verification skipped: {skip}")
        return suggested
    check = finder.verify(
        train_loader,
        val_loader,
        run_steps=_run_steps_to_verify(setup, train_loader, options),
        schedule=_probe_schedule(options.schedule, shape),
        accumulation_steps=options.accumulation_steps,
        autocast_dtype=setup.autocast_dtype,
        grad_scaler=setup.scaler,
    )
    setup.decisions["max_lr"] = f"{head}; {check.summary()}"
    if options.verbose:
        print(f"LR verification: {check.summary()}")
    _speed_from_probes(setup, check, options)
    return float(check.lr)


def _run_steps_to_verify(setup: Setup, train_loader: Any, options: FitOptions) -> int:
    """The run's optimizer updates, as :func:`run_length` will count them: from ``epochs``, or (time budget) what
    fits in what is left of it at the measured speed (the probes then take their share of that)."""
    total = count_total_steps(options.epochs or 10, len(train_loader), options.accumulation_steps)
    budget = options.time_budget
    if not isinstance(budget, TimeBudget):
        return total
    if setup.seconds_per_update is None:
        setup.seconds_per_update = _seconds_per_update(setup, setup.eval_model or setup.forward_model, train_loader)
    fits = int(max(0.0, budget.remaining()) / (setup.seconds_per_update * options.accumulation_steps))
    return max(2, min(fits, total) if options.epochs is not None else fits)


def _speed_from_probes(setup: Setup, check: Any, options: FitOptions) -> None:
    """Under a time budget, plan the run with the probes' speed: they trained the run's own model, format and data
    for tens to hundreds of updates, where the format's timing had a few (on a noisy 2-core machine those few were
    18% slower than the run turned out, and a 300 s budget ended 30 s early)."""
    if not isinstance(options.time_budget, TimeBudget):
        return
    probes = [p for p in (*check.earlier, *check.candidates) if p.updates > 0 and p.train_seconds > 0]
    batches = sum(p.updates for p in probes) * options.accumulation_steps
    if batches < MIN_PROBE_BATCHES_FOR_SPEED:
        return
    setup.seconds_per_update = sum(p.train_seconds for p in probes) / batches
    setup.speed_source = f"the probes' {batches} batches"


def _probe_schedule(schedule: str, shape: dict[str, Any]) -> dict[str, Any]:
    """The OneCycleLR keyword arguments of the run's schedule (as :func:`build_scheduler` builds it)."""
    if schedule == "one-cycle-no-tail":
        return {**shape, "three_phase": False, "final_div_factor": 1.0}
    if schedule == "fastai":
        keep = ("cycle_momentum", "base_momentum", "max_momentum")
        return {"preset": "fastai", **{k: v for k, v in shape.items() if k in keep}}
    return dict(shape)


def _check_budget(setup: Setup, model: nn.Module, train_loader: Any, options: FitOptions) -> None:
    """Measure the update time now, and refuse a budget too small for the shortest cycle before any range test."""
    if not setup.seconds_per_update:
        setup.seconds_per_update = _seconds_per_update(setup, model, train_loader)
    budget = options.time_budget
    assert isinstance(budget, TimeBudget)
    per_update = setup.seconds_per_update * options.accumulation_steps
    needed = (MIN_RANGE_TEST_ITERS + MIN_UPDATES) * per_update
    if budget.remaining() - options.budget_reserve < needed:
        raise ConfigError(
            f"The time budget of {budget.seconds:.0f} s leaves {max(budget.remaining(), 0.0):.1f} s, but a range "
            f"test and the shortest cycle need about {needed:.1f} s here ({1000 * per_update:.0f} ms per update): "
            f"give a larger --time-budget (at least {math.ceil(needed - budget.remaining()) + 1} s more), a "
            "smaller model or a smaller batch"
        )


def _cap_range_test(setup: Setup, options: FitOptions, range_kwargs: dict[str, Any]) -> None:
    """Under a time budget the range test takes at most :data:`RANGE_TEST_SHARE` of it (at least 20 updates)."""
    budget, per_update = options.time_budget, setup.seconds_per_update
    if not isinstance(budget, TimeBudget) or not per_update:
        return
    planned = int(range_kwargs.get("num_iter", 100))
    cap = max(MIN_RANGE_TEST_ITERS, int(RANGE_TEST_SHARE * budget.seconds / (per_update * options.accumulation_steps)))
    if cap < planned:
        range_kwargs["num_iter"] = cap
        setup.decisions["range_test"] = (
            f"{cap} updates instead of {planned}: at most {RANGE_TEST_SHARE:.0%} of the {budget.seconds:.0f} s budget"
        )


def run_length(
    setup: Setup, model: nn.Module, train_loader: Any, val_loader: Any, options: FitOptions,
    saved: dict[str, Any] | None,
) -> tuple[int, int]:  # fmt: skip
    """(epochs, optimizer updates): saved, from ``epochs``, or what fits the time budget."""
    batches = len(train_loader)
    if saved is not None:
        return int(saved["epochs"]), int(saved["total_steps"])
    epochs = options.epochs or 10
    total = count_total_steps(epochs, batches, options.accumulation_steps)
    if options.time_budget is not None:
        budget_epochs, budget_updates = fit_to_budget(setup, model, train_loader, val_loader, options)
        if options.epochs is None or budget_updates < total:
            return budget_epochs, budget_updates
        setup.decisions["length"] += f"; {epochs} epochs ({total} updates) asked for fit in it"
    if total < 2:
        raise ConfigError(
            f"The run has only {total} optimizer update(s) (epochs={epochs}, {batches} batches per epoch, "
            f"accumulation_steps={options.accumulation_steps}): train longer or use a smaller batch size"
        )
    return epochs, total


def fit_to_budget(
    setup: Setup, model: nn.Module, train_loader: Any, val_loader: Any, options: FitOptions
) -> tuple[int, int]:
    """The updates whose training, validations and final test end within the budget (measured speeds)."""
    budget = options.time_budget
    if not isinstance(budget, TimeBudget):
        budget = TimeBudget.starting_now(budget)  # type: ignore[arg-type]
    fmt = Format(setup.autocast_dtype, setup.channels_last, setup.seconds_per_update or 0.0)
    per_update = fmt.seconds_per_update or _seconds_per_update(setup, model, train_loader)
    per_update *= options.accumulation_steps
    eval_loader = val_loader if val_loader is not None else options.test_loader
    per_example = 0.0
    if eval_loader is not None:
        per_example = distributed.slowest(
            time_eval(model, eval_loader, setup.device, fmt.autocast_dtype, fmt.channels_last, options.tta)
        )
    updates_per_epoch = math.ceil(len(train_loader) / options.accumulation_steps)
    plan = plan_updates(
        budget.remaining() - options.budget_reserve,
        seconds_per_update=per_update,
        seconds_per_epoch_eval=per_example * _examples(val_loader),
        updates_per_epoch=updates_per_epoch,
        seconds_final=per_example * _examples(options.test_loader),
    )
    setup.decisions["length"] = (
        f"time budget {budget.seconds:.0f} s, {budget.elapsed():.1f} s spent before training: " + plan.describe(
            updates_per_epoch) + (f" (speed from {setup.speed_source})" if setup.speed_source else "")
    )  # fmt: skip
    if options.verbose:
        print(setup.decisions["length"])
    return plan.epochs, plan.updates


def _examples(loader: Any) -> int:
    """How many examples ``loader`` yields per pass (0 for ``None``), without iterating it where it can tell."""
    if loader is None:
        return 0
    for attribute in ("dataset_size",):
        if isinstance(getattr(loader, attribute, None), int):
            return int(getattr(loader, attribute))
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    batch_size = getattr(loader, "batch_size", None) or len(next(iter(loader))[1])
    return int(batch_size) * len(loader)
