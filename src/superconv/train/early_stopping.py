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

    Example:
        >>> stopper = EarlyStopping(patience=2)
        >>> [stopper.update(a) for a in (0.5, 0.6, 0.6, 0.59)]
        [False, False, False, True]
    """

    state_key = "early_stopping"

    def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0, monitor: str = "val_accuracy"):
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
        last_epoch = state.epoch + 1 >= state.epochs or state.step >= state.total_steps
        if (
            self.monitor in metrics
            and self.update(metrics[self.monitor])
            and not state.stop_training
            and not last_epoch
        ):
            state.stop_training = True
            if state.result is not None:
                state.result.stopped_early = True
                state.result.message = f"early stopping: no improvement in {self.monitor} for {self.patience} epochs"

    def state_dict(self) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "best": self.best,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
