"""The comparison's report: every run, the rows of :mod:`superconv.comparison.speedups`, and their three outputs —
``to_dict()`` (plain data, compare.json), ``markdown()`` (two tables and what they mean), ``plot()`` (figure 1)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from superconv.comparison.runs import Run

TARGET_NAMES = {"baseline_peak": "its peak", "one_cycle_final": "one-cycle's final"}


@dataclass
class CompareReport:
    """All runs plus the derived rows; ``to_dict()`` is plain data, ``markdown()`` the tables."""

    runs: list[Run]
    one_cycle_epochs: int
    baseline_epochs: int
    optimizer: str
    seeds: list[int]
    tuned: bool
    eval_every: int = 1
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; an interval's infinite end (unbounded by the grid) is ``inf`` (``null`` in compare.json)."""
        return {
            "one_cycle_epochs": self.one_cycle_epochs,
            "baseline_epochs": self.baseline_epochs,
            "optimizer": self.optimizer,
            "seeds": self.seeds,
            "tuned": self.tuned,
            "eval_every": self.eval_every,
            "rows": self.rows,
            "warnings": self.warnings,
            "runs": [asdict(r) for r in self.runs],
        }

    def markdown(self) -> str:
        """The accuracy table, the speed-up table, and what their columns mean."""
        lines = []
        if not self.tuned:
            lines.append(
                "**WARNING: baselines were NOT tuned (--no-tune): speed-ups below are against the usual "
                "default LR only and prove nothing about a well-tuned baseline.**\n"
            )
        several = len(self.seeds) > 1
        lines.append(
            f"Budget: one-cycle {self.one_cycle_epochs} epochs, baselines {self.baseline_epochs} epochs; "
            f"optimizer {self.optimizer}; seeds {self.seeds}{' (means)' if several else ''}; test accuracy "
            f"evaluated every {self.eval_every} updates.\n"
        )
        lines += accuracy_table(self.rows, several)
        lines.append("")
        lines += speedup_table(self.rows)
        lines.append("")
        lines.append(explanation(self.rows, self.eval_every))
        lines += [f"\n> {w}" for w in self.warnings]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Figure 1 of the paper, for this data: test accuracy vs updates (top), the LR schedules (bottom)."""
        from superconv.plots import pyplot, save

        plt = pyplot()
        fig, (ax_acc, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        seed = self.seeds[0]
        shown = [r for r in self.runs if r.seed == seed and r.role in ("one-cycle", "tuned", "default")]
        for i, run in enumerate(shown):
            label = f"{run.schedule} ({run.role}, lr {run.lr:.2g})"
            style = "-" if run.role in ("one-cycle", "tuned") else ":"
            ax_acc.plot(run.curve.steps, run.curve.accuracy, style, color=f"C{i}", label=label, marker=".")
            ax_lr.plot(range(len(run.lrs)), run.lrs, style, color=f"C{i}")
            if run.range_test_updates:  # the same curve, paying for the range test first
                shifted = [step + run.range_test_updates for step in run.curve.steps]
                label = f"{run.schedule}, after the range test's {run.range_test_updates} updates"
                ax_acc.plot(shifted, run.curve.accuracy, "--", color=f"C{i}", alpha=0.5, label=label)
        ax_acc.set_ylabel("test accuracy")
        # Zoom on where the runs end (every final accuracy in view), not on the initial weights' chance level.
        ax_acc.set_ylim(max(0.0, min((r.final_accuracy for r in shown), default=0.0) - 0.1), None)
        ax_acc.grid(True, alpha=0.3)
        ax_acc.legend(fontsize=8)
        ax_acc.set_title("One-cycle vs conventional schedules")
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("optimizer updates")
        ax_lr.grid(True, which="both", alpha=0.3)
        return save(fig, path)


def accuracy_table(rows: list[dict[str, Any]], several_seeds: bool) -> list[str]:
    lines = [
        "| schedule | LR | LR chosen by | updates | final acc (final weights) | best-val checkpoint acc | "
        "peak test acc seen |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        final = pct(r["final_accuracy"])
        if several_seeds:
            low, high = r["final_accuracy_range"]
            final += f" [{pct(low)}, {pct(high)}]"
        lines.append(
            f"| {r['schedule']} | {r['lr']:.3g} | {r['role']} | {r['total_steps']} | {final} | "
            f"{pct(r['best_checkpoint_accuracy'])} | {pct(r['peak_accuracy'])} |"
        )
    return lines


def speedup_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| schedule | LR chosen by | target | test acc | one-cycle updates to it | its updates to it | "
        "one-cycle needs x fewer updates | incl. range test | x fewer seconds | incl. range test |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name, label in TARGET_NAMES.items():
            s = r[name]
            if s is None:
                continue
            lines.append(
                f"| {r['schedule']} | {r['role']} | {label} | {pct(s['target'])} | {updates(s['one_cycle_updates'])}"
                f" | {updates(s['other_updates'])} | {ratio(s['updates'])} | {ratio(s['updates_with_range_test'])} "
                f"| {ratio(s['seconds'])} | {ratio(s['seconds_with_range_test'])} |"
            )
    return lines


def explanation(rows: list[dict[str, Any]], eval_every: int) -> str:
    one = next((r for r in rows if r["schedule"] == "one-cycle" and r["role"] == "one-cycle"), None)
    cost = (
        f" ({one['range_test_updates']:.0f} updates, {one['range_test_seconds']:.1f} s)"
        if one is not None and one["range_test_updates"]
        else ""
    )
    return (
        "**final acc**: test accuracy of the weights training ended with. **best-val checkpoint acc**: test "
        "accuracy of the epoch with the best validation accuracy, the weights `fit` restores (`-`: no validation "
        "set). **peak test acc seen**: the highest test accuracy any evaluation saw.\n\n"
        "**Speed-ups**: how many times fewer optimizer updates (and training seconds, test evaluations excluded) "
        "one-cycle needs than the run of that row to first reach the target: that run's own peak test accuracy, "
        f"and one-cycle's final accuracy. Test accuracy is evaluated every {eval_every} updates, so a target is "
        "first crossed somewhere between two evaluations: update counts read low–high, and each ratio reads "
        "value [low, high], the range its evaluation grid allows. **incl. range test** adds the LR range test's "
        f"cost{cost} to one-cycle's side. `not reached`: that run never got to the target within its budget; "
        "`-`: no ratio (a run did not reach the target, or reached it before training)."
    )


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def updates(interval: list[float] | None) -> str:
    if interval is None:
        return "not reached"
    low, high = interval
    return f"{high:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"


def ratio(value: dict[str, Any] | None) -> str:
    if value is None:
        return "-"
    low, high = value["interval"]
    return f"{value['ratio']:.2f} [{low:.2f}, {'inf' if math.isinf(high) else f'{high:.2f}'}]"
