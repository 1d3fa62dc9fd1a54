"""Keeping a time budget while training: when the machine turns slower than measured, finish the cycle sooner.

The run's length is planned from a step time measured before training. If the machine then slows down (another
job takes the cores, a laptop throttles), the planned updates no longer fit. Instead of overrunning the budget or
stopping at a high LR, :class:`Deadline` plays the rest of the one-cycle schedule faster (what is left of the
warm-up, the anneal and the annihilation tail, in their own shape) in the updates that still fit at the speed seen
lately. When the machine turns fast again (a shared 2-core host ran its first epoch 40% slower than the rest), the
updates a speed-up took are given back, up to the planned cycle, so that the run does not end a fifth early.
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
#: The projection may exceed what is left by this fraction of the budget before the cycle is compressed; a sped-up
#: cycle is slowed down again when it would end more than twice this early, to end this early.
SLACK = 0.03
#: A slow-down trusts the slowest of this many recent checks (a speed-up, only the latest one).
SLOW_DOWN_WINDOWS = 3


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
        self._recent: list[float] = []  # seconds per update of the last checks' windows
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
        self._recent = [*self._recent, seconds_per_update][-SLOW_DOWN_WINDOWS:]
        # Several processes: rank 0's clock decides, so that every process plays the same schedule.
        fits = self.updates_that_fit(state, seconds_per_update)
        slow = max(self._recent)
        more = self.updates_to_give_back(state, slow) if fits is None else None
        decision = distributed.broadcast((fits, more))
        if decision[0] is not None:
            self.speed_up(state, decision[0], seconds_per_update)
        elif decision[1] is not None:
            self.slow_down(state, decision[1], slow)

    def updates_that_fit(self, state: FitState, seconds_per_update: float) -> int | None:
        """How many updates still fit, when fewer than the plan's; None when the plan still fits."""
        left = state.total_steps - state.step
        remaining = self.budget.remaining() - self.overhead(state)
        if left <= 1 or left * seconds_per_update <= remaining + SLACK * self.budget.seconds:
            return None
        fits = max(1, int(remaining / seconds_per_update))
        return fits if fits < left and hasattr(state.scheduler, "speed_up") else None

    def updates_to_give_back(self, state: FitState, seconds_per_update: float) -> int | None:
        """How many updates the rest of a sped-up cycle may take again, when it would end over ``2 * SLACK`` of the
        budget early at ``seconds_per_update``; None to keep its pace (also when it was never sped up)."""
        scheduler = state.scheduler
        if not getattr(scheduler, "speedups", None) or getattr(scheduler, "early_finish", None):
            return None
        left, slack = state.total_steps - state.step, SLACK * self.budget.seconds
        remaining = self.budget.remaining() - self.overhead(state)
        if left * seconds_per_update >= remaining - 2 * slack:
            return None
        fits = int((remaining - slack) / seconds_per_update)
        more_evals = self.evals_left(state, state.step + fits) - self.evals_left(state, state.total_steps)
        fits = int((remaining - slack - more_evals * self.seconds_per_eval) / seconds_per_update)
        return fits if fits > left else None

    def overhead(self, state: FitState) -> float:
        """The validations still to come, and the final test, at the longest validation seen so far."""
        return self.evals_left(state, state.total_steps) * self.seconds_per_eval

    def evals_left(self, state: FitState, total_steps: int) -> int:
        """Validation passes still to come in a run of ``total_steps`` updates, the final test counted as one."""
        return max(1, math.ceil(total_steps / self.updates_per_epoch(state)) - state.epoch) + 1

    def speed_up(self, state: FitState, fits: int, seconds_per_update: float) -> None:
        """Play the rest of the cycle in ``fits`` updates, and say so."""
        self.compressions += 1
        planned, left = state.total_steps, state.total_steps - state.step
        late = left * seconds_per_update + self.overhead(state) - self.budget.remaining()
        state.total_steps = state.scheduler.speed_up(fits)
        state.epochs = min(state.epochs, math.ceil(state.total_steps / self.updates_per_epoch(state)))
        message = (
            f"time budget: {1000 * seconds_per_update:.0f} ms per update lately, so the {left} updates left would "
            f"end {late:.0f} s after the {self.budget.seconds:.0f} s budget; the rest of the cycle was sped up into "
            f"updates {state.step + 1}-{state.total_steps} (planned to end at update {planned})"
            + (f"; speed-up {self.compressions}" if self.compressions > 1 else "")
        )
        self.say(state, message)

    def slow_down(self, state: FitState, fits: int, seconds_per_update: float) -> None:
        """Play the rest of a sped-up cycle in up to ``fits`` updates (never slower than planned), and say so."""
        planned, left = state.total_steps, state.total_steps - state.step
        early = self.budget.remaining() - left * seconds_per_update - self.overhead(state)
        state.total_steps = state.scheduler.slow_down(fits)
        if state.total_steps <= planned:
            return
        state.epochs = max(state.epochs, math.ceil(state.total_steps / self.updates_per_epoch(state)))
        message = (
            f"time budget: {1000 * seconds_per_update:.0f} ms per update lately (the slowest of the last "
            f"{len(self._recent)} checks), so the {left} updates left would end {early:.0f} s before the "
            f"{self.budget.seconds:.0f} s budget; the rest of the cycle was slowed down again into updates "
            f"{state.step + 1}-{state.total_steps} (planned to end at update {planned})"
        )
        self.say(state, message)

    def say(self, state: FitState, message: str) -> None:
        """Print the latest change (main process) and keep it in the run's decisions."""
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
