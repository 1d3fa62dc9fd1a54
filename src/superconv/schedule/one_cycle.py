"""The pure core: the one-cycle learning rate and momentum as functions of the step.

Nothing here touches an optimizer, so a schedule can be plotted, simulated or tested on its own;
:class:`superconv.OneCycleLR` is a thin torch scheduler over it.

The shape (Smith & Topin, "Super-Convergence", https://arxiv.org/abs/1708.07120)::

    phase 1  warm-up     initial_lr -> max_lr         over pct_start of the run
    phase 2  anneal      max_lr -> initial_lr         over pct_down of the run (three-phase only)
    phase 3  annihilate  -> final_lr                  the rest, far below initial_lr

``initial_lr = max_lr / div_factor`` and ``final_lr = initial_lr / final_div_factor``. Momentum
moves the other way: down to ``base_momentum`` while the LR rises, back up to ``max_momentum``.

Phase boundaries are placed exactly as torch's ``OneCycleLR`` places them (fractional end steps
``pct * total_steps - 1``), so with the same arguments every step matches torch's value; unlike
torch, a step past the end holds the final value instead of extrapolating.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from superconv.errors import ConfigError

AnnealStrategy = Literal["cos", "linear"]
ANNEAL_STRATEGIES = ("cos", "linear")

#: Named shapes people use. Each maps to keyword arguments of :class:`OneCycleSchedule`
#: (and of :class:`superconv.OneCycleLR`).
PRESETS: dict[str, dict[str, Any]] = {
    # torch.optim.lr_scheduler.OneCycleLR's defaults.
    "torch": {
        "pct_start": 0.3,
        "anneal_strategy": "cos",
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "three_phase": False,
    },
    # Smith's shape: linear up, linear back down to the initial LR, then a tail that takes the LR
    # three orders of magnitude below the initial LR over the last 10% of the run.
    "smith": {
        "pct_start": 0.45,
        "pct_down": 0.45,
        "anneal_strategy": "linear",
        "div_factor": 10.0,
        "final_div_factor": 1e3,
        "three_phase": True,
    },
    # fastai's fit_one_cycle: cosine, div=25, div_final=1e5 (relative to max_lr), pct_start=0.25.
    "fastai": {
        "pct_start": 0.25,
        "anneal_strategy": "cos",
        "div_factor": 25.0,
        "final_div_factor": 1e5 / 25.0,
        "three_phase": False,
    },
}


def anneal(start: float, end: float, pct: float, strategy: str) -> float:
    """Interpolate from ``start`` (pct=0) to ``end`` (pct=1), cosine or linear.

    The formulas are written exactly as torch's so results agree to the last bit.
    """
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


@dataclass(frozen=True)
class EarlyFinish:
    """The rest of a cycle compressed into ``steps`` updates from ``at_step``.

    From the LR and momentum the schedule has at ``at_step`` (or ``start_lr``/``start_momentum``, where an earlier
    compression had already changed them), the LR anneals (cosine) to the schedule's final LR while the momentum
    rises back to its maximum, as in the cycle's own anneal; then both hold. Training that has stopped improving,
    or that runs out of time, thus still ends at the annihilation LR instead of being cut off mid-cycle.

    Example:
        >>> s = OneCycleSchedule(max_lr=1.0, total_steps=100)
        >>> f = EarlyFinish(at_step=40, steps=10)
        >>> f.lr(s, 40) == s.lr(40), f.lr(s, 49) == s.final_lr, f.lr(s, 70) == s.final_lr
        (True, True, True)
    """

    at_step: int
    steps: int
    start_lr: float | None = None
    start_momentum: float | None = None

    def pct(self, step: int | float) -> float:
        # The last of the ``steps`` updates (``at_step + steps - 1``) trains at the final LR, as the last update of
        # the planned cycle does (torch's convention).
        if self.steps <= 1:  # one update left: it is the last, at the final LR
            return 1.0 if step >= self.at_step else 0.0
        return min(1.0, max(0.0, (step - self.at_step) / (self.steps - 1)))

    def lr(self, schedule: OneCycleSchedule, step: int | float) -> float:
        start = schedule.lr(self.at_step) if self.start_lr is None else self.start_lr
        return anneal(start, schedule.final_lr, self.pct(step), "cos")

    def momentum(self, schedule: OneCycleSchedule, step: int | float) -> float | None:
        start = schedule.momentum(self.at_step) if self.start_momentum is None else self.start_momentum
        return None if start is None else anneal(start, schedule.max_momentum, self.pct(step), "cos")

    @property
    def end(self) -> int:
        return self.at_step + self.steps


def finish_at(
    schedule: OneCycleSchedule,
    finishes: Sequence[int],
    step: int | float,
    position: Callable[[int], int | float] = lambda step: step,
) -> EarlyFinish | None:
    """The compression in force at ``step``, from ``finishes`` = ``[at_1, steps_1, at_2, steps_2, ...]``.

    Each later compression starts from where the one before it had brought the LR and momentum, so the curve stays
    continuous however many times the end is brought closer; the first starts from the schedule at
    ``position(at_1)`` (see :func:`sped_up_position`).

    Example:
        >>> s = OneCycleSchedule(max_lr=1.0, total_steps=100)
        >>> f = finish_at(s, [40, 30, 50, 10], 55)
        >>> f.at_step, f.end, f.start_lr == finish_at(s, [40, 30], 50).lr(s, 50)
        (50, 60, True)
    """
    current = None
    for at, steps in zip(finishes[::2], finishes[1::2]):
        if at > step:
            break
        if current is None:
            start = position(at)
            current = EarlyFinish(at, steps, schedule.lr(start), schedule.momentum(start))
        else:
            current = EarlyFinish(at, steps, current.lr(schedule, at), current.momentum(schedule, at))
    return current


def sped_up_position(speedups: Sequence[float], step: int | float) -> int | float:
    """Where in the schedule update ``step`` is, after the speed-ups ``[at_1, position_1, rate_1, ...]``.

    From update ``at_k`` on, the schedule is played ``rate_k`` times as fast from ``position_k`` (the position
    reached at ``at_k``): the rest of the cycle, warm-up, anneal and tail, keeps its shape in fewer updates, and
    its last update lands on the planned last one (``total_steps - 1``, the final LR).

    Example:
        >>> sped_up_position([], 7), sped_up_position([10, 10, 2.0], 7), sped_up_position([10, 10, 2.0], 15)
        (7, 7, 20.0)
    """
    position: int | float = step
    for at, at_position, rate in zip(speedups[::3], speedups[1::3], speedups[2::3]):
        if step < at:
            break
        position = at_position + (step - at) * rate
    return position


@dataclass
class CycleChanges:
    """How a running cycle was brought to an earlier end, as plain data (saved with the scheduler).

    ``finishes`` (``[at, steps, ...]``): :class:`EarlyFinish` compressions, the rest of the cycle annealed now (early
    stopping). ``speedups`` (``[at, position, rate, ...]``): the rest of the cycle played at another pace in its own
    shape: faster (a time budget on a machine turned slower), or slower again, never slower than planned (the machine
    turned fast again). Early finishes and speed-ups only bring the end closer; a slow-down only gives back updates
    that speed-ups took.

    Example:
        >>> c = CycleChanges(100)
        >>> c.speed_up(9, 46), c.position(19), c.position(54), c.finish_early(30, 10), c.end()
        (55, 29.0, 99.0, 40, 40)
        >>> d = CycleChanges(100)
        >>> d.speed_up(10, 40), d.slow_down(20, 70), d.slow_down(20, 1000)  # the last: capped at the planned pace
        (50, 87, 87)
    """

    total_steps: int
    finishes: list[int] = field(default_factory=list)
    speedups: list[float] = field(default_factory=list)

    def position(self, step: int) -> int | float:
        """Where in the planned cycle update ``step`` is (``step`` itself unless the cycle was sped up)."""
        return sped_up_position(self.speedups, step) if self.speedups else step

    def end(self) -> int:
        """The update at which the cycle now ends."""
        if self.finishes:
            return self.finishes[-2] + self.finishes[-1]
        if not self.speedups:
            return self.total_steps
        at, position, rate = self.speedups[-3:]
        return round(at + (self.total_steps - 1 - position) / rate) + 1

    def finish_early(self, at: int, steps: int) -> int:
        if at + steps < self.end():
            self.finishes += [at, steps]
        return self.end()

    def speed_up(self, at: int, steps: int) -> int:
        if self.finishes:
            return self.finish_early(at, steps)  # the finish itself is compressed
        if at + steps < self.end():
            last = self.total_steps - 1  # the planned cycle's last update: updates at .. at + steps - 1 reach it
            if steps == 1:
                self.speedups += [at, last, 1.0]
            else:
                position = self.position(at)
                self.speedups += [at, position, (last - position) / (steps - 1)]
        return self.end()

    def slow_down(self, at: int, steps: int) -> int:
        """Play the rest of the sped-up cycle in ``steps`` updates from ``at``, capped at the planned pace (rate 1);
        nothing changes after an early finish, without a speed-up, or when ``steps`` would not end the cycle later."""
        if self.finishes or not self.speedups:
            return self.end()
        last, position = self.total_steps - 1, self.position(at)
        steps = min(steps, math.floor(last - position) + 1)  # rate >= 1: never slower than the planned cycle
        if steps >= 2 and at + steps > self.end():
            self.speedups += [at, position, (last - position) / (steps - 1)]
        return self.end()

    def finish(self, schedule: OneCycleSchedule, step: int) -> EarlyFinish | None:
        """The early finish in force at ``step``, if any."""
        return finish_at(schedule, self.finishes, step, self.position) if self.finishes else None


@dataclass(frozen=True)
class Phase:
    """One segment of the schedule: values move from ``start`` to ``end`` as the step reaches ``end_step``.

    ``end_step`` is fractional, as in torch, so boundaries fall where the fractions say.
    """

    end_step: float
    start_lr: float
    end_lr: float
    start_momentum: float
    end_momentum: float


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"Expected {name} to be a fraction of the run between 0 and 1, but got {value!r}")
    return float(value)


def _check_positive(name: str, value: Any, what: str = "a positive number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"Expected {name} to be {what}, but got {value!r}")
    return float(value)


def resolve_total_steps(total_steps: int | None, epochs: int | None, steps_per_epoch: int | None) -> int:
    """The run's length in optimizer updates, from ``total_steps`` or ``epochs x steps_per_epoch``."""
    if total_steps is not None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 2:
            raise ConfigError(
                f"Expected total_steps to be an integer >= 2 (optimizer updates in the whole run), "
                f"but got {total_steps!r}"
            )
        return total_steps
    if epochs is None or steps_per_epoch is None:
        raise ConfigError(
            "Missing the run's length: pass total_steps, or both epochs and steps_per_epoch "
            "(superconv.total_steps(epochs, batches, accumulation_steps) computes it)"
        )
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"Expected {name} to be a positive integer, but got {value!r}")
    return resolve_total_steps(epochs * steps_per_epoch, None, None)


