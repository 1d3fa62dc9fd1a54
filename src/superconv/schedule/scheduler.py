"""``superconv.OneCycleLR``: a torch ``LRScheduler`` over the pure one-cycle core.

A drop-in for ``torch.optim.lr_scheduler.OneCycleLR`` (same arguments, same value at every step),
plus what torch's lacks: Smith's three-phase shape with an annihilation tail of any length, named
presets, holding the final LR past the end instead of raising, counting real optimizer updates
(gradient accumulation, steps GradScaler skips), and a plain-data ``state_dict``.

Example:
    >>> import torch
    >>> model, loss_fn = torch.nn.Linear(4, 2), torch.nn.CrossEntropyLoss()
    >>> train_loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
    >>> opt = torch.optim.AdamW(model.parameters())
    >>> sched = OneCycleLR(opt, max_lr=1e-2, epochs=10, steps_per_epoch=len(train_loader))
    >>> for epoch in range(10):
    ...     for x, y in train_loader:
    ...         loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad(); sched.step()
    >>> sched.last_epoch, f"{sched.get_last_lr()[0]:.1e}"  # max_lr / 25 / 1e4 after the 50 updates
    (50, '4.0e-08')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from superconv import checks
from superconv.errors import ConfigError
from superconv.schedule.one_cycle import (
    AnnealStrategy,
    CycleChanges,
    OneCycleSchedule,
    bounds_kwargs,
    preset_kwargs,
    resolve_total_steps,
)
from superconv.schedule.steps import UpdateCounter

# Keys this scheduler owns in state_dict(); everything in it is a plain value.
_STATE_KEYS = (
    "max_lrs",
    "total_steps",
    "pct_start",
    "pct_down",
    "anneal_strategy",
    "cycle_momentum",
    "base_momentums",
    "max_momentums",
    "div_factor",
    "final_div_factor",
    "three_phase",
    "strict",
    "count_updates",
    "last_epoch",
    "_step_count",
    "_last_lr",
    "_updates_seen",
    "_warned_past_end",
    "base_lrs",
    "early_finish",
    "speedups",
)


def _per_group(name: str, value: float | Sequence[float], n_groups: int) -> list[float]:
    if isinstance(value, (list, tuple)):
        if len(value) != n_groups:
            raise ConfigError(
                f"Expected {name} to have one value per param group ({n_groups}), but got {len(value)}: {list(value)!r}"
            )
        return [float(v) for v in value]
    return [float(value)] * n_groups  # type: ignore[arg-type]


def _uses_beta1(optimizer: Optimizer, cycle_momentum: bool) -> bool:
    """Whether the momentum that cycles is Adam's ``beta1`` (else SGD's ``momentum``); refuse one with neither."""
    if not cycle_momentum:
        return False
    if "betas" in optimizer.defaults:
        return True
    if "momentum" not in optimizer.defaults:
        raise ConfigError(
            f"{type(optimizer).__name__} has no momentum or beta1 to cycle: pass cycle_momentum=False to OneCycleLR"
        )
    return False


class OneCycleLR(LRScheduler):
    """The one-cycle learning-rate policy (Smith & Topin, https://arxiv.org/abs/1708.07120).

    With torch's arguments only, the LR and momentum at every step equal
    ``torch.optim.lr_scheduler.OneCycleLR``'s. Call :meth:`step` after every optimizer update.

    Args:
        optimizer: The wrapped optimizer.
        max_lr: Peak LR, one value or one per param group.
        total_steps: Optimizer updates in the run. Or give ``epochs`` and ``steps_per_epoch``.
        epochs: Number of epochs (with ``steps_per_epoch``).
        steps_per_epoch: Optimizer updates per epoch; with gradient accumulation that is
            ``ceil(batches / accumulation_steps)`` — :func:`superconv.total_steps` computes it.
        pct_start: Fraction of the run spent warming up. Default: 0.3.
        anneal_strategy: ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        cycle_momentum: Cycle SGD's ``momentum`` / Adam's ``beta1`` inversely to the LR. Default: True.
        base_momentum: Momentum at the LR peak (one value or one per group). Default: 0.85.
        max_momentum: Momentum at the start and end (one value or one per group). Default: 0.95.
        div_factor: ``initial_lr = max_lr / div_factor``. Default: 25.
        final_div_factor: ``final_lr = initial_lr / final_div_factor``. Default: 1e4.
        three_phase: Smith's shape: up, back down to ``initial_lr``, then annihilate. Default: False.
        last_epoch: As in torch; only for resuming without ``load_state_dict``. Default: -1.
        pct_down: Three-phase only: fraction of the run spent coming back down to ``initial_lr``
            (default ``pct_start``); the remaining fraction is the annihilation tail.
        preset: A named shape from :data:`superconv.PRESETS` (``"torch"``, ``"smith"``, ``"fastai"``);
            explicitly passed arguments override it.
        strict: Raise (like torch) instead of holding the final LR when stepped past the end.
        count_updates: Advance only when the optimizer really updated since the previous
            :meth:`step` — micro-batches of gradient accumulation and steps that ``GradScaler``
            skipped leave the schedule where it is, so ``step()`` may be called after every batch.

    A training loop: this module's docstring. Smith's own parametrization (``base_lr``, ``max_lr``,
    ``fraction_up``, ``fraction_down``, ``final_lr``) is one call: :meth:`from_bounds`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float | None = None,
        anneal_strategy: AnnealStrategy | None = None,
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float | None = None,
        final_div_factor: float | None = None,
        three_phase: bool | None = None,
        last_epoch: int = -1,
        *,
        pct_down: float | None = None,
        preset: str = "torch",
        strict: bool = False,
        count_updates: bool = False,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Expected a torch.optim.Optimizer, but got {type(optimizer).__name__}")
        shape = preset_kwargs(preset)
        explicit = {
            "pct_start": pct_start,
            "pct_down": pct_down,
            "anneal_strategy": anneal_strategy,
            "div_factor": div_factor,
            "final_div_factor": final_div_factor,
            "three_phase": three_phase,
        }
        shape.update({k: v for k, v in explicit.items() if v is not None})

        n = len(optimizer.param_groups)
        self.total_steps = resolve_total_steps(total_steps, epochs, steps_per_epoch)
        self.max_lrs = _per_group("max_lr", max_lr, n)
        self.base_momentums = _per_group("base_momentum", base_momentum, n)
        self.max_momentums = _per_group("max_momentum", max_momentum, n)
        self.pct_start = float(shape["pct_start"])
        self.pct_down = None if shape.get("pct_down") is None else float(shape["pct_down"])
        self.anneal_strategy = shape["anneal_strategy"]
        self.div_factor = float(shape["div_factor"])
        self.final_div_factor = float(shape["final_div_factor"])
        self.three_phase = bool(shape["three_phase"])
        self.cycle_momentum = bool(cycle_momentum)
        self.strict = bool(strict)
        self.count_updates = bool(count_updates)
        self._updates_seen = 0
        self._warned_past_end = False
        self.early_finish: list[int] | None = None  # [at_step, steps, at_step, steps, ...]: see finish_early
        self.speedups: list[float] = []  # [at_step, position, rate, ...]: see speed_up
        # Validates every argument (ConfigError names the argument and the value).
        self.schedules = self._build_schedules()

        self.use_beta1 = _uses_beta1(optimizer, self.cycle_momentum)
        momentum_zero = not self.use_beta1 and any(g.get("momentum") == 0 for g in optimizer.param_groups)
        if self.cycle_momentum and last_epoch == -1 and momentum_zero:
            warnings.warn(
                f"{type(optimizer).__name__} was created with momentum=0; OneCycleLR (like torch's) now "
                f"cycles it between {min(self.base_momentums)} and {max(self.max_momentums)}. "
                "Pass cycle_momentum=False to keep momentum at 0.",
                UserWarning,
                stacklevel=2,
            )
        if last_epoch == -1:
            self._write_group_keys(optimizer)
        self._n_groups = n
        # Counting starts after torch's initial step, which must always run (with last_epoch=k too: it sets the
        # first LR and get_last_lr()).
        self._counter: UpdateCounter | None = None
        super().__init__(optimizer, last_epoch)
        if self.count_updates:
            self._counter = UpdateCounter(optimizer)

    # --- construction helpers ---------------------------------------------------------------------
    @classmethod
    def from_bounds(
        cls,
        optimizer: Optimizer,
        *,
        base_lr: float,
        max_lr: float,
        total_steps: int,
        fraction_up: float = 0.4,
        fraction_down: float = 0.4,
        final_lr: float | None = None,
        anneal_strategy: AnnealStrategy = "linear",
        **kwargs: Any,
    ) -> OneCycleLR:
        """Smith's parametrization in one call: ``base_lr -> max_lr -> base_lr -> final_lr``.

        ``final_lr`` defaults to ``base_lr / 100``; the annihilation tail is the rest of the run
        (``1 - fraction_up - fraction_down``).

        Example:
            >>> import torch
            >>> opt = torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.1, momentum=0.9)
            >>> sched = OneCycleLR.from_bounds(opt, base_lr=0.01, max_lr=0.1, total_steps=100,
            ...                                fraction_up=0.4, fraction_down=0.4)
            >>> lrs = [sched.schedule.lr(step) for step in range(100)]
            >>> round(lrs[0], 6), round(max(lrs), 2), round(lrs[-1], 6)  # base, peak, the tail's end (base / 100)
            (0.01, 0.1, 0.0001)
        """
        shape = bounds_kwargs(base_lr=base_lr, max_lr=max_lr, fraction_up=fraction_up, fraction_down=fraction_down,
                              final_lr=final_lr, anneal_strategy=anneal_strategy)  # fmt: skip
        return cls(optimizer, max_lr=max_lr, total_steps=total_steps, **shape, **kwargs)

    def _build_schedules(self) -> list[OneCycleSchedule]:
        return [
            OneCycleSchedule(
                max_lr=max_lr,
                total_steps=self.total_steps,
                pct_start=self.pct_start,
                pct_down=self.pct_down,
                anneal_strategy=self.anneal_strategy,
                div_factor=self.div_factor,
                final_div_factor=self.final_div_factor,
                three_phase=self.three_phase,
                base_momentum=base_m,
                max_momentum=max_m,
                cycle_momentum=self.cycle_momentum,
            )
            for max_lr, base_m, max_m in zip(self.max_lrs, self.base_momentums, self.max_momentums)
        ]

    def _write_group_keys(self, optimizer: Optimizer) -> None:
        for group, sched in zip(optimizer.param_groups, self.schedules):
            # The same keys torch's OneCycleLR writes, so code that reads them keeps working.
            group["initial_lr"] = sched.initial_lr
            group["max_lr"] = sched.max_lr
            group["min_lr"] = sched.final_lr
            if self.cycle_momentum:
                group["max_momentum"] = sched.max_momentum
                group["base_momentum"] = sched.base_momentum
                self._set_momentum(group, sched.max_momentum)

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])  # beta2 is never touched
        else:
            group["momentum"] = value

    # --- the torch scheduler protocol -------------------------------------------------------------
    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        """Advance one step (call it after ``optimizer.step()``).

        With ``count_updates=True`` it advances only if the optimizer really updated since the
        previous call.
        """
        if self._counter is not None and self.last_epoch >= 0:
            if self._counter.count == self._updates_seen:
                return
            self._updates_seen = self._counter.count
        super().step(epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        groups = self.optimizer.param_groups
        if len(groups) != self._n_groups:
            raise ConfigError(
                f"The optimizer has {len(groups)} param groups but OneCycleLR was created for {self._n_groups}: "
                "a group added later has no schedule. Add every param group before creating the scheduler "
                "(or create a new OneCycleLR with one max_lr per group)."
            )
        step = self.last_epoch
        if step > self.total_steps:
            _past_the_end(step, self.total_steps, self.strict, self._warned_past_end, self.schedules[0].final_lr)
            self._warned_past_end = True
        position: int | float = step
        if self.early_finish is not None or self.speedups:  # the cycle was brought to an earlier end
            changes = self.changes
            finishes = [changes.finish(sched, step) for sched in self.schedules]
            if finishes[0] is not None:
                if self.cycle_momentum:
                    for group, sched, finish in zip(groups, self.schedules, finishes):
                        self._set_momentum(group, finish.momentum(sched, step))  # type: ignore[union-attr,arg-type]
                return [finish.lr(sched, step) for sched, finish in zip(self.schedules, finishes)]  # type: ignore[union-attr]
            position = changes.position(step)
        # Every group shares the run's length and fractions: locate the phase once.
        phase, pct = self.schedules[0].locate(position)
        if self.cycle_momentum:
            for group, sched in zip(groups, self.schedules):
                self._set_momentum(group, sched.momentum_at(phase, pct))
        return [sched.lr_at(phase, pct) for sched in self.schedules]

    def finish_early(self, steps: int) -> int:
        """Anneal the rest of the cycle into ``steps`` updates from now (:class:`EarlyFinish`); returns the new end.

        Used by early stopping when validation stalls. Each call can only bring the end closer.
        """
        return self._change(CycleChanges.finish_early, steps)

    def speed_up(self, steps: int) -> int:
        """Play the rest of the cycle, in its own shape, in ``steps`` updates from now; returns the new end.

        Unlike :meth:`finish_early` the warm-up (if not over), the peak, the anneal and the tail all still come,
        only faster. Used by a time budget when the machine turns slower than measured.
        """
        return self._change(CycleChanges.speed_up, steps)

    def slow_down(self, steps: int) -> int:
        """Give back updates that :meth:`speed_up` took (the rest of the cycle in ``steps`` updates, never slower
        than planned; no effect after :meth:`finish_early`); returns the new end. For a machine turned fast again."""
        return self._change(CycleChanges.slow_down, steps)

    @property
    def changes(self) -> CycleChanges:
        """The early finishes and speed-ups so far (their lists are the saved state ``early_finish``/``speedups``)."""
        return CycleChanges(self.total_steps, list(self.early_finish or []), list(self.speedups))

    def _change(self, how: Callable[[CycleChanges, int, int], int], steps: int) -> int:
        checks.positive_int("steps", steps)
        changes = self.changes
        end = how(changes, self.last_epoch, steps)
        self.early_finish, self.speedups = changes.finishes or None, changes.speedups
        # The next update's LR was set by the last step(): set it again from the changed cycle. Unchanged for two
        # updates or more (the changed curve starts where the cycle is); with one update left, that update is the
        # cycle's last and trains at the final LR.
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        return end

    # --- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data only: numbers, strings, lists — loads with ``torch.load(weights_only=True)``."""
        return {key: getattr(self, key) for key in _STATE_KEYS}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue a run: a fresh scheduler that loads this state goes on bit-identically.

        The scheduler must be built for the same run length. To resume with a different length,
        build the new scheduler with ``total_steps`` and call :meth:`load_state_dict` on a
        state whose position you adapt yourself, or start a new cycle.
        """
        _check_loadable(state_dict, self.total_steps, self._n_groups)
        # Which hyperparameter cycles follows the loaded cycle_momentum, on this scheduler's optimizer.
        use_beta1 = _uses_beta1(self.optimizer, bool(state_dict.get("cycle_momentum", self.cycle_momentum)))
        for key in _STATE_KEYS:
            if key in state_dict:
                value = state_dict[key]
                setattr(self, key, list(value) if isinstance(value, (list, tuple)) else value)
        self.use_beta1 = use_beta1
        self.schedules = self._build_schedules()
        if self._counter is not None:
            # The update counter restarts with this object; keep "no update since the last step".
            self._counter.count = self._updates_seen
        elif self.count_updates:
            self._counter = UpdateCounter(self.optimizer, start=self._updates_seen)

    # --- convenience --------------------------------------------------------------------------------
    @property
    def schedule(self) -> OneCycleSchedule:
        """The first param group's pure schedule (to plot or inspect)."""
        return self.schedules[0]

    def __repr__(self) -> str:
        return (
            f"OneCycleLR(max_lr={self.max_lrs if len(self.max_lrs) > 1 else self.max_lrs[0]}, "
            f"total_steps={self.total_steps}, step={self.last_epoch}, three_phase={self.three_phase}, "
            f"anneal_strategy={self.anneal_strategy!r})"
        )


def _check_loadable(state_dict: dict[str, Any], total_steps: int, n_groups: int) -> None:
    """Refuse, saying what to do, a state that is not a OneCycleLR's or that belongs to another run's shape."""
    missing = [k for k in ("total_steps", "last_epoch", "max_lrs") if k not in state_dict]
    if missing:
        raise ConfigError(
            f"Not a superconv.OneCycleLR state_dict: missing {missing}. Load the dict returned by "
            "OneCycleLR.state_dict()"
        )
    if state_dict["total_steps"] != total_steps:
        raise ConfigError(
            f"Cannot resume: the saved schedule has total_steps={state_dict['total_steps']} but this "
            f"scheduler has total_steps={total_steps}. Build the scheduler with "
            f"total_steps={state_dict['total_steps']} (same epochs, batch size and accumulation) to "
            "continue the saved run, or start a new one-cycle run for the new length."
        )
    if len(state_dict["max_lrs"]) != n_groups:
        raise ConfigError(
            f"Cannot resume: the saved schedule has {len(state_dict['max_lrs'])} param groups but the "
            f"optimizer has {n_groups}"
        )


def _past_the_end(step: int, total_steps: int, strict: bool, warned: bool, final_lr: float) -> None:
    """Stepping past ``total_steps``: an error with ``strict``, else one warning (the final LR is held)."""
    if strict:
        raise ValueError(
            f"Tried to step {step} times but total_steps is {total_steps} "
            "(strict=True; pass strict=False to hold the final LR instead)"
        )
    if not warned:
        warnings.warn(
            f"OneCycleLR stepped past its end ({total_steps} steps): holding the final LR {final_lr:.3g}. Give "
            "total_steps the number of optimizer updates (superconv.total_steps computes it) to avoid this.",
            UserWarning,
            stacklevel=4,
        )
