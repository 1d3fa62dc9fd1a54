"""``superconv.fit``: the seed's whole workflow as one call.

Range test -> one-cycle schedule stepped after every optimizer update -> train/validation phases with loss and
accuracy -> early stopping -> best checkpoint -> test on the best weights. ``fit`` sets the run up, hands it to
the loop (:mod:`superconv.train.loop`) with its handlers, and tests the result.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superconv.device import resolve_device, resolve_precision, use_channels_last
from superconv.errors import ConfigError
from superconv.schedule.baselines import ONE_CYCLE_SCHEDULES, build_scheduler
from superconv.schedule.steps import UpdateCounter
from superconv.schedule.steps import total_steps as count_total_steps
from superconv.train import loop
from superconv.train.checkpointing import BestCheckpoint, Checkpointer, load_last
from superconv.train.early_stopping import MONITORS, EarlyStopping
from superconv.train.ema import EMAHandler, WeightEMA
from superconv.train.evaluation import evaluate
from superconv.train.events import Callback, Events
from superconv.train.handlers import FirstStepTimer, GracefulStop, Interrupt, NonFiniteGuard, ScheduleRecorder
from superconv.train.optim import make_optimizer
from superconv.train.options import FitOptions
from superconv.train.progress import EpochTable, ProgressBars, progress_enabled
from superconv.train.state import FitResult, FitState

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    epochs: int = 10,
    max_lr: float | None = None,
    optimizer: str | torch.optim.Optimizer = "adamw",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    label_smoothing: float = 0.0,
    criterion: nn.Module | None = None,
    schedule: str = "one-cycle",
    schedule_kwargs: dict[str, Any] | None = None,
    accumulation_steps: int = 1,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | str = "auto",
    compile: bool = False,
    patience: int | None = None,
    monitor: str = "val_accuracy",
    test_loader: Iterable[Any] | None = None,
    tta: bool = False,
    ema: float | None = None,
    ema_every: int = 1,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    range_test_kwargs: dict[str, Any] | None = None,
    progress: bool | None = None,
    verbose: bool = True,
    log_every: int = 50,
    config: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` with super-convergence: range test, one cycle, early stopping, best checkpoint, test.

    Args:
        model: Any classifier returning logits; moved to ``device``.
        train_loader: Yields ``(inputs, labels)``; must have ``len()``. A ``set_epoch(epoch)`` method, when
            present, is called each epoch (reproducible shuffles, exact resume).
        val_loader: Validation batches, evaluated after every epoch (early stopping, the best checkpoint).
        **options: Every keyword argument is documented on :class:`superconv.train.options.FitOptions`.

    Returns:
        A :class:`FitResult`; ``model`` holds the best (or final) weights.
    """
    options = FitOptions.pick(locals())
    _check_loaders(train_loader, val_loader, options)
    saved = load_last(options.out) if options.resume and options.out is not None else None
    state = _prepare(model, train_loader, val_loader, options, saved)
    with GracefulStop() as signals:
        events = Events(_handlers(state, options, signals))
        if saved is not None:
            _resume(state, events, saved, options)
        loop.run(state, events)
    return _finish(state, events, options)


def _resume(state: FitState, events: Events, saved: dict[str, Any], options: FitOptions) -> None:
    checkpointer = next(h for h in events.handlers if isinstance(h, Checkpointer))
    checkpointer.restore(state, saved)
    if options.verbose:
        print(f"Resuming {options.out} at epoch {state.epoch + 1}, batch {state.start_batch} "
              f"(update {state.step}/{saved['total_steps']})")  # fmt: skip


def _check_loaders(train_loader: Any, val_loader: Any, options: FitOptions) -> None:
    if options.patience is not None and val_loader is None:
        raise ConfigError(
            f"patience={options.patience} needs a val_loader: early stopping watches the validation "
            f"{options.monitor.removeprefix('val_')}; pass val_loader, or patience=None"
        )
    if not isinstance(train_loader, Sized):
        raise ConfigError("train_loader must have a length (len(train_loader) batches per epoch) to size the schedule")
    if len(train_loader) == 0:
        raise ConfigError("train_loader is empty: it must yield at least one batch per epoch")


@dataclass
class _Setup:
    """What the range test and the schedule need before the run's state exists."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    forward_model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any


def _prepare(
    model: nn.Module, train_loader: Any, val_loader: Any, options: FitOptions, saved: dict[str, Any] | None
) -> FitState:
    """Device, precision, optimizer, LR (range test or checkpoint), schedule: the run's state at update 0."""
    setup = _setup(model, options)
    saved_max_lr = float(saved["max_lr"]) if saved is not None else None
    max_lr, shape, range_result, range_seconds = _choose_max_lr(setup, train_loader, options, saved_max_lr)
    batches = len(train_loader)
    total = count_total_steps(options.epochs, batches, options.accumulation_steps)
    if total < 2:
        raise ConfigError(
            f"The run has only {total} optimizer update(s) (epochs={options.epochs}, {batches} batches per epoch, "
            f"accumulation_steps={options.accumulation_steps}): train longer or use a smaller batch size"
        )
    scheduler = build_scheduler(options.schedule, setup.optimizer, max_lr, total, **shape)
    counter = UpdateCounter(setup.optimizer) if setup.scaler is not None else None
    precision = PRECISION_NAMES[setup.autocast_dtype]
    result = FitResult(
        history=[], max_lr=max_lr, epochs=0, steps=0, device=str(setup.device), precision=precision,
        train_seconds=0.0, range_test_seconds=range_seconds, schedule=options.schedule, ema=options.ema,
        range_test=range_result,
    )  # fmt: skip
    return FitState(
        model=model, optimizer=setup.optimizer, scheduler=scheduler, device=setup.device, history=result.history,
        forward_model=setup.forward_model, eval_model=setup.forward_model, train_loader=train_loader,
        val_loader=val_loader, criterion=setup.criterion, scaler=setup.scaler, autocast_dtype=setup.autocast_dtype,
        channels_last=setup.channels_last, tta=options.tta, accumulation_steps=options.accumulation_steps,
        epochs=options.epochs, batches_per_epoch=batches, total_steps=total, max_lr=max_lr, result=result,
        update_counter=counter,
    )  # fmt: skip