@dataclass(frozen=True)
class OneCycleSchedule:
    """The one-cycle policy as a pure function of the step.

    Args:
        max_lr: Peak learning rate.
        total_steps: Number of optimizer updates in the run (>= 2). Steps are numbered 0..total_steps-1.
        pct_start: Fraction of the run spent warming up from ``initial_lr`` to ``max_lr``. Default: 0.3.
        pct_down: Three-phase only: fraction spent going back down to ``initial_lr``. Default: ``pct_start``
            (torch's three-phase shape). The rest of the run is the annihilation phase.
        anneal_strategy: ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        div_factor: ``initial_lr = max_lr / div_factor``. Default: 25.
        final_div_factor: ``final_lr = initial_lr / final_div_factor``. Default: 1e4.
        three_phase: Use Smith's three phases (up, down to initial, annihilate) instead of torch's two.
        base_momentum: Lowest momentum, reached at the LR peak. Default: 0.85.
        max_momentum: Highest momentum, at the start and the end. Default: 0.95.
        cycle_momentum: Whether momentum cycles at all. Default: True.

    Example:
        >>> s = OneCycleSchedule(max_lr=0.1, total_steps=100)
        >>> round(s.lr(0), 6), round(s.lr(29), 6) == 0.1, s.lr(99) < s.lr(0)
        (0.004, True, True)
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    pct_down: float | None = None
    anneal_strategy: AnnealStrategy = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    cycle_momentum: bool = True
    phases: tuple[Phase, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_positive("max_lr", self.max_lr, "a positive, finite learning rate")
        resolve_total_steps(self.total_steps, None, None)
        _check_fraction("pct_start", self.pct_start)
        if self.anneal_strategy not in ANNEAL_STRATEGIES:
            raise ConfigError(
                f"Expected anneal_strategy to be one of {ANNEAL_STRATEGIES}, but got {self.anneal_strategy!r}"
            )
        _check_positive("div_factor", self.div_factor, "a positive number (initial_lr = max_lr / div_factor)")
        _check_positive(
            "final_div_factor",
            self.final_div_factor,
            "a positive number (final_lr = initial_lr / final_div_factor)",
        )
        if self.pct_down is not None:
            if not self.three_phase:
                raise ConfigError(
                    f"pct_down={self.pct_down!r} only applies to the three-phase shape: pass three_phase=True "
                    "(or use preset='smith')"
                )
            _check_fraction("pct_down", self.pct_down)
        if self.three_phase and self.pct_start + self.down_fraction > 1.0 + 1e-12:
            raise ConfigError(
                f"Expected pct_start + pct_down <= 1 (the rest is the annihilation phase), but got "
                f"pct_start={self.pct_start} + pct_down={self.down_fraction} = {self.pct_start + self.down_fraction}"
            )
        if self.cycle_momentum:
            for name in ("base_momentum", "max_momentum"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                    raise ConfigError(f"Expected {name} to be in [0, 1), but got {value!r}")
        object.__setattr__(self, "phases", self._build_phases())

    # --- derived values -------------------------------------------------------------------------------
    @property
    def down_fraction(self) -> float:
        return self.pct_start if self.pct_down is None else self.pct_down

    @property
    def initial_lr(self) -> float:
        return self.max_lr / self.div_factor

    @property
    def final_lr(self) -> float:
        return self.initial_lr / self.final_div_factor

    def _build_phases(self) -> tuple[Phase, ...]:
        t = self.total_steps
        lo, hi, peak = self.initial_lr, self.max_lr, self.max_lr
        m_hi, m_lo = self.max_momentum, self.base_momentum
        up = Phase(float(self.pct_start * t) - 1, lo, peak, m_hi, m_lo)
        if not self.three_phase:
            return (up, Phase(t - 1, hi, self.final_lr, m_lo, m_hi))
        down_end = float((self.pct_start + self.down_fraction) * t) - 2
        return (
            up,
            Phase(down_end, hi, lo, m_lo, m_hi),
            Phase(t - 1, lo, self.final_lr, m_hi, m_hi),
        )

    def locate(self, step: int | float) -> tuple[int, float]:
        """The phase ``step`` falls in and how far through it (0..1). Past the end: the last phase, 1."""
        # Clamp: never extrapolate past the last step (torch's cosine would turn back up).
        if step < 0:
            step = 0
        elif step > self.total_steps - 1:
            step = self.total_steps - 1
        start_step = 0.0
        phases = self.phases
        last = len(phases) - 1
        for i, phase in enumerate(phases):
            end_step = phase.end_step
            if step <= end_step or i == last:
                span = end_step - start_step
                # A zero-length phase (e.g. pct_start * total_steps == 1) is already complete.
                pct = 1.0 if span <= 0 else (step - start_step) / span
                return i, (0.0 if pct < 0.0 else 1.0 if pct > 1.0 else pct)
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    def lr_at(self, phase_index: int, pct: float) -> float:
        phase = self.phases[phase_index]
        return anneal(phase.start_lr, phase.end_lr, pct, self.anneal_strategy)

    def momentum_at(self, phase_index: int, pct: float) -> float:
        phase = self.phases[phase_index]
        return anneal(phase.start_momentum, phase.end_momentum, pct, self.anneal_strategy)

    # --- the schedule ---------------------------------------------------------------------------------
    def lr(self, step: int | float) -> float:
        """Learning rate at ``step`` (0-based; steps past the end hold the final LR)."""
        return self.lr_at(*self.locate(step))

    def momentum(self, step: int | float) -> float | None:
        """Momentum (SGD ``momentum`` or Adam ``beta1``) at ``step``; ``None`` when it does not cycle."""
        if not self.cycle_momentum:
            return None
        return self.momentum_at(*self.locate(step))

    def lrs(self) -> list[float]:
        """The learning rate at every step 0..total_steps-1."""
        return [self.lr(s) for s in range(self.total_steps)]

    def momentums(self) -> list[float | None]:
        return [self.momentum(s) for s in range(self.total_steps)]

    def phase_boundaries(self) -> list[int]:
        """First step of each phase after the first (integer steps)."""
        return [math.floor(p.end_step) + 1 for p in self.phases[:-1]]

    def key_steps(self) -> list[tuple[str, int]]:
        """Named steps worth printing: start, each phase change, the end."""
        names = ["peak", "back to initial"] if self.three_phase else ["peak"]
        steps = [("start", 0)]
        for name, p in zip(names, self.phases[:-1]):
            steps.append((name, min(max(round(p.end_step), 0), self.total_steps - 1)))
        steps.append(("end", self.total_steps - 1))
        return steps

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the arguments that rebuild this schedule."""
        d = asdict(self)
        d.pop("phases", None)
        return d

    @classmethod
    def from_preset(cls, preset: str, *, max_lr: float, total_steps: int, **overrides: Any) -> OneCycleSchedule:
        """A schedule from a named shape in :data:`PRESETS`, with any argument overridden."""
        return cls(max_lr=max_lr, total_steps=total_steps, **{**preset_kwargs(preset), **overrides})

    @classmethod
    def from_bounds(
        cls,
        *,
        base_lr: float,
        max_lr: float,
        total_steps: int,
        fraction_up: float = 0.4,
        fraction_down: float = 0.4,
        final_lr: float | None = None,
        anneal_strategy: AnnealStrategy = "linear",
        **kwargs: Any,
    ) -> OneCycleSchedule:
        """Smith's parametrization (the seed's): ``base_lr -> max_lr -> base_lr -> final_lr``.

        ``final_lr`` defaults to ``base_lr / 100``; the annihilation phase takes the rest of the run.
        """
        return cls(
            max_lr=max_lr,
            total_steps=total_steps,
            **bounds_kwargs(
                base_lr=base_lr,
                max_lr=max_lr,
                fraction_up=fraction_up,
                fraction_down=fraction_down,
                final_lr=final_lr,
                anneal_strategy=anneal_strategy,
            ),
            **kwargs,
        )


