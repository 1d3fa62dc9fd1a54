"""What a run is made of and what it produced: :class:`FitState` (what the loop and every handler see) and
:class:`FitResult` (what ``fit`` returns; ``to_dict()`` is metrics.json)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class FitResult:
    """Everything a run produced; ``to_dict()`` is plain data (metrics.json)."""

    history: list[dict[str, float]]
    max_lr: float
    epochs: int
    steps: int
    device: str
    precision: str
    train_seconds: float
    range_test_seconds: float = 0.0
    # Wall time of the first optimizer update of this process (includes torch.compile's warm-up when on).
    first_step_seconds: float | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    stopped_early: bool = False
    interrupted: bool = False
    diverged: bool = False
    message: str = ""
    schedule: str = "one-cycle"
    ema: float | None = None  # the weight average's decay when validation/test used the average
    lrs: list[float] = field(default_factory=list, repr=False)
    momentums: list[float | None] = field(default_factory=list, repr=False)
    range_test: Any = field(default=None, repr=False)
    checkpoint: str | None = None
    skipped_steps: int = 0  # optimizer updates the GradScaler skipped (fp16: inf/NaN gradients)
    channels_last: bool = False
    decisions: dict[str, str] = field(default_factory=dict)  # what was chosen at run time, and why

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("range_test")
        d.pop("lrs")
        d.pop("momentums")
        if self.range_test is not None:
            d["lr_suggestion"] = {
                "suggestion": self.range_test.suggestion,
                "quality": self.range_test.quality,
            }
        return d


class Clock:
    """Training seconds: this process's since ``start()`` plus those of the runs it resumes."""

    def __init__(self) -> None:
        self.before = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def __call__(self) -> float:
        return self.before + (0.0 if self._t0 is None else time.perf_counter() - self._t0)


@dataclass
class FitState:
    """What the loop and the handlers see and change.

    ``step`` counts optimizer updates, ``batch`` the batches done in the current epoch (``updated`` says whether
    the last one ended an update), ``epoch`` the epochs done before the current one. A handler ends the run with
    :meth:`stop` (at once, at the next update boundary) or by setting ``stop_training`` (after the epoch).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    epoch: int = 0
    step: int = 0
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stop_training: bool = False
    loss: torch.Tensor | None = None  # the last batch's loss, as a device tensor
    # --- what the loop runs with (set by fit) ---
    forward_model: nn.Module | None = None  # the model as called (a torch.compile wrapper when compiling)
    eval_model: nn.Module | None = None  # what validation and test evaluate (the EMA's copy when averaging)
    train_loader: Iterable[Any] = ()
    val_loader: Iterable[Any] | None = None
    criterion: Any = None
    scaler: Any = None
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    tta: bool = False
    accumulation_steps: int = 1
    epochs: int = 1
    batches_per_epoch: int = 1
    total_steps: int = 1
    max_lr: float = 0.0
    start_batch: int = 0  # where the first epoch of this process starts (a run resumed mid-epoch)
    # --- what the last update applied (read by the schedule recorder) ---
    updated: bool = False
    applied_lr: float = 0.0
    applied_momentum: float | None = None
    stop_reason: str | None = None  # "interrupted", "diverged", ...: the run ends at the next update boundary
    improved: bool = False  # whether the last epoch improved the monitored validation metric
    skipped_steps: int = 0  # updates the GradScaler skipped (fp16: inf/NaN gradients)
    update_counter: Any = None  # counts the optimizer's real updates when a GradScaler may skip some
    meter: Any = None  # the current epoch's training loss/accuracy sums (superconv.train.loop.EpochMeter)
    clock: Clock = field(default_factory=Clock)
    result: FitResult | None = None

    def stop(self, reason: str, message: str) -> None:
        """End the run at the next update boundary (mid-epoch if need be), saying why."""
        self.stop_reason = reason
        if self.result is not None:
            self.result.message = message

    @property
    def epoch_done(self) -> bool:
        """Whether the current epoch has seen all its batches."""
        return self.batch >= self.batches_per_epoch

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast context (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
