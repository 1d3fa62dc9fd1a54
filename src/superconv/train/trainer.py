"""``superconv.fit``: the seed's whole workflow as one call.

Range test -> one-cycle schedule stepped after every optimizer update -> train/validation phases with loss and
accuracy -> early stopping -> best checkpoint -> test on the best weights. ``fit`` sets the run up, hands it to
the loop (:mod:`superconv.train.loop`) with its handlers, and tests the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import superconv.distributed as distributed
import superconv.train.loop as loop
import superconv.train.setup as setup
from superconv.device import resolve_device
from superconv.errors import ConfigError
from superconv.train.budget import TimeBudget
from superconv.train.checkpointing import BestCheckpoint, Checkpointer, load_last
from superconv.train.deadline import Deadline
from superconv.train.early_stopping import MONITORS, EarlyStopping
from superconv.train.ema import EMAHandler, WeightEMA
from superconv.train.evaluation import evaluate
from superconv.train.events import Callback, Events
from superconv.train.handlers import (
    FirstStepTimer,
    GracefulStop,
    Interrupt,
    NonFiniteGuard,
    ScheduleRecorder,
    StopAgreement,
)
from superconv.train.options import FitOptions
from superconv.train.progress import EpochTable, ProgressBars, progress_enabled
from superconv.train.recipes import EMA_MIN_UPDATES, EMA_SPAN, ema_decay_for
from superconv.train.state import FitResult, FitState

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    epochs: int | None = None,
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
    ema: float | str | None = None,
    ema_every: int = 1,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    range_test_kwargs: dict[str, Any] | None = None,
    verify: bool | None = None,
    progress: bool | None = None,
    verbose: bool = True,
    log_every: int = 50,
    config: dict[str, Any] | None = None,
    time_budget: float | str | TimeBudget | None = None,
    budget_reserve: float = 0.0,
) -> FitResult:
    """Train ``model`` with super-convergence: range test, one cycle, early stopping, best checkpoint, test.

    Args:
        model: Any classifier returning logits; moved to ``device``.
        train_loader: Yields ``(inputs, labels)``; must have ``len()``. A ``set_epoch(epoch)`` method, when
            present, is called each epoch (reproducible shuffles, exact resume).
        val_loader: Validation batches, evaluated after every epoch (early stopping, the best checkpoint).
        **options: Every keyword argument is documented on :class:`superconv.train.options.FitOptions`.

    Under ``torchrun`` (several processes) ``fit`` trains one DistributedDataParallel model on all of them: it starts
    the process group when none runs, shards superconv's loaders (a ``DataLoader`` needs a ``DistributedSampler``),
    reduces the metrics over the processes and lets rank 0 alone print and write files (docs/distributed.md).

    Returns:
        A :class:`FitResult`; ``model`` holds the best (or final) weights.
    """
    options = FitOptions.pick(locals())
    with distributed.session(resolve_device(options.device).type):
        return _fit(model, train_loader, val_loader, options)


def _fit(model: nn.Module, train_loader: Any, val_loader: Any, options: FitOptions) -> FitResult:
    if distributed.active():
        train_loader, val_loader, options = _for_this_process(train_loader, val_loader, options)
    _check_loaders(train_loader, val_loader, options)
    saved = load_last(options.out) if options.resume and options.out is not None else None
    state = setup.prepare(model, train_loader, val_loader, options, saved)
    with GracefulStop() as signals:
        events = Events(_handlers(state, options, signals, saved))
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


def _for_this_process(train_loader: Any, val_loader: Any, options: FitOptions) -> tuple[Any, Any, FitOptions]:
    """This process's part of the loaders; rank 0 alone prints and shows progress."""
    train_loader = distributed.shard(train_loader, training=True)
    val_loader = distributed.shard(val_loader, training=False)
    test_loader = distributed.shard(options.test_loader, training=False)
    if (
        isinstance(train_loader, Sized)
        and distributed.agree([len(train_loader) != distributed.broadcast(len(train_loader))])[0]
    ):
        raise ConfigError(
            f"The processes' training loaders have different lengths ({len(train_loader)} batches on rank "
            f"{distributed.rank()}): every process must train on the same number of batches per epoch (use a "
            "DistributedSampler, which pads or drops to equal parts)"
        )
    main = distributed.is_main()
    options = replace(
        options, test_loader=test_loader, verbose=options.verbose and main, progress=options.progress if main else False
    )
    return train_loader, val_loader, options


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


def _ema_decay(state: FitState, options: FitOptions, saved: dict[str, Any] | None) -> float | None:
    """The weight average's decay: given, or (``"auto"``) from the run's length, decided once, when it starts.

    A resumed run keeps the saved decision: its length may have been compressed since (early stopping, a time
    budget on a slower machine), and the average must go on as it began.
    """
    if options.ema != "auto":
        return options.ema  # type: ignore[return-value]
    if saved is not None:
        return float(saved["ema"]["decay"]) if "ema" in saved else None
    return ema_decay_for(state.total_steps)


def _handlers(
    state: FitState, options: FitOptions, signals: GracefulStop, saved: dict[str, Any] | None = None
) -> list[Callback]:
    """The built-in handlers around the user's callbacks, in the order they must run."""
    out, config = options.out, options.config or {}
    handlers: list[Callback] = [ScheduleRecorder()]
    decay = _ema_decay(state, options, saved)
    if options.ema == "auto" and state.result is not None:
        state.result.decisions["ema"] = (
            f"{decay}: time constant {EMA_SPAN} of {state.total_steps} updates" if decay is not None
            else f"off: {state.total_steps} updates are too few for a weight average (fewer than {EMA_MIN_UPDATES})"
        )  # fmt: skip
    if state.result is not None:
        state.result.ema = decay  # type: ignore[assignment]
    if decay is not None:  # built after the range test, which restores the weights it swept
        handlers.append(EMAHandler(WeightEMA(state.model, float(decay), options.ema_every)))
    handlers += [NonFiniteGuard(options.log_every), FirstStepTimer()]
    if progress_enabled(options.progress):
        handlers.append(ProgressBars(options.log_every))
    handlers.append(BestCheckpoint(options.monitor, out, config))
    if options.verbose:
        handlers.append(EpochTable())
    handlers += list(options.callbacks)
    if options.patience:
        handlers.append(EarlyStopping(options.patience, MONITORS[options.monitor], monitor=options.monitor))
    if isinstance(options.time_budget, TimeBudget):
        handlers.append(Deadline(options.time_budget, options.verbose))
    handlers.append(Interrupt(signals, out))  # after every on_batch_end: a signal sent there stops at this update
    if distributed.active():
        handlers.append(StopAgreement(out))  # every process stops where one of them stopped
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
        # Under several processes the module itself: its DDP wrapper could sync buffers in an evaluation's forward.
        tested = state.model if distributed.active() else state.forward_model
        result.test_loss, result.test_accuracy = evaluate(
            tested, options.test_loader, state.device,
            autocast_dtype=state.autocast_dtype, channels_last=state.channels_last, tta=state.tta,
        )  # fmt: skip
    if options.verbose and result.message:
        print(result.message)
    return result
