"""``superconv.compare``: the super-convergence experiment on the user's own model and data — which runs, and how
the baselines' LRs are tuned.

One-cycle (range test included) against conventional baselines — constant LR, piecewise-constant step decay (as in
Smith & Topin's comparison), cosine annealing — each baseline with a budget several times longer, and each
baseline's LR tuned on a small log grid that contains both the usual default and the range test's LR. Speed-ups are
reported against the best-tuned baseline and against the usual default, side by side, so a win over an untuned
baseline cannot pass for the real thing (:mod:`superconv.comparison.speedups`).

Test accuracy is measured at the start, every ``eval_every`` optimizer updates and on the final weights
(:mod:`superconv.comparison.runs`); LR tuning selects by validation accuracy only, never by test accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence, Sized
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

import superconv.comparison.speedups as speedups
from superconv.checks import one_of, positive_float, positive_int
from superconv.comparison.report import CompareReport
from superconv.comparison.runs import Run, TestCurveRecorder
from superconv.device import resolve_device, resolve_precision, use_channels_last
from superconv.errors import ConfigError
from superconv.schedule.baselines import ONE_CYCLE_SCHEDULES, SCHEDULES
from superconv.schedule.steps import total_steps as count_total_steps
from superconv.train.state import FitResult
from superconv.train.trainer import fit

#: The usual default LR people start from, per optimizer (torch's AdamW default; SGD's classic 0.1).
USUAL_DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.1}
#: Baseline LR grid, as factors of the range test's suggestion (the usual default is added).
GRID_FACTORS = (0.1, 0.3, 1.0, 3.0)
BASELINES = ("constant", "step", "cosine")
#: Test evaluations the one-cycle run gets by default: enough for the crossing intervals to be narrow.
MIN_EVALUATIONS = 20
#: ``fit`` arguments that ``compare`` sets itself for every run.
RESERVED_FIT_KWARGS = ("epochs", "max_lr", "schedule", "test_loader")


def compare(
    make_model: Callable[[int], nn.Module],
    train_loader: Any,
    val_loader: Any,
    test_loader: Any,
    *,
    epochs: int = 4,
    budget_factor: int = 4,
    schedules: Sequence[str] = BASELINES,
    optimizer: str = "adamw",
    seeds: Sequence[int] = (0,),
    tune: bool = True,
    grid_factors: Sequence[float] = GRID_FACTORS,
    eval_every: int | None = None,
    fit_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CompareReport:
    """Run one-cycle against baselines on the same model and data, and report the speed-ups.

    Args:
        make_model: ``make_model(seed)`` builds a freshly initialized model (same init for every schedule
            of a seed).
        train_loader, val_loader, test_loader: Loaders as for :func:`superconv.fit`; validation
            selects baseline LRs, test accuracy is what is compared.
        epochs: One-cycle's budget in epochs.
        budget_factor: Baselines train ``budget_factor * epochs`` epochs.
        schedules: Baselines (and optional extra one-cycle variants) from
            :data:`superconv.schedule.baselines.SCHEDULES`; ``"one-cycle"`` itself always runs.
        optimizer: ``"adamw"`` or ``"sgd"``, the same for every schedule.
        seeds: Repeat everything for each seed; the table shows the mean.
        tune: Tune each baseline's LR on the grid (default). ``False`` uses the usual default only, and
            the report says loudly that the comparison then proves nothing.
        grid_factors: The grid, as factors of the range test's LR (the usual default is added).
        eval_every: Updates between test evaluations (default: one-cycle's updates // 20, so that it gets at
            least :data:`MIN_EVALUATIONS`; the report warns when a coarser grid is given).
        fit_kwargs: Extra arguments for every :func:`superconv.fit` call (device, precision, callbacks, ...);
            not those of :data:`RESERVED_FIT_KWARGS`, which compare sets.
        progress: Called with a line of text as runs finish.

    Returns:
        A :class:`~superconv.comparison.report.CompareReport`.
    """
    _check(train_loader, schedules, epochs, budget_factor, optimizer, seeds, tune, val_loader, grid_factors, fit_kwargs)
    trainer = RunTrainer.build(make_model, train_loader, val_loader, test_loader, optimizer, fit_kwargs, progress)
    one_cycle_updates = count_total_steps(epochs, len(train_loader), trainer.accumulation_steps)
    if eval_every is None:
        trainer.every = max(1, one_cycle_updates // MIN_EVALUATIONS)
    else:
        trainer.every = positive_int("eval_every", eval_every)
    variants = [s for s in schedules if s in ONE_CYCLE_SCHEDULES and s != "one-cycle"]
    baselines = [s for s in schedules if s not in ONE_CYCLE_SCHEDULES]
    grid = grid_factors if tune else None
    runs = [run for seed in seeds for run in seed_runs(trainer, seed, epochs, budget_factor, variants, baselines, grid)]
    report = CompareReport(
        runs=runs, one_cycle_epochs=epochs, baseline_epochs=epochs * budget_factor, optimizer=optimizer,
        seeds=list(seeds), tuned=tune, eval_every=trainer.every,
    )  # fmt: skip
    report.rows = speedups.rows(runs, [*variants, *baselines])
    if not tune:
        report.warnings.append("Baselines were not tuned: speed-ups are against the usual default LR only.")
    report.warnings += coarse_grid_warning(one_cycle_updates, trainer.every)
    return report


def seed_runs(
    trainer: RunTrainer,
    seed: int,
    epochs: int,
    budget_factor: int,
    variants: list[str],
    baselines: list[str],
    grid_factors: Sequence[float] | None,
) -> list[Run]:
    """One seed's runs: one-cycle, its variants at its LR, and each baseline — tuned on the grid (or at the usual
    default LR only when ``grid_factors`` is None) the first time, at the LR tuned then on later seeds."""
    one = trainer.run("one-cycle", None, seed, "one-cycle", epochs)
    runs = [one, *(trainer.run(variant, one.lr, seed, "one-cycle", epochs) for variant in variants)]
    default_lr = USUAL_DEFAULT_LR[trainer.fit_kwargs["optimizer"]]
    for schedule in baselines:
        if schedule in trainer.tuned_lrs:
            runs += repeat_tuned(
                trainer, schedule, trainer.tuned_lrs[schedule], default_lr, seed, epochs * budget_factor
            )
            continue
        grid = sorted({default_lr, *(one.lr * f for f in grid_factors)}) if grid_factors is not None else [default_lr]
        tried = tune_lr(trainer, schedule, grid, default_lr, seed, epochs * budget_factor)
        trainer.tuned_lrs[schedule] = next(r.lr for r in tried if r.role == "tuned")
        runs += tried
    return runs


def coarse_grid_warning(one_cycle_updates: int, every: int) -> list[str]:
    """A warning when the one-cycle run gets fewer than :data:`MIN_EVALUATIONS` test evaluations but could get
    more."""
    evaluations = one_cycle_updates // every
    if every == 1 or evaluations >= MIN_EVALUATIONS:
        return []
    return [
        f"The one-cycle run got only {evaluations} test evaluations (eval_every={every}, {one_cycle_updates} "
        f"updates): the speed-ups' intervals are wide. Use eval_every <= {max(1, one_cycle_updates // MIN_EVALUATIONS)}"
        f" (or leave it unset) for at least {MIN_EVALUATIONS}."
    ]


def _check(
    train_loader: Any,
    schedules: Sequence[str],
    epochs: Any,
    budget_factor: Any,
    optimizer: str,
    seeds: Sequence[int],
    tune: bool,
    val_loader: Any,
    grid_factors: Sequence[float],
    fit_kwargs: dict[str, Any] | None,
) -> None:
    if not isinstance(train_loader, Sized):
        raise ConfigError(
            f"Expected a train_loader with a length (batches per epoch, to size the schedules), but got a "
            f"{type(train_loader).__name__}: give a DataLoader or another sized iterable"
        )
    for schedule in schedules:
        one_of("schedule", schedule, SCHEDULES)
    positive_int("epochs", epochs)
    positive_int("budget_factor", budget_factor)
    one_of("optimizer", optimizer, tuple(USUAL_DEFAULT_LR))
    for factor in grid_factors:
        positive_float("each of grid_factors", factor, hint="a factor of the range test's LR")
    if not seeds:
        raise ConfigError("Expected at least one seed, but got an empty list: give seeds=[0] (or more seeds)")
    if val_loader is None and tune:
        raise ConfigError(
            "Tuning baseline LRs needs a validation set, but val_loader is None: give val_loader "
            "(or --val-fraction > 0), or tune=False (--no-tune) to compare against the usual default LR only"
        )
    reserved = sorted(set(fit_kwargs or {}) & set(RESERVED_FIT_KWARGS))
    if reserved:
        raise ConfigError(
            f"Expected fit_kwargs without {', '.join(RESERVED_FIT_KWARGS)} (compare sets them for each run), "
            f"but got {reserved}: remove them (use epochs=, test_loader= of compare)"
        )


def tune_lr(
    trainer: RunTrainer, schedule: str, grid: list[float], default_lr: float, seed: int, epochs: int
) -> list[Run]:
    """Train ``schedule`` at every LR of ``grid``; the best by validation accuracy becomes "tuned" (ties: the LR
    closest to the default), the default LR's run "default" (the same run, listed twice, when it won)."""
    candidates = [trainer.run(schedule, lr, seed, "grid", epochs) for lr in grid]
    best = max(candidates, key=lambda r: (r.val_accuracy, -abs(math.log(r.lr / default_lr))))
    best.role = "tuned"
    runs = list(candidates)
    default = next((c for c in candidates if c.lr == default_lr), None)
    if default is best:
        runs.append(with_role(best, "default"))
    elif default is not None:
        default.role = "default"
    return runs


