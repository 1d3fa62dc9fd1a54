"""Counting what the schedule counts: real optimizer updates.

Gradient accumulation makes several batches one update, and ``torch.amp.GradScaler`` skips
``optimizer.step()`` when it finds inf/NaN gradients. A schedule counted in batches drifts in
both cases; these helpers count updates instead.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

from superconv.errors import ConfigError


def total_steps(epochs: int, batches_per_epoch: int, accumulation_steps: int = 1) -> int:
    """Optimizer updates in a run: ``epochs * ceil(batches_per_epoch / accumulation_steps)``.

    The last, partial accumulation window of an epoch still makes an update, hence the ceil.

    Example:
        >>> total_steps(epochs=3, batches_per_epoch=10, accumulation_steps=4)
        9
    """
    for name, value in (
        ("epochs", epochs),
        ("batches_per_epoch", batches_per_epoch),
        ("accumulation_steps", accumulation_steps),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"Expected {name} to be a positive integer, but got {value!r}")
    return epochs * math.ceil(batches_per_epoch / accumulation_steps)


class UpdateCounter:
    """Counts the optimizer's real updates with a step post-hook (public torch API).

    ``GradScaler.step`` does not call ``optimizer.step()`` when it skips, so a skipped step is
    not counted. Fused optimizers (``fused=True``) are the exception: the scaler always calls their
    ``step()`` with its ``found_inf`` flag attached, and the kernel skips the update; the counter reads
    that flag (one host sync, on mixed-precision fp16 steps only).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> counter = UpdateCounter(optimizer)
        >>> model(torch.randn(3, 4)).sum().backward(); optimizer.step()
        >>> counter.count  # after scaler.step(optimizer), unchanged if the scaler skipped the step
        1
    """

    def __init__(self, optimizer: Optimizer, start: int = 0) -> None:
        self.count = start
        self._handle = optimizer.register_step_post_hook(self._on_step)

    def _on_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        found_inf = getattr(optimizer, "found_inf", None)  # set by GradScaler around a fused step()
        if found_inf is not None and bool(found_inf.item()):
            return
        self.count += 1

    def remove(self) -> None:
        """Stop counting (detach the hook from the optimizer)."""
        self._handle.remove()