def preset_kwargs(preset: str) -> dict[str, Any]:
    """The keyword arguments of a named preset (a copy)."""
    if preset not in PRESETS:
        raise ConfigError(f"Unknown schedule preset {preset!r}: expected one of {sorted(PRESETS)}")
    return dict(PRESETS[preset])


def bounds_kwargs(
    *,
    base_lr: float,
    max_lr: float,
    fraction_up: float,
    fraction_down: float,
    final_lr: float | None,
    anneal_strategy: str,
) -> dict[str, Any]:
    """Translate Smith's (base_lr, max_lr, fractions, final_lr) into the schedule's factors."""
    _check_positive("base_lr", base_lr, "a positive, finite learning rate")
    _check_positive("max_lr", max_lr, "a positive, finite learning rate")
    if base_lr >= max_lr:
        raise ConfigError(f"Expected base_lr < max_lr, but got base_lr={base_lr} and max_lr={max_lr}")
    final = base_lr / 100.0 if final_lr is None else final_lr
    _check_positive("final_lr", final, "a positive, finite learning rate")
    if final >= base_lr:
        raise ConfigError(
            f"Expected final_lr < base_lr (the annihilation phase goes below the initial LR), "
            f"but got final_lr={final} and base_lr={base_lr}"
        )
    return {
        "pct_start": _check_fraction("fraction_up", fraction_up),
        "pct_down": _check_fraction("fraction_down", fraction_down),
        "div_factor": max_lr / base_lr,
        "final_div_factor": base_lr / final,
        "anneal_strategy": anneal_strategy,
        "three_phase": True,
    }