def repeat_tuned(trainer: RunTrainer, schedule: str, lr: float, default_lr: float, seed: int, epochs: int) -> list[Run]:
    """A later seed: the LR tuned on the first seed, and the usual default (one run when they are the same)."""
    tuned = trainer.run(schedule, lr, seed, "tuned", epochs)
    if lr == default_lr:
        return [tuned, with_role(tuned, "default")]
    return [tuned, trainer.run(schedule, default_lr, seed, "default", epochs)]


def with_role(run: Run, role: str) -> Run:
    return Run(**{**asdict(run), "curve": run.curve, "lrs": run.lrs, "role": role})


@dataclass
class RunTrainer:
    """Trains one run of the comparison with ``fit`` and turns what it produced into a :class:`Run`."""

    make_model: Callable[[int], nn.Module]
    train_loader: Any
    val_loader: Any
    test_loader: Any
    fit_kwargs: dict[str, Any]
    eval_kwargs: dict[str, Any]
    accumulation_steps: int
    say: Callable[[str], None]
    every: int = 1
    tuned_lrs: dict[str, float] = field(default_factory=dict)  # tuned on the first seed; later seeds reuse them

    @classmethod
    def build(
        cls,
        make_model: Callable[[int], nn.Module],
        train_loader: Any,
        val_loader: Any,
        test_loader: Any,
        optimizer: str,
        fit_kwargs: dict[str, Any] | None,
        progress: Callable[[str], None] | None,
    ) -> RunTrainer:
        kwargs = {"verbose": False, "progress": False, "optimizer": optimizer, **(fit_kwargs or {})}
        device = resolve_device(kwargs.get("device"))
        # The curve is evaluated as fit tests the best checkpoint: same precision, memory format and TTA.
        eval_kwargs = {
            "autocast_dtype": resolve_precision(kwargs.get("precision", "auto"), device),
            "channels_last": use_channels_last(kwargs.get("channels_last", "auto"), device),
            "tta": bool(kwargs.get("tta", False)),
        }
        accumulation = positive_int("accumulation_steps", kwargs.get("accumulation_steps", 1))
        say = progress or (lambda line: None)
        return cls(make_model, train_loader, val_loader, test_loader, kwargs, eval_kwargs, accumulation, say)

    def run(self, schedule: str, lr: float | None, seed: int, role: str, epochs: int) -> Run:
        torch.manual_seed(seed)
        model = self.make_model(seed)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(0)
        updates_per_epoch = math.ceil(len(self.train_loader) / self.accumulation_steps)
        recorder = TestCurveRecorder(self.test_loader, self.every, updates_per_epoch, self.eval_kwargs)
        kwargs = dict(self.fit_kwargs)
        callbacks = [recorder, *kwargs.pop("callbacks", ())]
        # fit tests the best-validation checkpoint; without validation there is none (the curve has the final).
        test_loader = self.test_loader if self.val_loader is not None else None
        result: FitResult = fit(
            model, self.train_loader, self.val_loader, epochs=epochs, max_lr=lr, schedule=schedule,
            callbacks=callbacks, test_loader=test_loader, **kwargs,
        )  # fmt: skip
        if result.interrupted:
            # fit turns Ctrl-C / SIGTERM into a clean stop of that run; the comparison must stop too, not go on.
            raise KeyboardInterrupt(f"compare: the {schedule} run (seed {seed}) was interrupted; no report written")
        curve = recorder.curve
        has_checkpoint = result.best_epoch is not None
        run = Run(
            schedule=schedule,
            lr=result.max_lr,
            seed=seed,
            role=role,
            val_accuracy=result.history[-1].get("val_accuracy", math.nan) if result.history else 0.0,
            final_accuracy=curve.accuracy[-1],
            best_checkpoint_accuracy=result.test_accuracy if has_checkpoint else None,
            best_epoch=result.best_epoch,
            peak_accuracy=max(curve.accuracy),
            total_steps=result.steps,
            train_seconds=result.train_seconds,
            range_test_updates=range_test_updates(result, self.accumulation_steps),
            range_test_seconds=result.range_test_seconds,
            curve=curve,
            lrs=list(result.lrs),
        )
        self.say(
            f"{schedule:<18} {role:<9} seed {seed} lr {run.lr:.3g}: final {run.final_accuracy:.2%}, "
            f"peak {run.peak_accuracy:.2%} ({run.train_seconds:.0f} s)"
        )
        return run


def range_test_updates(result: FitResult, accumulation_steps: int) -> int:
    """The range test's cost in the run's optimizer updates: the batches its sweep consumed (the updates it made
    or attempted, times its accumulation), divided by the run's ``accumulation_steps``."""
    sweep = result.range_test
    if sweep is None:
        return 0
    attempted = len(sweep.lrs) + sweep.skipped_steps + (1 if sweep.stop_reason == "non-finite" else 0)
    return math.ceil(attempted * sweep.accumulation_steps / accumulation_steps)
