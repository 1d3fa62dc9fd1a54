"""Early stopping: end the run when the monitored validation metric has stopped improving."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from superconv import checks
from superconv.errors import ConfigError
from superconv.train.events import Callback

if TYPE_CHECKING:
    from superconv.train.state import FitState

MONITORS = {"val_accuracy": "max", "val_loss": "min"}
#: With a one-cycle schedule, a stalled run finishes its cycle in this fraction of the run (at least an epoch).
FINISH_FRACTION = 0.1


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs in a row.

    The counter counts epochs *without* improvement and resets to zero on every improvement (the seed document
    had it the other way round). As a handler it watches ``metrics[monitor]`` at the end of every epoch;
    :meth:`update` is the same rule for any sequence of values.

    Args:
        patience: Epochs without improvement to tolerate before stopping (>= 1).
        mode: ``"max"`` for accuracy-like metrics, ``"min"`` for losses.
        min_delta: How much better than the best counts as an improvement.
        monitor: The metric watched as a handler (``"val_accuracy"`` or ``"val_loss"``).
        finish_cycle: With a schedule that can finish early (superconv's ``OneCycleLR``), do not stop at a high LR:
            compress the rest of the cycle into a short anneal and annihilation tail (:data:`FINISH_FRACTION` of
            the run, at least an epoch) and end there. Other schedules stop at once.

    Example:
        >>> stopper = EarlyStopping(patience=2)
        >>> [stopper.update(a) for a in (0.5, 0.6, 0.6, 0.59)]
        [False, False, False, True]
    """

    state_key = "early_stopping"

    def __init__(
        self,
        patience: int,
        mode: str = "max",
        min_delta: float = 0.0,
        monitor: str = "val_accuracy",
        finish_cycle: bool = True,
    ) -> None:
        if not checks.is_int(patience) or patience < 1:
            raise ConfigError(f"Expected patience to be a positive integer (epochs), but got {patience!r}")
        checks.one_of("mode", mode, ("max", "min"))
        if not checks.is_number(min_delta) or not math.isfinite(min_delta) or min_delta < 0:
            raise ConfigError(f"Expected min_delta to be a non-negative number, but got {min_delta!r}")
        checks.one_of("monitor", monitor, tuple(MONITORS))
        self.patience = patience
        self.mode = mode
        self.min_delta = float(min_delta)
        self.monitor = monitor
        self.finish_cycle = bool(finish_cycle)
        self.finishing = False  # the cycle is being finished early
        self.best: float | None = None
        self.epochs_without_improvement = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float) -> bool:
        """Record one epoch's metric; True means: stop now."""
        if math.isfinite(value) and self.improved(value):
            self.best = value
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        stalled = self.monitor in metrics and self.update(metrics[self.monitor])
        last_epoch = state.epoch + 1 >= state.epochs or state.step >= state.total_steps
        if not stalled or state.stop_training or last_epoch or self.finishing:
            return
        why = f"no improvement in {self.monitor} for {self.patience} epochs"
        if self.finish_cycle and hasattr(state.scheduler, "finish_early"):
            self._finish_cycle(state, why)
            return
        state.stop_training = True
        if state.result is not None:
            state.result.stopped_early = True
            state.result.message = f"early stopping: {why}"

    def _finish_cycle(self, state: FitState, why: str) -> None:
        """Compress the rest of the one-cycle schedule into a short anneal and tail instead of stopping at a high LR."""
        per_epoch = max(1, math.ceil(state.batches_per_epoch / state.accumulation_steps))
        steps = max(per_epoch, round(FINISH_FRACTION * state.total_steps))
        if state.total_steps - state.step <= steps:
            return  # the cycle ends about as soon anyway
        self.finishing = True
        planned = state.total_steps
        state.total_steps = state.scheduler.finish_early(steps)
        state.epochs = state.epoch + 1 + math.ceil(steps / per_epoch)
        if state.result is not None:
            state.result.stopped_early = True
            state.result.message = (
                f"early stopping: {why}; the cycle was finished early, its anneal and annihilation tail in "
                f"updates {state.step + 1}-{state.total_steps} instead of ending at update {planned}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "best": self.best,
            "epochs_without_improvement": self.epochs_without_improvement,
            "finishing": self.finishing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.finishing = bool(state.get("finishing", False))