def _setup(model: nn.Module, options: FitOptions) -> _Setup:
    device = resolve_device(options.device)
    autocast_dtype = resolve_precision(options.precision, device)
    channels_last = use_channels_last(options.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    forward_model: nn.Module = torch.compile(model) if options.compile else model  # type: ignore[assignment]
    criterion = options.criterion or nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)
    optimizer = options.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = make_optimizer(
            model, optimizer, lr=options.max_lr or 1e-3, weight_decay=options.weight_decay,
            momentum=options.momentum, device=device,
        )  # fmt: skip
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype is torch.float16 else None
    return _Setup(device, autocast_dtype, channels_last, forward_model, criterion.to(device), optimizer, scaler)


def _choose_max_lr(
    setup: _Setup, train_loader: Any, options: FitOptions, saved: float | None
) -> tuple[float, dict[str, Any], Any, float]:
    """The peak LR and the one-cycle shape: given, saved in the checkpoint, or from the LR range test."""
    shape = dict(options.schedule_kwargs or {}) if options.schedule in ONE_CYCLE_SCHEDULES else {}
    if saved is not None or options.max_lr is not None:
        return float(saved if saved is not None else options.max_lr), shape, None, 0.0  # type: ignore[arg-type]
    from superconv.finder import LRFinder

    t0 = time.perf_counter()
    finder = LRFinder(setup.forward_model, setup.optimizer, setup.criterion, device=setup.device)
    result = finder.range_test(
        train_loader,
        **{
            "autocast_dtype": setup.autocast_dtype,
            "grad_scaler": setup.scaler,  # fp16: the range test scales its losses as training will (state restored)
            "progress": progress_enabled(options.progress),
            "accumulation_steps": options.accumulation_steps,  # the LR for the batch the run will train with
            **(options.range_test_kwargs or {}),
        },
    )
    seconds = time.perf_counter() - t0
    suggested = result.one_cycle_kwargs()
    max_lr = float(suggested.pop("max_lr"))
    if options.schedule in ONE_CYCLE_SCHEDULES:
        for key, value in suggested.items():
            shape.setdefault(key, value)
    if result.quality != "ok" and options.verbose:
        warnings.warn(f"LR range test: {result.warning}", UserWarning, stacklevel=4)
    if options.verbose:
        print(f"LR range test: suggested max_lr={max_lr:.3g} ({seconds:.1f} s)")
    return max_lr, shape, result, seconds


def _handlers(state: FitState, options: FitOptions, signals: GracefulStop) -> list[Callback]:
    """The built-in handlers around the user's callbacks, in the order they must run."""
    out, config = options.out, options.config or {}
    handlers: list[Callback] = [ScheduleRecorder()]
    if options.ema is not None:  # built after the range test, which restores the weights it swept
        handlers.append(EMAHandler(WeightEMA(state.model, options.ema, options.ema_every)))
    handlers += [NonFiniteGuard(options.log_every), FirstStepTimer()]
    if progress_enabled(options.progress):
        handlers.append(ProgressBars(options.log_every))
    handlers.append(BestCheckpoint(options.monitor, out, config))
    if options.verbose:
        handlers.append(EpochTable())
    handlers += list(options.callbacks)
    if options.patience:
        handlers.append(EarlyStopping(options.patience, MONITORS[options.monitor], monitor=options.monitor))
    handlers.append(Interrupt(signals, out))  # after every on_batch_end: a signal sent there stops at this update
    if out is not None:
        stateful = {h.state_key: h for h in handlers if h.state_key and h not in options.callbacks}
        handlers.append(Checkpointer(out, stateful, config))
    return handlers


def _finish(state: FitState, events: Events, options: FitOptions) -> FitResult:
    """Restore the best (or averaged) weights and test them."""
    result = state.result
    assert result is not None
    result.train_seconds = state.clock()
    result.steps = state.step
    result.skipped_steps = state.skipped_steps
    if state.update_counter is not None:
        state.update_counter.remove()
    result.epochs = len(state.history)
    for handler in events.handlers:
        if isinstance(handler, ScheduleRecorder):
            result.lrs, result.momentums = handler.lrs, handler.momentums
    best = next((h for h in events.handlers if isinstance(h, BestCheckpoint)), None)
    ema = next((h.ema for h in events.handlers if isinstance(h, EMAHandler)), None)
    has_best = best is not None and best.weights is not None
    if has_best and not result.interrupted:
        state.model.load_state_dict(best.weights)  # type: ignore[union-attr,arg-type]
    elif ema is not None and not result.interrupted and not result.diverged:
        state.model.load_state_dict(ema.module.state_dict())  # no validation: the final average
    if options.test_loader is not None and not result.interrupted and not (result.diverged and not has_best):
        assert state.forward_model is not None
        result.test_loss, result.test_accuracy = evaluate(
            state.forward_model, options.test_loader, state.device,
            autocast_dtype=state.autocast_dtype, channels_last=state.channels_last, tta=state.tta,
        )  # fmt: skip
    if options.verbose and result.message:
        print(result.message)
    return result
