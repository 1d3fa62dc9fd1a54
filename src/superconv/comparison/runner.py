"""``superconv.compare``: the super-convergence experiment on the user's own model and data.

One-cycle (range test included) against conventional baselines — constant LR, piecewise-constant
step decay (as in Smith & Topin's comparison), cosine annealing — each baseline with a budget
several times longer, and each baseline's LR tuned on a small log grid that contains both the usual
default and the range test's LR. Speed-ups are reported against the best-tuned baseline and against
the usual default, side by side, so a win over an untuned baseline cannot pass for the real thing.

Accuracy is measured on the test set every ``eval_every`` optimizer updates; LR tuning selects by
validation accuracy only, never by test accuracy.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superconv.device import resolve_device, resolve_precision, use_channels_last
from superconv.errors import ConfigError
from superconv.schedule.baselines import ONE_CYCLE_SCHEDULES, SCHEDULES
from superconv.train.evaluation import evaluate
from superconv.train.events import Callback
from superconv.train.state import FitResult, FitState
from superconv.train.trainer import fit

#: The usual default LR people start from, per optimizer (torch's AdamW default; SGD's classic 0.1).
USUAL_DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.1}
#: Baseline LR grid, as factors of the range test's suggestion (the usual default is added).
GRID_FACTORS = (0.1, 0.3, 1.0, 3.0)
BASELINES = ("constant", "step", "cosine")


@dataclass
class Curve:
    """Test accuracy along one run: at optimizer update ``steps[i]``, after ``seconds[i]`` of training."""

    steps: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    def first_reaching(self, target: float) -> int | None:
        """Index of the first evaluation at or above ``target`` (None: never)."""
        for i, acc in enumerate(self.accuracy):
            if acc >= target - 1e-12:
                return i
        return None


@dataclass
class Run:
    """One training run of the comparison."""

    schedule: str
    lr: float
    seed: int
    role: str  # "one-cycle", "tuned", "default" or "grid"
    val_accuracy: float
    final_accuracy: float
    best_accuracy: float
    total_steps: int
    train_seconds: float
    range_test_seconds: float = 0.0
    curve: Curve = field(default_factory=Curve)
    lrs: list[float] = field(default_factory=list, repr=False)


class _EvalEvery(Callback):
    """Evaluates test accuracy every ``every`` updates; its own time is excluded from the run's clock."""

    def __init__(self, loader: Any, every: int, steps_per_epoch: int, eval_kwargs: dict[str, Any]) -> None:
        self.loader, self.every, self.steps_per_epoch, self.eval_kwargs = (
            loader,
            every,
            steps_per_epoch,
            eval_kwargs,
        )
        self.curve = Curve()
        self._t0 = 0.0
        self._eval_seconds = 0.0
        self._last = -1

    def on_fit_start(self, state: FitState) -> None:
        self._t0 = time.perf_counter()

    def on_batch_end(self, state: FitState) -> None:
        if state.step % self.every == 0 and state.step != self._last:
            self._record(state)

    def on_fit_end(self, state: FitState) -> None:
        if state.step != self._last:
            self._record(state)

    def _record(self, state: FitState) -> None:
        self._last = state.step
        t = time.perf_counter()
        _, acc = evaluate(state.model, self.loader, state.device, **self.eval_kwargs)
        self._eval_seconds += time.perf_counter() - t
        self.curve.steps.append(state.step)
        self.curve.epochs.append(state.step / self.steps_per_epoch)
        self.curve.seconds.append(time.perf_counter() - self._t0 - self._eval_seconds)
        self.curve.accuracy.append(acc)


