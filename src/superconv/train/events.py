"""The one event interface of the training loop: :class:`Callback`, and :class:`Events`, which calls them in order.

Everything around the loop is a handler on these events: the schedule recorder, the weight EMA, the NaN guard,
the best checkpoint, early stopping, the run's checkpoints, progress bars and the epoch table; a user's own
callback is one more. The loop fires, in this order::

    on_fit_start
    per epoch:  on_epoch_start, on_batch_end (every batch), on_train_epoch_end, [validation], on_epoch_end
    on_fit_end  (training is over; the best weights are restored and tested after it)

Per-batch hooks get no Python floats (that would force a device sync every step): read tensors only when
needed. Example, a handler that logs the LR of every optimizer update to a CSV file::

    class LRLog(superconv.Callback):
        def __init__(self, path):
            self.path, self.rows = path, []

        def on_batch_end(self, state):
            if state.updated:  # the batch ended an optimizer update
                self.rows.append(f"{state.step},{state.applied_lr}")

        def on_fit_end(self, state):
            Path(self.path).write_text("step,lr\\n" + "\\n".join(self.rows) + "\\n")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superconv.train.state import FitState

EVENTS = ("on_fit_start", "on_epoch_start", "on_batch_end", "on_train_epoch_end", "on_epoch_end", "on_fit_end")


class Callback:
    """Base class: override what you need.

    ``state.stop_training = True`` ends the run after the current epoch; ``state.stop(reason, message)`` ends it
    at the next optimizer update. A handler whose state must survive a resume sets ``state_key`` and implements
    ``state_dict()`` / ``load_state_dict()`` (plain data); the run's checkpoints then carry it.
    """

    state_key: str | None = None

    def on_fit_start(self, state: FitState) -> None: ...

    def on_epoch_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_train_epoch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class Events:
    """Calls each event's handlers in the order given, skipping those that do not override it."""

    def __init__(self, handlers: Sequence[Callback]) -> None:
        self.handlers = list(handlers)
        # Only the handlers that override an event are called: a per-batch event costs nothing for the rest.
        self._bound = {event: [getattr(h, event) for h in self.handlers if _overrides(h, event)] for event in EVENTS}

    def fire(self, event: str, state: FitState, *args: Any) -> None:
        for method in self._bound[event]:
            method(state, *args)

    def stateful(self) -> dict[str, Callback]:
        """The handlers whose state a checkpoint carries, by their ``state_key``."""
        return {h.state_key: h for h in self.handlers if h.state_key}


def _overrides(handler: Any, event: str) -> bool:
    method = getattr(type(handler), event, None)
    # Duck-typed callbacks (not subclasses of Callback) count when they define the method.
    return method is not None and method is not getattr(Callback, event)
