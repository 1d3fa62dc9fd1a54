"""The development phase of ``lr_suggestion.py``: the data every design choice is read from, and the choice.

For each development workload and seed it records superconv's range test (the raw curve), full one-cycle runs on
a quarter-decade grid of 13 LRs (the 7-point grid half a decade apart and the points between), and short probes
(compressed one-cycle runs of 5%, 7.5% and 15% of the run, exactly what ``superconv.finder.verify`` trains) at
every grid LR, each with its validation accuracy and loss.

From that, without training anything more, it reads:

* every candidate estimator's LR off the curve (:func:`estimates`), and what the full run at that LR would
  score: the validation accuracy interpolated on the log-LR grid (at most 1/8 decade from a measured point);
* every verification variant (:data:`VARIANTS`: a candidate set, a probe length, a metric, a tie rule) by the
  probes' values interpolated the same way, and which candidate it would pick (as ``verify`` would: the library's
  tie functions decide);
* the short-horizon bias: how far the probes' best grid LR lies from the full runs', what that costs, and the
  rank correlation between probe and full-run validation accuracy.

The variant with the lowest :func:`objective` on VALIDATION accuracy is chosen; ``lr_suggestion.py`` then runs
the held-out workloads with superconv's defaults, which must be that variant.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from _suggestion_runs import one_cycle, range_test, start, torch_lr_finder_steepest
from _suggestion_workloads import WORKLOADS
from superconv.finder import suggest
from superconv.finder.candidates import lagged_steepest
from superconv.finder.confidence import at_chance
from superconv.finder.result import RangeTestResult
from superconv.finder.verify import (
    DEFAULT_METRIC,
    DEFAULT_ON_TIE,
    DEFAULT_PROBE_FRACTION,
    DEFAULT_TIE_SIGMAS,
    tie_lr,
    tied,
)

#: This round of issue 18 (each development job records the round it was measured in).
ROUND = 5
#: Probe lengths measured at every grid LR, as fractions of the run's updates.
FRACTIONS = (0.05, 0.075, 0.15)
#: Longer probes, measured only on the development jobs whose default probes learned nothing (every one at the
#: majority class's share): do probes this long see what a run only learns late?
ESCALATION = 0.3
#: The verification budget: every variant's probes together take at most this share of the run's updates.
MAX_COST = 0.15
#: A variant: (name, candidate LRs from a job's estimates, probe fraction, metric, rule). The rule "best" keeps
#: the best probe; when the best is ahead of the runner-up by no more than z binomial standard errors (a tie,
#: ``superconv.finder.verify.tied``), "between z" takes the geometric mean of the two, "lower z" the lower,
#: "suggestion z" the one nearer the range test's suggestion (the curve's own estimate).
Variant = tuple[str, Callable[[dict[str, float]], list[float]], float, str, str]
#: The rules compared (the tie rules apply to accuracy only: a loss has no binomial standard error).
RULES = ("best", "between 1", "between 2", "lower 1", "lower 2", "suggestion 1", "suggestion 2")


def _sets() -> dict[str, tuple[Callable[[dict[str, float]], list[float]], float]]:
    """Candidate sets (from the estimates ``e``) and their probe length (the most the budget allows)."""
    m = "minimum"
    return {
        "s/3, s": (lambda e: [e[m] / 3, e[m]], 0.075),
        "s/2, s": (lambda e: [e[m] / 2, e[m]], 0.075),
        "s/3, s, 3s": (lambda e: [e[m] / 3, e[m], 3 * e[m]], 0.05),
        "s/2, s, 2s": (lambda e: [e[m] / 2, e[m], 2 * e[m]], 0.05),
        "descent, s": (lambda e: [e["descent"], e[m]], 0.075),
        "geomean(steepest, s), s": (lambda e: [math.sqrt(e["steepest"] * e[m]), e[m]], 0.075),
        "tlrf, s": (lambda e: [e["tlrf"], e[m]], 0.075),
        "s/2, tlrf": (lambda e: [e[m] / 2, e["tlrf"]], 0.075),
        "s/2, s, tlrf": (lambda e: [e[m] / 2, e[m], e["tlrf"]], 0.05),
        "s/2, s, steepest": (lambda e: [e[m] / 2, e[m], e["steepest"]], 0.05),
        "s/2, tlrf (short)": (lambda e: [e[m] / 2, e["tlrf"]], 0.05),
        "s/2, s (short)": (lambda e: [e[m] / 2, e[m]], 0.05),
        "s, tlrf (short)": (lambda e: [e[m], e["tlrf"]], 0.05),
        "geomean(steepest, s), s (short)": (lambda e: [math.sqrt(e["steepest"] * e[m]), e[m]], 0.05),
    }


VARIANTS: tuple[Variant, ...] = tuple(
    (f"{name.replace(' (short)', '')}; {fraction:.1%} each; by {metric}" + ("" if rule == "best" else f"; {rule}"),
     cands, fraction, metric, rule)
    for name, (cands, fraction) in _sets().items()
    for metric in ("accuracy", "loss")
    for rule in RULES
    if metric == "accuracy" or rule == "best"
)  # fmt: skip
#: The variant superconv's defaults implement (``superconv.finder.verify``: the candidate set of
#: ``candidates.default_candidates``, the probe length, the metric and the tie rule); the dev phase must choose it.
LIBRARY_DEFAULT = f"s/2, tlrf; {DEFAULT_PROBE_FRACTION:.1%} each; by {DEFAULT_METRIC}" + (
    f"; {DEFAULT_ON_TIE} {DEFAULT_TIE_SIGMAS:g}" if DEFAULT_ON_TIE != "best" else ""
)
#: Fallback estimators (no verification) compared on the development workloads.
FALLBACKS: dict[str, Callable[[dict[str, float]], float]] = {
    "minimum (superconv default)": lambda e: e["minimum"],
    "steepest (lag-free curve)": lambda e: e["steepest"],
    "tlrf (torch-lr-finder's, same sweep)": lambda e: e["tlrf"],
    "descent": lambda e: e["descent"],
    "geomean(steepest, minimum)": lambda e: math.sqrt(e["steepest"] * e["minimum"]),
    "geomean(tlrf, minimum)": lambda e: math.sqrt(e["tlrf"] * e["minimum"]),
    "geomean(descent, minimum)": lambda e: math.sqrt(e["descent"] * e["minimum"]),
    "geomean(minimum / 2, tlrf)": lambda e: math.sqrt(e["minimum"] / 2 * e["tlrf"]),
    "0.7 x minimum": lambda e: 0.7 * e["minimum"],
    "1.4 x minimum": lambda e: 1.4 * e["minimum"],
}

# --------------------------------------------------------------------------------------------- measuring


def fine_grid(low: float) -> list[float]:
    """13 LRs a quarter decade apart from ``low``: the 7-point grid and the points between."""
    return [float(f"{10 ** (math.log10(low) + k / 4):.4g}") for k in range(13)]


def dev_job(name: str, seed: int) -> dict[str, Any]:
    """The range test, full runs and probes on the fine grid for one development workload and seed.

    Above two LRs in a row whose full runs diverged (or ended below 30% validation accuracy) after a lower LR's run
    had reached 30%, the grid is not trained further: every higher LR is recorded as diverged.
    """
    w, data, init, t0 = start(name, seed)
    train = data[0]
    result, _, _ = range_test(w, init, train, seed)
    steps = w.run_steps(train)
    full: dict[str, Any] = {}
    probes: dict[str, dict[str, Any]] = {f"{f:g}": {} for f in FRACTIONS}
    dead, learned = 0, False
    for lr in fine_grid(w.grid[0]):
        k = f"{lr:.4g}"
        if dead >= 2:
            full[k] = {"val": 0.0, "val_loss": None, "test": 0.0, "diverged": True, "skipped": True}
            continue
        full[k] = one_cycle(w, init, data, seed, lr)
        failed = full[k]["diverged"] or full[k]["val"] < 30
        learned = learned or not failed
        dead = dead + 1 if failed and learned else 0
        for f in FRACTIONS:
            probes[f"{f:g}"][k] = one_cycle(w, init, data, seed, lr, max(10, round(f * steps)))
    return {"workload": name, "role": w.role, "seed": seed, "run_steps": steps, "full": full, "probes": probes,
            "range_test": result.to_dict(), "tlrf_own_sweep": torch_lr_finder_steepest(w, init, train, seed),
            "seconds": time.perf_counter() - t0, "round": ROUND}  # fmt: skip


def top_up(name: str, seed: int, fraction: float) -> dict[str, Any]:
    """Probes of ``fraction`` of the run at every fine-grid LR of a development job (those its grid trained), from
    the job's initial weights and batch order: ``{"workload", "seed", "fraction", "probes", "seconds"}``."""
    w, data, init, t0 = start(name, seed)
    steps = max(10, round(fraction * w.run_steps(data[0])))
    probes = {f"{lr:.4g}": one_cycle(w, init, data, seed, lr, steps) for lr in fine_grid(w.grid[0])}
    return {"workload": name, "seed": seed, "fraction": fraction, "probes": probes, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------- reading


@functools.cache
def majority_share(name: str) -> float:
    """The most frequent class's share (percent) of the workload's validation labels."""
    labels = WORKLOADS[name].data()[1][1]
    return 100.0 * int(torch.bincount(labels).max()) / len(labels)


def learned_nothing(job: dict[str, Any], variant: Variant) -> bool:
    """Whether a variant's probes (its candidates, its probe length) were all at chance on this job, as
    ``superconv.finder.verify`` judges it (``confidence.at_chance``)."""
    accs = [at(job, f"{variant[2]:g}/accuracy", lr) for lr in merged(variant[1](estimates(job)))]
    return all(at_chance(a, majority_share(job["workload"]), val_size(job["workload"])) for a in accs)


def variant_named(name: str) -> Variant:
    return next(v for v in VARIANTS if v[0] == name)


def escalated(variant: Variant) -> Variant:
    """The variant that, when its probes learned nothing, probes the same candidates again for
    :data:`ESCALATION` of the run each and chooses by those."""
    name, candidates, fraction, metric, rule = variant
    return (f"{name}; {ESCALATION:.0%} when they learned nothing", candidates, fraction, metric, rule)


def pick_escalated(job: dict[str, Any], variant: Variant) -> float:
    """:func:`pick` for :func:`escalated` variants (the longer probes must have been measured for the job)."""
    if not learned_nothing(job, variant):
        return pick(job, variant)
    name, candidates, _, metric, rule = variant
    return pick(job, (name, candidates, ESCALATION, metric, rule))


def merged(lrs: list[float]) -> list[float]:
    """Candidates increasing, those closer than 15% probed once (the lower kept), as ``default_candidates``."""
    out: list[float] = []
    for lr in sorted(lrs):
        if not out or lr / out[-1] > 1.15:
            out.append(lr)
    return out


def estimates(job: dict[str, Any]) -> dict[str, float]:
    """Every estimator's LR for the job: superconv's (re-read from the raw curve) and torch-lr-finder's."""
    result = RangeTestResult.from_dict(job["range_test"])
    out = dict(suggest.analyze(result.lrs, result.losses, result.smooth_f, stopped_early=result.diverged).estimates)
    out["tlrf"] = lagged_steepest(result) or out["minimum"]
    return out


def _grid(job: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    keys = list(job["full"])
    log_lrs = np.log10([float(k) for k in keys])
    cols: dict[str, np.ndarray] = {
        "val": np.array([job["full"][k]["val"] for k in keys]),
        "test": np.array([job["full"][k]["test"] or 0.0 for k in keys]),
    }
    for f, probes in job["probes"].items():
        losses = [probes[k]["val_loss"] if k in probes and probes[k]["val_loss"] is not None else 10.0 for k in keys]
        cols[f"{f}/loss"] = np.minimum(np.array(losses), 10.0)  # diverged probes: a loss of 10
        cols[f"{f}/accuracy"] = np.array([probes[k]["val"] if k in probes else 0.0 for k in keys])
    return log_lrs, cols


def at(job: dict[str, Any], column: str, lr: float) -> float:
    """``column`` (e.g. "val", "0.075/loss") at ``lr``, interpolated linearly on the log-LR grid."""
    log_lrs, cols = _grid(job)
    return float(np.interp(math.log10(lr), log_lrs, cols[column]))


def grid_best(job: dict[str, Any], split: str = "val") -> float:
    """The best accuracy of the 7-point grid (every other fine-grid point), the reference every gap is to."""
    return float(max(_grid(job)[1][split][::2]))


@functools.cache
def val_size(name: str) -> int:
    """How many validation examples the workload's probes are measured on."""
    return int(WORKLOADS[name].data()[1][1].numel())


def pick(job: dict[str, Any], variant: Variant) -> float:
    """The LR a verification variant picks on a job (candidates closer than 15% are probed once)."""
    _, candidates, fraction, metric, rule = variant
    lrs = merged(candidates(estimates(job)))
    values = [at(job, f"{fraction:g}/{metric}", lr) for lr in lrs]
    losses = [at(job, f"{fraction:g}/loss", lr) for lr in lrs]
    # as superconv.finder.verify.choose: the best accuracy, ties broken by the lower loss (or the lowest loss)
    order = sorted(range(len(lrs)), key=lambda i: (-values[i], losses[i]) if metric == "accuracy" else losses[i])
    b = order[0]
    if rule == "best" or len(lrs) < 2:
        return lrs[b]
    kind, sigmas = rule.split()
    level = [i for i in order[1:] if tied(values[b], values[i], val_size(job["workload"]), float(sigmas))]
    if not level:
        return lrs[b]
    if kind == "lower":
        return min(lrs[i] for i in [b, *level])
    return tie_lr([lrs[i] for i in [b, *level]], estimates(job)["minimum"], kind)


def gap(job: dict[str, Any], lr: float, split: str = "val") -> float:
    """Points of ``split`` accuracy lost by training at ``lr`` instead of the 7-point grid's best."""
    return grid_best(job, split) - at(job, split, lr)


def by_workload(jobs: list[dict[str, Any]], lr_of: Callable[[dict[str, Any]], float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for job in sorted(jobs, key=lambda j: (j["workload"], j["seed"])):
        out.setdefault(job["workload"], []).append(gap(job, lr_of(job)))
    return out


def objective(per_workload: dict[str, list[float]]) -> float:
    """What the choice minimizes: over workloads, the mean of (mean gap + max gap) / 2 (the worst seed counts)."""
    return float(np.mean([(np.mean(g) + max(g)) / 2 for g in per_workload.values()]))


def choose_variant(jobs: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The variant with the lowest objective on the development jobs' validation accuracy, and every score."""
    scores = {v[0]: objective(by_workload(jobs, picker(v))) for v in VARIANTS}
    return min(scores, key=lambda n: scores[n]), scores


def picker(variant: Variant) -> Callable[[dict[str, Any]], float]:
    """``job -> the LR the variant picks`` (:func:`pick`)."""

    def lr_of(job: dict[str, Any]) -> float:
        return pick(job, variant)

    return lr_of


def horizon_bias(job: dict[str, Any], fraction: str) -> tuple[float, float, float]:
    """Probes of ``fraction`` at every grid LR against the full runs: (decades from the full runs' best to the
    probes' best, validation points lost by training at the probes' best, Spearman correlation of the probes'
    and the full runs' validation accuracy over the LRs whose full run reached half the best)."""
    log_lrs, cols = _grid(job)
    full, short = cols["val"], cols[f"{fraction}/accuracy"]
    i_full, i_short = int(np.argmax(full)), int(np.argmax(short))
    sane = full >= 0.5 * full.max()
    rho = float(spearmanr(short[sane], full[sane]).correlation)
    return float(log_lrs[i_short] - log_lrs[i_full]), float(full[i_full] - full[i_short]), rho