@dataclass
class CompareReport:
    """All runs plus the derived table; ``to_dict()`` is plain data, ``markdown()`` the table."""

    runs: list[Run]
    one_cycle_epochs: int
    baseline_epochs: int
    optimizer: str
    seeds: list[int]
    tuned: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "one_cycle_epochs": self.one_cycle_epochs,
            "baseline_epochs": self.baseline_epochs,
            "optimizer": self.optimizer,
            "seeds": self.seeds,
            "tuned": self.tuned,
            "rows": self.rows,
            "warnings": self.warnings,
            "runs": [asdict(r) for r in self.runs],
        }

    def markdown(self) -> str:
        lines = []
        if not self.tuned:
            lines.append(
                "**WARNING: baselines were NOT tuned (--no-tune): speed-ups below are against the usual "
                "default LR only and prove nothing about a well-tuned baseline.**\n"
            )
        lines.append(
            f"Budget: one-cycle {self.one_cycle_epochs} epochs, baselines {self.baseline_epochs} epochs; "
            f"optimizer {self.optimizer}; seeds {self.seeds} (mean, [min, max] where several).\n"
        )
        lines.append(
            "| schedule | LR | LR chosen by | final acc | best acc | updates | "
            "target: baseline's best | one-cycle updates to it | baseline updates to it | "
            "one-cycle needs x fewer updates | x fewer seconds | "
            "baseline updates to one-cycle's final acc | x |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in self.rows:
            lines.append(
                f"| {r['schedule']} | {r['lr']:.3g} | {r['role']} | {_pct(r['final_accuracy'])} | "
                f"{_pct(r['best_accuracy'])} | {r['total_steps']} | {_pct(r['target'])} | "
                f"{_num(r['one_cycle_steps_to_target'])} | {_num(r['steps_to_target'])} | "
                f"{_speedup(r['speedup_updates'])} | {_speedup(r['speedup_seconds'])} | "
                f"{_num(r['steps_to_one_cycle_final'])} | {_speedup(r['speedup_to_one_cycle_final'])} |"
            )
        lines.append(
            "\n`not reached`: that run never got to the target within its budget. Speed-ups compare "
            "optimizer updates (and training seconds, evaluation excluded) to the first test evaluation at "
            "or above the target."
        )
        for w in self.warnings:
            lines.append(f"\n> {w}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Figure 1 of the paper, for this data: test accuracy vs updates (top), the LR schedules (bottom)."""
        from superconv.plots import pyplot, save

        plt = pyplot()
        fig, (ax_acc, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        seed = self.seeds[0]
        for i, run in enumerate(r for r in self.runs if r.seed == seed and r.role in ("one-cycle", "tuned", "default")):
            label = f"{run.schedule} ({run.role}, lr {run.lr:.2g})"
            style = "-" if run.role in ("one-cycle", "tuned") else ":"
            ax_acc.plot(run.curve.steps, run.curve.accuracy, style, color=f"C{i}", label=label, marker=".")
            ax_lr.plot(range(len(run.lrs)), run.lrs, style, color=f"C{i}")
        ax_acc.set_ylabel("test accuracy")
        lo = min((min(r.curve.accuracy) for r in self.runs if r.curve.accuracy), default=0.0)
        ax_acc.set_ylim(max(lo, 0.5 * (1 + lo) - 0.3), None)
        ax_acc.grid(True, alpha=0.3)
        ax_acc.legend(fontsize=8)
        ax_acc.set_title("One-cycle vs conventional schedules")
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("optimizer updates")
        ax_lr.grid(True, which="both", alpha=0.3)
        return save(fig, path)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _num(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.0f}"


def _speedup(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if len(present) == len(values) and present else None


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
        eval_every: Updates between test evaluations (default: about 4 per epoch).
        fit_kwargs: Extra arguments for every :func:`superconv.fit` call (device, precision, ...).
        progress: Called with a line of text as runs finish.

    Returns:
        A :class:`CompareReport`.
    """
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise ConfigError(f"Unknown schedule(s) {unknown}: expected some of {SCHEDULES}")
    for name, value in (("epochs", epochs), ("budget_factor", budget_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"Expected {name} to be a positive integer, but got {value!r}")
    if optimizer not in USUAL_DEFAULT_LR:
        raise ConfigError(f"Unknown optimizer {optimizer!r}: expected one of {tuple(USUAL_DEFAULT_LR)}")
    if not seeds:
        raise ConfigError("Expected at least one seed, but got an empty list")
    if val_loader is None and tune:
        raise ConfigError("Tuning baseline LRs needs a validation set: give val_loader (or --val-fraction > 0)")
    say = progress or (lambda line: None)
    steps_per_epoch = len(train_loader)
    every = eval_every or max(1, steps_per_epoch // 4)
    base_kwargs = {"verbose": False, "progress": False, "optimizer": optimizer, **(fit_kwargs or {})}
    dev = resolve_device(base_kwargs.get("device"))
    eval_kwargs = {
        "autocast_dtype": resolve_precision(base_kwargs.get("precision", "auto"), dev),
        "channels_last": use_channels_last(base_kwargs.get("channels_last", "auto"), dev),
    }
    baseline_epochs = epochs * budget_factor
    extra_one_cycle = [s for s in schedules if s in ONE_CYCLE_SCHEDULES and s != "one-cycle"]
    baselines = [s for s in schedules if s not in ONE_CYCLE_SCHEDULES]

    def run(schedule: str, lr: float | None, seed: int, role: str, n_epochs: int) -> Run:
        torch.manual_seed(seed)
        model = make_model(seed)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(0)
        ev = _EvalEvery(test_loader, every, math.ceil(steps_per_epoch), eval_kwargs)
        result: FitResult = fit(
            model,
            train_loader,
            val_loader,
            epochs=n_epochs,
            max_lr=lr,
            schedule=schedule,
            callbacks=[ev],
            **base_kwargs,
        )
        if result.diverged:
            # A diverged run never reaches anything: keep it in the table as such.
            ev.curve.accuracy = [0.0 if not math.isfinite(a) else a for a in ev.curve.accuracy]
        r = Run(
            schedule=schedule,
            lr=result.max_lr,
            seed=seed,
            role=role,
            val_accuracy=result.history[-1].get("val_accuracy", math.nan) if result.history else 0.0,
            final_accuracy=ev.curve.accuracy[-1] if ev.curve.accuracy else 0.0,
            best_accuracy=max(ev.curve.accuracy, default=0.0),
            total_steps=result.steps,
            train_seconds=result.train_seconds,
            range_test_seconds=result.range_test_seconds,
            curve=ev.curve,
            lrs=list(result.lrs),
        )
        say(
            f"{schedule:<18} {role:<9} seed {seed} lr {r.lr:.3g}: final {r.final_accuracy:.2%}, "
            f"best {r.best_accuracy:.2%} ({r.train_seconds:.0f} s)"
        )
        return r

    runs: list[Run] = []
    default_lr = USUAL_DEFAULT_LR[optimizer]
    chosen: dict[str, float] = {}
    for seed in seeds:
        one = run("one-cycle", None, seed, "one-cycle", epochs)
        runs.append(one)
        for variant in extra_one_cycle:
            runs.append(run(variant, one.lr, seed, "one-cycle", epochs))
        for schedule in baselines:
            if seed == seeds[0]:
                # Tune on the first seed by validation accuracy; later seeds reuse the choice.
                grid = sorted({default_lr, *(one.lr * f for f in grid_factors)}) if tune else [default_lr]
                candidates = [run(schedule, lr, seed, "grid", baseline_epochs) for lr in grid]
                best = max(candidates, key=lambda r: (r.val_accuracy, -abs(math.log(r.lr / default_lr))))
                best.role = "tuned"
                chosen[schedule] = best.lr
                for c in candidates:
                    if c.lr == default_lr:
                        if c is best:
                            # the default won the tuning: keep one run, listed as both
                            runs.append(_as_role(c, "default"))
                        else:
                            c.role = "default"
                runs.extend(candidates)
            else:
                runs.append(run(schedule, chosen[schedule], seed, "tuned", baseline_epochs))
                if chosen[schedule] != default_lr:
                    runs.append(run(schedule, default_lr, seed, "default", baseline_epochs))
                else:
                    runs.append(_as_role(runs[-1], "default"))
    report = CompareReport(
        runs=runs,
        one_cycle_epochs=epochs,
        baseline_epochs=baseline_epochs,
        optimizer=optimizer,
        seeds=list(seeds),
        tuned=tune,
    )
    report.rows = _rows(runs, list(seeds), [*extra_one_cycle, *baselines])
    if not tune:
        report.warnings.append("Baselines were not tuned: speed-ups are against the usual default LR only.")
    return report


def _as_role(run: Run, role: str) -> Run:
    clone = Run(**{**asdict(run), "curve": run.curve, "lrs": run.lrs})
    clone.role = role
    return clone


def _rows(runs: list[Run], seeds: list[int], others: list[str]) -> list[dict[str, Any]]:
    """One row per (schedule, role): means over seeds of accuracies and of the speed-ups to the target.

    The target of a baseline row is the best accuracy that baseline ever reaches; the speed-up is how
    many times fewer updates (and training seconds) one-cycle needs to reach it.
    """
    rows: list[dict[str, Any]] = []
    one_cycle = {r.seed: r for r in runs if r.schedule == "one-cycle"}

    def summarize(schedule: str, role: str) -> dict[str, Any] | None:
        per_seed = [
            next((r for r in runs if r.schedule == schedule and r.role == role and r.seed == s), None) for s in seeds
        ]
        present = [r for r in per_seed if r is not None]
        if not present:
            return None
        targets: list[float] = []
        oc_steps: list[float | None] = []
        steps: list[float | None] = []
        up: list[float | None] = []
        sec: list[float | None] = []
        match_steps: list[float | None] = []
        match_up: list[float | None] = []
        for r in present:
            oc = one_cycle[r.seed]
            # How long the baseline needs to match what one-cycle ends with.
            i_m = r.curve.first_reaching(oc.final_accuracy)
            match_steps.append(r.curve.steps[i_m] if i_m is not None else None)
            i_om = oc.curve.first_reaching(oc.final_accuracy)
            match_up.append(r.curve.steps[i_m] / oc.curve.steps[i_om] if i_m is not None and i_om is not None else None)
            target = r.best_accuracy
            i_b, i_o = r.curve.first_reaching(target), oc.curve.first_reaching(target)
            targets.append(target)
            steps.append(r.curve.steps[i_b] if i_b is not None else None)
            oc_steps.append(oc.curve.steps[i_o] if i_o is not None else None)
            if i_b is not None and i_o is not None:
                up.append(r.curve.steps[i_b] / oc.curve.steps[i_o])
                sec.append(r.curve.seconds[i_b] / max(oc.curve.seconds[i_o], 1e-9))
            else:
                up.append(None)
                sec.append(None)
        return {
            "schedule": schedule,
            "role": role,
            "lr": statistics.fmean(r.lr for r in present),
            "final_accuracy": statistics.fmean(r.final_accuracy for r in present),
            "final_accuracy_range": [
                min(r.final_accuracy for r in present),
                max(r.final_accuracy for r in present),
            ],
            "best_accuracy": statistics.fmean(r.best_accuracy for r in present),
            "total_steps": present[0].total_steps,
            "target": statistics.fmean(targets),
            "steps_to_target": _mean(steps),
            "one_cycle_steps_to_target": _mean(oc_steps),
            "speedup_updates": _mean(up),
            "speedup_seconds": _mean(sec),
            "one_cycle_final": statistics.fmean(one_cycle[r.seed].final_accuracy for r in present),
            "steps_to_one_cycle_final": _mean(match_steps),
            "speedup_to_one_cycle_final": _mean(match_up),
            "speedup_updates_range": [
                min(u for u in up if u is not None),
                max(u for u in up if u is not None),
            ]
            if any(u is not None for u in up)
            else None,
        }

    first = summarize("one-cycle", "one-cycle")
    if first is not None:
        first.update(
            target=None,
            steps_to_target=None,
            one_cycle_steps_to_target=None,
            speedup_updates=None,
            speedup_seconds=None,
            steps_to_one_cycle_final=None,
            speedup_to_one_cycle_final=None,
        )
        rows.append(first)
    for schedule in others:
        for role in ("one-cycle", "tuned", "default"):
            row = summarize(schedule, role)
            if row is not None:
                rows.append(row)
    return rows
