"""Hooks into :func:`superconv.fit`, and early stopping.

A callback is a small object with optional methods; ``fit`` calls the ones it has. Per-batch hooks
get no Python floats (that would force a device sync every step): read tensors only when needed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from superconv.errors import ConfigError

if TYPE_CHECKING:
    from superconv.train.trainer import FitState


class Callback:
    """Base class: override what you need. ``state.stop_training = True`` ends the run after the epoch."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_epoch_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


class EarlyStopping:
    """Stop when the monitored metric has not improved for ``patience`` epochs in a row.

    The counter counts epochs *without* improvement and resets to zero on every improvement
    (the seed document had it the other way round).

    Args:
        patience: Epochs without improvement to tolerate before stopping (>= 1).
        mode: ``"max"`` for accuracy-like metrics, ``"min"`` for losses.
        min_delta: How much better than the best counts as an improvement.

    Example:
        >>> stopper = EarlyStopping(patience=2)
        >>> [stopper.update(a) for a in (0.5, 0.6, 0.6, 0.59)]
        [False, False, False, True]
    """

    def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"Expected patience to be a positive integer (epochs), but got {patience!r}")
        if mode not in ("max", "min"):
            raise ConfigError(f"Expected mode to be 'max' or 'min', but got {mode!r}")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ConfigError(f"Expected min_delta to be a non-negative number, but got {min_delta!r}")
        self.patience = patience
        self.mode = mode
        self.min_delta = float(min_delta)
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
