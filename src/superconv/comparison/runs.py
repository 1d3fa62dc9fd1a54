"""One run of the comparison: its test-accuracy curve (:class:`Curve`), where that curve first reached a target
(:class:`Crossing`), what the run produced (:class:`Run`), and the callback that records the curve
(:class:`TestCurveRecorder`).

The curve starts with an evaluation of the initial weights (update 0) and ends with one of the final weights, so
a target's first crossing always lies between two evaluations: after the one below it, at or before the one
above it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from superconv.train.evaluation import evaluate
from superconv.train.events import Callback
from superconv.train.state import FitState


@dataclass(frozen=True)
class Crossing:
    """Where a curve first reached a target: at an update in ``[low, high]`` (``high`` is the evaluation that
    saw it, ``low`` the update after the evaluation before), after ``seconds[0]`` to ``seconds[1]`` of training.
    """

    updates: tuple[int, int]
    seconds: tuple[float, float]


@dataclass
class Curve:
    """Test accuracy along one run: at optimizer update ``steps[i]``, after ``seconds[i]`` of training."""

    steps: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    def first_reaching(self, target: float) -> int | None:
        """Index of the first evaluation at or above ``target`` (None: never)."""
        for i, acc in enumerate(self.accuracy):
            if acc >= target - 1e-12:
                return i
        return None

    def crossing(self, target: float) -> Crossing | None:
        """The interval the evaluation grid allows for the first update at or above ``target`` (None: never)."""
        i = self.first_reaching(target)
        if i is None:
            return None
        previous_step = self.steps[i - 1] if i > 0 else 0
        # At update 0 (the initial weights) the target is reached before any training: the interval is [0, 0].
        low = min(previous_step + 1, self.steps[i])
        # An update's seconds are known only where it was evaluated: exact when the grid pins the update down.
        if low == self.steps[i]:
            return Crossing((low, low), (self.seconds[i], self.seconds[i]))
        return Crossing((low, self.steps[i]), (self.seconds[i - 1] if i > 0 else 0.0, self.seconds[i]))

    def add(self, step: int, steps_per_epoch: int, seconds: float, accuracy: float) -> None:
        self.steps.append(step)
        self.epochs.append(step / steps_per_epoch)
        self.seconds.append(seconds)
        self.accuracy.append(accuracy)

    def drop_last(self) -> None:
        for values in (self.steps, self.epochs, self.seconds, self.accuracy):
            values.pop()


@dataclass
class Run:
    """One training run of the comparison.

    Attributes:
        role: "one-cycle", "tuned" (the baseline LR that validation chose), "default" (the usual default LR)
            or "grid" (another LR tried while tuning).
        val_accuracy: The last epoch's validation accuracy (what tuning selects by).
        final_accuracy: Test accuracy of the final weights, as training left them (the curve's last point).
        best_checkpoint_accuracy: Test accuracy of the best-validation checkpoint, the weights ``fit`` restores
            (``FitResult.test_accuracy``); None without a validation set or when no epoch finished.
        best_epoch: The epoch of that checkpoint.
        peak_accuracy: The highest test accuracy any evaluation of the curve saw.
        total_steps: Optimizer updates of the training run (the range test not included).
        train_seconds: Training seconds, test evaluations excluded.
        range_test_updates: The range test's cost in training updates (0 when the LR was given).
        range_test_seconds: The range test's wall-clock seconds.
    """

    schedule: str
    lr: float
    seed: int
    role: str
    val_accuracy: float
    final_accuracy: float
    best_checkpoint_accuracy: float | None
    best_epoch: int | None
    peak_accuracy: float
    total_steps: int
    train_seconds: float
    range_test_updates: int = 0
    range_test_seconds: float = 0.0
    curve: Curve = field(default_factory=Curve)
    lrs: list[float] = field(default_factory=list, repr=False)


class TestCurveRecorder(Callback):
    """Evaluates test accuracy at update 0, every ``every`` updates, and on the final weights at ``on_fit_end``.

    ``on_fit_end`` fires when training is over, before ``fit`` restores the best-validation weights: its point is
    the final weights. The evaluations' own time is excluded from the curve's seconds.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, loader: Any, every: int, steps_per_epoch: int, eval_kwargs: dict[str, Any]) -> None:
        self.loader = loader
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.eval_kwargs = eval_kwargs
        self.curve = Curve()
        self._t0 = 0.0
        self._eval_seconds = 0.0

    def on_fit_start(self, state: FitState) -> None:
        self._record(state, seconds=0.0)
        self._t0 = time.perf_counter()  # the training clock starts after the initial evaluation
        self._eval_seconds = 0.0

    def on_batch_end(self, state: FitState) -> None:
        if state.updated and state.step % self.every == 0:
            self._record(state)

    def on_fit_end(self, state: FitState) -> None:
        if self.curve.steps and self.curve.steps[-1] == state.step:
            # The weights may have changed since that evaluation (a handler at the epoch's end): the last point
            # is always the final weights, evaluated now.
            self.curve.drop_last()
        self._record(state)

    def _record(self, state: FitState, seconds: float | None = None) -> None:
        t = time.perf_counter()
        _, accuracy = evaluate(state.model, self.loader, state.device, **self.eval_kwargs)
        if seconds is None:
            seconds = t - self._t0 - self._eval_seconds
        self._eval_seconds += time.perf_counter() - t
        self.curve.add(state.step, self.steps_per_epoch, seconds, accuracy if math.isfinite(accuracy) else 0.0)
