"""The loop's bookkeeping handlers: the schedule actually applied, the NaN guard, Ctrl-C/SIGTERM, the first step's
time. (Checkpoints, the EMA, early stopping and progress have their own modules.)"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import superconv.distributed as distributed
from superconv.train.events import Callback

if TYPE_CHECKING:
    from superconv.train.state import FitState


class ScheduleRecorder(Callback):
    """The LR and momentum each optimizer update applied (``result.lrs``, ``result.momentums``, schedule.png)."""

    state_key = "schedule"

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.momentums: list[float | None] = []

    def on_batch_end(self, state: FitState) -> None:
        if state.updated:
            self.lrs.append(state.applied_lr)
            self.momentums.append(state.applied_momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"lrs": list(self.lrs), "momentums": list(self.momentums)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lrs, self.momentums = list(state["lrs"]), list(state["momentums"])


class NonFiniteGuard(Callback):
    """Stops the run when the training loss turns NaN/inf.

    The check costs a host sync, so it happens every ``every`` optimizer updates and at the end of each epoch;
    in between the flag accumulates on the device.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self._flag: torch.Tensor | None = None

    def on_fit_start(self, state: FitState) -> None:
        self._flag = torch.zeros((), dtype=torch.bool, device=state.device)

    def on_batch_end(self, state: FitState) -> None:
        assert self._flag is not None and state.loss is not None
        self._flag |= ~torch.isfinite(state.loss)
        if state.updated and state.step % self.every == 0:
            self._check(state)

    def on_train_epoch_end(self, state: FitState) -> None:
        self._check(state)

    def _check(self, state: FitState) -> None:
        if state.stop_reason == "diverged" or not bool(self._flag):
            return
        if state.result is not None:
            state.result.diverged = True
        state.stop(
            "diverged",
            f"training stopped: the loss became NaN/inf in epoch {state.epoch + 1} (max_lr={state.max_lr:.3g} is "
            "probably too high: pass a smaller --max-lr); the best checkpoint is kept",
        )


class GracefulStop:
    """Ctrl-C or SIGTERM asks the run to stop at the next update boundary; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        print(
            f"\nsuperconv: {name} received: saving a checkpoint at the next step (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Interrupt(Callback):
    """Turns a :class:`GracefulStop` request into a stop at the next optimizer update.

    Mid-epoch the run stops there (the checkpointer saves the exact position); on an epoch's last batch the
    epoch completes first (validation, checkpoint) and the run stops after it.
    """

    def __init__(self, signals: GracefulStop, out: Path | None) -> None:
        self.signals = signals
        self.out = out

    def on_batch_end(self, state: FitState) -> None:
        if not (self.signals.requested and state.updated) or state.stop_reason is not None:
            return
        if state.result is not None:
            state.result.interrupted = True
        message = (
            f"interrupted: checkpoint saved; continue with --resume {self.out}"
            if self.out is not None
            else "interrupted (no out_dir, so no checkpoint was written)"
        )
        if state.epoch_done:
            state.stop_training = True
            if state.result is not None:
                state.result.message = message
        else:
            state.stop("interrupted", message)


class FirstStepTimer(Callback):
    """Wall time of this process's first optimizer update (torch.compile's warm-up shows up here)."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self.seconds: float | None = None

    def on_epoch_start(self, state: FitState) -> None:
        self._t0 = time.perf_counter()

    def on_batch_end(self, state: FitState) -> None:
        if self.seconds is None and state.updated:
            if state.device.type == "cuda":
                torch.cuda.synchronize(state.device)
            self.seconds = time.perf_counter() - self._t0
            if state.result is not None:
                state.result.first_step_seconds = self.seconds


class StopAgreement(Callback):
    """Under several processes: a stop one process decided (a signal, a NaN loss, a callback) is every process's.

    Each process's stop flags are OR-ed over all processes after every optimizer update and at the end of every
    epoch's training and validation (one tiny all-reduce), before the checkpointer runs: every process stops at the
    same update and writes (rank 0) or skips the same checkpoint. Without it, a process that stopped alone would
    leave the others waiting in their next collective.
    """

    def __init__(self, out: Path | None) -> None:
        self.out = out

    def on_batch_end(self, state: FitState) -> None:
        if state.updated:
            self._agree(state)

    def on_train_epoch_end(self, state: FitState) -> None:
        self._agree(state)

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        self._agree(state)

    def _agree(self, state: FitState) -> None:
        result = state.result
        interrupted, diverged = bool(result and result.interrupted), bool(result and result.diverged)
        stop, stop_training, interrupted, diverged = distributed.agree(
            [state.stop_reason is not None, state.stop_training, interrupted, diverged]
        )
        state.stop_training = stop_training
        if result is not None:
            result.interrupted, result.diverged = interrupted, diverged
        if stop and state.stop_reason is None:
            state.stop_reason = "interrupted" if interrupted else "diverged" if diverged else "stopped"
        if result is not None and not result.message and (stop or interrupted):
            result.message = self._message(state, interrupted, diverged)

    def _message(self, state: FitState, interrupted: bool, diverged: bool) -> str:
        if interrupted:
            where = f"checkpoint saved; continue with --resume {self.out}" if self.out is not None else "no out_dir"
            return f"interrupted: {where}"
        if diverged:
            return (
                f"training stopped: the loss became NaN/inf on another process (max_lr={state.max_lr:.3g} is "
                "probably too high: pass a smaller --max-lr); the best checkpoint is kept"
            )
        return "training stopped: another process stopped the run"
