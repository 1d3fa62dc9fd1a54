"""Keeping a time budget while training: when the machine turns slower than measured, finish the cycle sooner.

The run's length is planned from a step time measured before training. If the machine then slows down (another
job takes the cores, a laptop throttles), the planned updates no longer fit. Instead of overrunning the budget or
stopping at a high LR, :class:`Deadline` plays the rest of the one-cycle schedule faster (what is left of the
warm-up, the anneal and the annihilation tail, in their own shape) in the updates that still fit at the speed seen
lately.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from superconv import distributed
from superconv.train.events import Callback

if TYPE_CHECKING:
    from superconv.train.budget import TimeBudget
    from superconv.train.state import FitState

#: Checks happen about this many times per run (and at least every epoch).
CHECKS_PER_RUN = 50
#: The projection may exceed what is left by this fraction of the budget before the cycle is compressed.
SLACK = 0.03


class Deadline(Callback):
    """Compress the rest of the cycle when the planned updates would end after ``budget``.

    The speed is the one seen since the last check (not the plan's), validation passes are timed as they happen,
    and the final test is counted as one more validation pass. Each check may bring the end closer again (the
    machine may slow down more than once); only a schedule that can finish early (superconv's ``OneCycleLR``) is
    compressed.
    """

    state_key = "deadline"

    def __init__(self, budget: TimeBudget, verbose: bool = True) -> None:
        self.budget = budget
        self.verbose = verbose
        self.seconds_per_eval = 0.0
        self.compressions = 0
        self._mark: tuple[float, int] | None = None  # (time, step) where the current window began
        self._eval_started = 0.0

    def on_epoch_start(self, state: FitState) -> None:
        self._mark = (time.monotonic(), state.step)  # windows never include a validation pass

    def on_train_epoch_end(self, state: FitState) -> None:
        self._eval_started = time.monotonic()

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        self.seconds_per_eval = max(self.seconds_per_eval, time.monotonic() - self._eval_started)

    def on_batch_end(self, state: FitState) -> None:
        if self._mark is None or not state.updated:
            return
        started, step = self._mark
        every = max(1, min(state.total_steps // CHECKS_PER_RUN, self.updates_per_epoch(state)))
        if state.step - step < every:
            return  # the same updates on every process: the checks below are collective
        now = time.monotonic()
        self._mark = (now, state.step)
        seconds_per_update = distributed.slowest((now - started) / (state.step - step))
        # Several processes: rank 0's clock decides, so that every process plays the same schedule.
        fits = distributed.broadcast(self.updates_that_fit(state, seconds_per_update))
        if fits is not None:
            self.speed_up(state, fits, seconds_per_update)

    def updates_that_fit(self, state: FitState, seconds_per_update: float) -> int | None:
        """How many updates still fit, when fewer than the plan's; None when the plan still fits."""
        left = state.total_steps - state.step
        remaining = self.budget.remaining() - self.overhead(state)
        if left <= 1 or left * seconds_per_update <= remaining + SLACK * self.budget.seconds:
            return None
        fits = max(1, int(remaining / seconds_per_update))
        return fits if fits < left and hasattr(state.scheduler, "speed_up") else None

    def overhead(self, state: FitState) -> float:
        """The validations still to come, and the final test, at the longest validation seen so far."""
        evals_left = max(1, math.ceil(state.total_steps / self.updates_per_epoch(state)) - state.epoch) + 1
        return evals_left * self.seconds_per_eval

    def speed_up(self, state: FitState, fits: int, seconds_per_update: float) -> None:
        """Play the rest of the cycle in ``fits`` updates, and say so."""
        self.compressions += 1
        planned, left = state.total_steps, state.total_steps - state.step
        state.total_steps = state.scheduler.speed_up(fits)
        state.epochs = min(state.epochs, math.ceil(state.total_steps / self.updates_per_epoch(state)))
        late = left * seconds_per_update + self.overhead(state) - self.budget.remaining()
        message = (
            f"time budget: {1000 * seconds_per_update:.0f} ms per update lately, so the {left} updates left would "
            f"end {late:.0f} s after the {self.budget.seconds:.0f} s budget; the rest of the cycle was sped up into "
            f"updates {state.step + 1}-{state.total_steps} (planned to end at update {planned})"
            + (f"; speed-up {self.compressions}" if self.compressions > 1 else "")
        )
        if self.verbose and distributed.is_main():
            print(f"superconv: {message}")
        if state.result is not None:
            state.result.decisions["deadline"] = message

    @staticmethod
    def updates_per_epoch(state: FitState) -> int:
        return max(1, math.ceil(state.batches_per_epoch / state.accumulation_steps))

    def state_dict(self) -> dict[str, Any]:
        return {"compressions": self.compressions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.compressions = int(state.get("compressions", 0))
