"""``fit``'s keyword options in one place, with their units, checked once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superconv import checks
from superconv.errors import ConfigError
from superconv.schedule.baselines import SCHEDULES
from superconv.train.budget import TimeBudget
from superconv.train.early_stopping import MONITORS
from superconv.train.ema import WeightEMA
from superconv.train.events import Callback


@dataclass(frozen=True)
class FitOptions:
    """Every keyword option of :func:`superconv.fit`.

    Attributes:
        epochs: Training epochs (default 10; with a ``time_budget``, at most this many: default as many as fit).
        max_lr: Peak LR. ``None`` runs the LR range test and uses its suggestion.
        optimizer: ``"adamw"`` (default), ``"sgd"`` (Nesterov), or your own optimizer instance.
        weight_decay: Decoupled weight decay on weights (not norms or biases).
        momentum: SGD momentum / Adam beta1 when the schedule does not cycle it.
        label_smoothing: For the default cross-entropy criterion.
        criterion: Training loss; default ``nn.CrossEntropyLoss(label_smoothing=...)``.
        schedule: One of :data:`superconv.schedule.baselines.SCHEDULES` (default ``"one-cycle"``).
        schedule_kwargs: Extra :class:`superconv.OneCycleLR` arguments (``preset``, ``pct_start``, ...).
        accumulation_steps: Batches per optimizer update.
        device: ``None``/"auto" picks cuda, mps, cpu.
        precision: ``"auto"`` (bf16 on GPUs and bf16-capable CPUs, else fp32), ``"bf16"``, ``"fp16"``, ``"fp32"``.
        channels_last: ``"auto"``, True or False.
        compile: Wrap the model in ``torch.compile``.
        patience: Early stopping after this many epochs without improvement of ``monitor`` (None: off).
        monitor: ``"val_accuracy"`` or ``"val_loss"``.
        test_loader: Evaluated once at the end, on the best weights.
        tta: Average predictions with the horizontal flip at evaluation.
        ema: Decay per optimizer update of an exponential moving average of the weights (e.g. 0.99); when set,
            validation, the best checkpoint, the test and the returned model use the averaged weights
            (:class:`superconv.train.ema.WeightEMA`). ``None``: off. ``"auto"``: a decay from the run's length
            (:func:`superconv.train.recipes.ema_decay_for`; off for short runs).
        ema_every: Optimizer updates between EMA updates (the decay is compounded to match).
        out_dir: Where ``best.pt``, ``last.pt`` (and, from the CLI, metrics and plots) go.
        resume: Continue the run saved in ``out_dir/last.pt`` exactly where it stopped.
        callbacks: :class:`superconv.Callback` objects (handlers on the loop's events).
        range_test_kwargs: Extra arguments for :meth:`superconv.LRFinder.range_test`.
        verify: After the range test, check its suggestion with short one-cycle probes chosen on ``val_loader``
            (:func:`superconv.finder.verify.verify`, with the run's length, format and accumulation) and train at
            the verified LR; the probes' seconds count in ``range_test_seconds`` and in a time budget. ``None`` (the
            default): :data:`superconv.train.setup.VERIFY_BY_DEFAULT`, on. Skipped (and said so in
            ``decisions["max_lr"]``) without a ``val_loader`` or a one-cycle schedule; unused when ``max_lr`` is
            given. ``False``: train at the range test's suggestion.
        progress: Progress bars (default: only when stderr is a terminal).
        verbose: Print the per-epoch table.
        log_every: Optimizer updates between progress updates (and NaN checks).
        config: Plain data saved with checkpoints (the CLI's resolved options).
        time_budget: Seconds (or "2m", or a :class:`~superconv.train.budget.TimeBudget` started earlier) that the
            whole call may take: the run's length in updates is then what fits after the range test, measured on
            this machine (``epochs`` is ignored); the whole cycle ends inside the budget.
        budget_reserve: Seconds of the budget kept for work after ``fit`` returns (writing reports).
    """

    epochs: int | None = None
    max_lr: float | None = None
    optimizer: str | torch.optim.Optimizer = "adamw"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.0
    criterion: nn.Module | None = None
    schedule: str = "one-cycle"
    schedule_kwargs: dict[str, Any] | None = None
    accumulation_steps: int = 1
    device: str | torch.device | None = None
    precision: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    patience: int | None = None
    monitor: str = "val_accuracy"
    test_loader: Any = None
    tta: bool = False
    ema: float | str | None = None
    ema_every: int = 1
    out_dir: str | Path | None = None
    resume: bool = False
    callbacks: Sequence[Callback] = ()
    range_test_kwargs: dict[str, Any] | None = None
    verify: bool | None = None
    progress: bool | None = None
    verbose: bool = True
    log_every: int = 50
    config: dict[str, Any] | None = None
    time_budget: float | str | TimeBudget | None = None
    budget_reserve: float = 0.0

    @classmethod
    def pick(cls, values: dict[str, Any]) -> FitOptions:
        """The options among ``values`` (e.g. a function's ``locals()``)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def __post_init__(self) -> None:
        if self.epochs is not None:
            checks.positive_int("epochs", self.epochs)
        checks.positive_int("accumulation_steps", self.accumulation_steps)
        checks.positive_int("log_every", self.log_every)
        if self.patience is not None and (not checks.is_int(self.patience) or self.patience < 1):
            raise ConfigError(f"Expected patience to be a positive integer (epochs) or None, but got {self.patience!r}")
        checks.one_of("monitor", self.monitor, tuple(MONITORS))
        checks.one_of("schedule", self.schedule, SCHEDULES)
        if self.verify is not None and not isinstance(self.verify, bool):
            raise ConfigError(
                f"Expected verify to be True, False or None (the default), but got {self.verify!r}: pass verify=True "
                "to check the range test's suggestion with short probes on the validation data"
            )
        if self.max_lr is not None and not (checks.is_number(self.max_lr) and math.isfinite(self.max_lr)):
            raise ConfigError(f"Expected max_lr to be a positive, finite learning rate, but got {self.max_lr!r}")
        if self.max_lr is not None and self.max_lr <= 0:
            raise ConfigError(f"Expected max_lr to be a positive, finite learning rate, but got {self.max_lr!r}")
        if self.resume and self.out_dir is None:
            raise ConfigError("resume=True needs out_dir: the run directory holding last.pt")
        if self.time_budget is not None and not isinstance(self.time_budget, TimeBudget):
            object.__setattr__(self, "time_budget", TimeBudget.starting_now(self.time_budget))  # type: ignore[arg-type]
        if not checks.is_number(self.budget_reserve) or self.budget_reserve < 0:
            raise ConfigError(f"Expected budget_reserve to be seconds >= 0, but got {self.budget_reserve!r}")
        if self.ema is not None and self.ema != "auto":
            WeightEMA.check(self.ema, self.ema_every)  # bad settings fail before the range test, not after it

    @property
    def out(self) -> Path | None:
        return Path(self.out_dir) if self.out_dir is not None else None
