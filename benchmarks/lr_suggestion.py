"""Which LR suggestion can you trust? Measured the way users feel it, on workloads the methods were NOT tuned on.

Protocol (see ``benchmarks/results/lr_suggestion.md`` for the numbers):

1. Workloads (``_suggestion_workloads.py``) are split into a DEVELOPMENT set and a HELD-OUT set (different
   model families, AdamW and SGD, image and sequence tasks). Each has train / validation / test data.
2. For each workload and seed (3 seeds: initial weights and batch order), from the same initial weights:
   superconv's range test; each method's LR: superconv's default suggestion, superconv's verified suggestion
   (``superconv.finder.verify``: short one-cycle probes chosen by validation), torch-lr-finder's steepest
   gradient (its own sweep, suggested as its ``plot(suggest_lr=True)`` does), fastai's ``valley``
   (REIMPLEMENTED here line by line from fastai 2.7: its sweep, its smoothing, its slice and valley; fastai is
   not installed); and a 7-point log grid (half a decade apart). Every LR is trained with the same one-cycle run
   (superconv.OneCycleLR, torch's shape) and scored by its validation and test accuracy.
3. Design (development workloads only): the verification's settings (probe length, selection metric) are
   chosen by the mean gap in VALIDATION accuracy to the grid's best; the short-horizon bias of probes is
   measured there (the probes' best grid LR against the full runs' best).
4. Held-out workloads are run once, after the choice, with the choice frozen; the table reports the gap in
   TEST accuracy points to the grid's best (mean / max over seeds), and the time verification adds as a share
   of the run it prepares.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/lr_suggestion.py`` (39 minutes measured on 2 cores that other
work kept busy, load average 6-9; ``--phase dev``, then ``--phase held-out``, for one half at a time; ``--phase
report`` re-renders the markdown). Writes ``benchmarks/results/lr_suggestion.json`` (after every job) and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing as mp
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from _machine import machine_info
from _suggestion_workloads import WORKLOADS, Split, Workload
from superconv.files import write_json, write_text
from superconv.finder.lr_finder import LRFinder
from superconv.finder.probe import ProbeOutcome
from superconv.finder.verify import choose, curve_confidence, verify
from superconv.schedule.scheduler import OneCycleLR

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "lr_suggestion"
SEEDS = (0, 1, 2)
START_LR, END_LR, NUM_ITER = 1e-7, 10.0, 100
#: A verification setting: (each probe's fraction of the run, the metric that chooses, candidates (below, above)).
Variant = tuple[float, str, tuple[int, int]]
#: The verification variants tried on the development workloads.
VARIANTS: tuple[Variant, ...] = tuple(
    (f, m, span) for f in (0.03, 0.05) for m in ("loss", "accuracy") for span in ((1, 1), (1, 0))
)
#: Probe lengths (fractions of the run) at which the short-horizon bias is measured on the dev workloads.
HORIZONS = (0.05, 0.15)
#: A reference, not a method: 7 full runs, the best by validation accuracy (its test gap is the noise floor).
REFERENCE = "grid searched by validation (7 runs)"
METHODS = ("superconv default", "superconv verified", "torch-lr-finder steepest", "fastai valley (reimpl.)", REFERENCE)

# --------------------------------------------------------------------------------------------- training


def accuracy(model: nn.Module, split: Split) -> float:
    model.eval()
    x, y = split
    with torch.no_grad():
        correct = sum(int((model(x[i : i + 1000]).argmax(-1) == y[i : i + 1000]).sum()) for i in range(0, len(x), 1000))
    return 100.0 * correct / len(x)


def fresh(w: Workload, init: dict[str, torch.Tensor]) -> nn.Module:
    model = w.model()
    model.load_state_dict(init)
    return model


def one_cycle(w: Workload, init: dict[str, torch.Tensor], data: tuple[Split, ...], seed: int, lr: float,
              steps: int | None = None) -> dict[str, float]:  # fmt: skip
    """A one-cycle run (``steps`` updates, default the workload's run) from ``init``: validation and test accuracy."""
    train, val, test = data
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), lr)
    total = steps or w.run_steps(train)
    sched = OneCycleLR(opt, max_lr=lr, total_steps=total, div_factor=25.0)
    crit = nn.CrossEntropyLoss()
    model.train()
    done = 0
    loader = w.train_loader(train, seed)
    while done < total:
        for x, y in loader:
            loss = crit(model(x), y)
            if not torch.isfinite(loss):
                done = total  # diverged: the weights are what they are
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done == total:
                break
    return {"val": accuracy(model, val), "test": accuracy(model, test), "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------- methods


def range_test(w: Workload, init: dict[str, torch.Tensor], train: Split, seed: int) -> tuple[Any, nn.Module, Any]:
    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), START_LR)
    result = LRFinder(model, opt, nn.CrossEntropyLoss()).range_test(
        w.train_loader(train, seed), start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER, progress=False
    )
    return result, model, opt


def torch_lr_finder_steepest(w: Workload, init: dict[str, torch.Tensor], train: Split, seed: int) -> float:
    """torch-lr-finder's own sweep, and the LR its ``plot(suggest_lr=True)`` returns (computed without a plot)."""
    from torch_lr_finder import LRFinder as TLRFinder

    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), START_LR)
    finder = TLRFinder(model, opt, nn.CrossEntropyLoss(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(w.train_loader(train, seed), end_lr=END_LR, num_iter=NUM_ITER)
    # torch_lr_finder.LRFinder.plot: skip_start=10, skip_end=5, then np.gradient(losses).argmin()
    lrs, losses = finder.history["lr"][10:-5], finder.history["loss"][10:-5]
    return float(lrs[int(np.gradient(np.array(losses)).argmin())])


def fastai_valley(w: Workload, init: dict[str, torch.Tensor], train: Split, seed: int) -> float:
    """fastai 2.7's ``Learner.lr_find(suggest_funcs=(valley,))``, reimplemented (fastai is not installed).

    Its LRFinder callback: ``lr = start * (end / start) ** (i / num_it)`` for batches i = 0..num_it-1; the
    Recorder keeps AvgSmoothLoss (``val = lerp(loss, val, 0.98)``, divided by ``1 - 0.98**count``); the sweep
    stops after recording a smoothed loss above 4x the best. ``lr_find`` slices ``[num_it // 10 : -5]``, cuts at
    the first NaN, and ``valley`` takes the longest decreasing run of losses (O(n^2) longest-decreasing
    subsequence) and returns the LR 1/3 + 1/6 of the way along it.
    """
    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), START_LR)
    crit = nn.CrossEntropyLoss()
    lrs: list[float] = []
    losses: list[float] = []
    val, count, best = 0.0, 0, math.inf
    loader = w.train_loader(train, seed)
    model.train()
    while len(lrs) < NUM_ITER:
        for x, y in loader:
            lr = START_LR * (END_LR / START_LR) ** (len(lrs) / NUM_ITER)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            val, count = 0.98 * val + 0.02 * float(loss), count + 1
            smooth = val / (1 - 0.98**count)
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            if smooth > 4 * best or len(lrs) >= NUM_ITER:
                break
        if losses and losses[-1] > 4 * best:
            break
    lrs, losses = lrs[NUM_ITER // 10 : -5], losses[NUM_ITER // 10 : -5]
    nan = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if nan:
        lrs, losses = lrs[: nan[0]], losses[: nan[0]]
    n = len(losses)
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


# --------------------------------------------------------------------------------------------- one job


def key(lr: float) -> str:
    return f"{lr:.6g}"


def run_job(name: str, seed: int, variants: list[Variant], horizons: tuple[float, ...]) -> dict[str, Any]:
    """Everything for one workload and seed; ``variants`` are the verification settings to try.

    The probes are run once per probe length with the widest span asked; narrower spans and the other metric
    are read off the same probes (:func:`variant_lr`). Every candidate is trained in full when there is more
    than one variant (development), so any variant can be scored.
    """
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    w = WORKLOADS[name]
    data = w.data()
    train, val, _ = data
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    init = {k: v.clone() for k, v in w.model().state_dict().items()}
    result, model, opt = range_test(w, init, train, seed)
    steps = w.run_steps(train)
    val_loader = [(val[0][i : i + 125], val[1][i : i + 125]) for i in range(0, len(val[1]), 125)]
    probes: dict[str, Any] = {}
    for fraction in sorted({v[0] for v in variants}):
        mine = [v for v in variants if v[0] == fraction]
        span = (max(v[2][0] for v in mine), max(v[2][1] for v in mine))
        # with one variant (held-out) this is exactly the call a user makes
        asked: Any = mine[0][1] if len(mine) == 1 else "accuracy"
        check = verify(model, opt, result, w.train_loader(train, seed), val_loader, criterion=nn.CrossEntropyLoss(),
                       run_steps=steps, probe_fraction=fraction, metric=asked, span=span, val_batches=len(val_loader),
                       schedule={"div_factor": 25.0})  # fmt: skip
        probes[f"{fraction:g}"] = {"asked": asked, "span": list(span), "verify_seconds": check.seconds,
                                   "summary": check.summary(), "confidence": check.confidence.to_dict(),
                                   "lr": check.lr, "candidates": [c.to_dict() for c in check.candidates]}  # fmt: skip
    methods = {
        "superconv default": float(result.suggestion),
        "torch-lr-finder steepest": torch_lr_finder_steepest(w, init, train, seed),
        "fastai valley (reimpl.)": fastai_valley(w, init, train, seed),
    }
    job: dict[str, Any] = {"workload": name, "role": w.role, "seed": seed, "run_steps": steps, "runs": {},
                           "grid": [key(lr) for lr in w.grid], "methods": {m: key(lr) for m, lr in methods.items()},
                           "probes": probes}  # fmt: skip
    wanted = [*w.grid, *methods.values()]
    for p in probes.values():
        wanted += [c["lr"] for c in p["candidates"]] if len(variants) > 1 else [p["lr"]]
    for lr in wanted:
        if key(lr) not in job["runs"]:
            job["runs"][key(lr)] = {"lr": lr, **one_cycle(w, init, data, seed, lr)}
    job["horizon"] = {f"{f:g}": {key(lr): one_cycle(w, init, data, seed, lr, max(10, round(f * steps)))["val"]
                                 for lr in w.grid} for f in horizons}  # fmt: skip
    job["range_test"] = {"suggestion": result.suggestion, "quality": result.quality, "estimates": result.estimates,
                         "confidence": curve_confidence(result).to_dict(), "seconds": result.elapsed_s}  # fmt: skip
    job["seconds"] = time.perf_counter() - t_start
    return job


# --------------------------------------------------------------------------------------------- analysis


def variant_lr(job: dict[str, Any], variant: Variant) -> float:
    """The LR a verification variant picks, read off the job's probes."""
    fraction, metric, (below, above) = variant
    p = job["probes"][f"{fraction:g}"]
    outcomes = [ProbeOutcome(**c) for c in p["candidates"]]
    centre = p["span"][0]  # the suggestion's index among the probed candidates
    kept = outcomes[centre - below : centre + above + 1]
    return kept[choose(kept, metric)[0]].lr  # type: ignore[arg-type]


def method_lrs(job: dict[str, Any], variant: Variant) -> dict[str, float]:
    lrs = {m: job["runs"][k]["lr"] for m, k in job["methods"].items()}
    lrs["superconv verified"] = variant_lr(job, variant)
    # the noise floor: the grid LR a full search would pick by validation accuracy, scored on test
    lrs[REFERENCE] = max((job["runs"][k] for k in job["grid"]), key=lambda r: r["val"])["lr"]
    return lrs


def gaps(job: dict[str, Any], variant: Variant, split: str) -> dict[str, float]:
    """Each method's gap (points) to the grid's best ``split`` ("val" or "test") accuracy."""
    best = max(job["runs"][k][split] for k in job["grid"])
    return {m: best - job["runs"][key(lr)][split] for m, lr in method_lrs(job, variant).items()}


def choose_variant(dev_jobs: list[dict[str, Any]]) -> Variant:
    """The verification setting with the lowest mean VALIDATION gap on the development jobs (ties: cheaper)."""

    def mean_gap(v: Variant) -> tuple[float, float]:
        return float(np.mean([gaps(j, v, "val")["superconv verified"] for j in dev_jobs])), v[0] * (sum(v[2]) + 1)

    return min(VARIANTS, key=mean_gap)


def horizon_bias(job: dict[str, Any], fraction: str) -> tuple[float, float]:
    """(log10 of the probes' best grid LR over the full runs' best, validation points lost by taking it)."""
    full = {job["runs"][k]["lr"]: job["runs"][k]["val"] for k in job["grid"]}
    short = {job["runs"][k]["lr"]: v for k, v in job["horizon"][fraction].items()}
    best_full, best_short = max(full, key=full.__getitem__), max(short, key=short.__getitem__)
    return math.log10(best_short / best_full), full[best_full] - full[best_short]


def _by_workload(jobs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(jobs, key=lambda j: (j["workload"], j["seed"])):
        out.setdefault(job["workload"], []).append(job)
    return out


def _cost(job: dict[str, Any], variant: Variant) -> float:
    """Verification's wall time over the one-cycle run at the LR it chose (held-out: the very call measured)."""
    p = job["probes"][f"{variant[0]:g}"]
    share = (sum(variant[2]) + 1) / len(p["candidates"])  # development: a narrower span reads fewer probes
    return share * p["verify_seconds"] / job["runs"][key(variant_lr(job, variant))]["seconds"]


def gap_table(jobs: list[dict[str, Any]], variant: Variant, split: str, targets: bool) -> list[str]:
    """Mean / max gap (points) per workload and method, in ``split`` ("val" or "test") accuracy."""
    lines = ["| workload | optimizer | grid best | " + " | ".join(METHODS) + " | verification cost |",
             "|---" * (len(METHODS) + 4) + "|"]  # fmt: skip
    verdicts = []
    for name, group in _by_workload(jobs).items():
        w = WORKLOADS[name]
        per = {m: [gaps(j, variant, split)[m] for j in group] for m in METHODS}
        best = np.mean([max(j["runs"][k][split] for k in j["grid"]) for j in group])
        cost = np.mean([_cost(j, variant) for j in group])
        cells = [f"{np.mean(g):.2f} / {max(g):.2f}" for g in per.values()]
        lines.append(f"| {name} ({w.family}) | {w.optimizer} | {best:.2f}% | " + " | ".join(cells) + f" | {cost:.0%} |")
        v, st = per["superconv verified"], per["torch-lr-finder steepest"]
        ok = np.mean(v) <= 0.3 and max(v) <= 0.5 and np.mean(v) < np.mean(st)
        verdicts.append(f"- {name}: mean {np.mean(v):.2f} (<= 0.3: {'yes' if np.mean(v) <= 0.3 else 'no'}), max "
                        f"{max(v):.2f} (<= 0.5: {'yes' if max(v) <= 0.5 else 'no'}), below steepest's mean "
                        f"{np.mean(st):.2f}: {'yes' if np.mean(v) < np.mean(st) else 'no'} -> "
                        f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return lines + (["", "Targets (issue 18) for superconv verified:", "", *verdicts] if targets else [])


def variants_table(dev: list[dict[str, Any]]) -> list[str]:
    names = [f"{f:.0%}, {m}, {'s/3..3s' if span == (1, 1) else 's/3, s'}" for f, m, span in VARIANTS]
    lines = ["| workload | " + " | ".join(names) + " |", "|---" * (len(VARIANTS) + 1) + "|"]
    for name, group in _by_workload(dev).items():
        cells = [f"{np.mean([gaps(j, v, 'val')['superconv verified'] for j in group]):.2f}" for v in VARIANTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [f"{np.mean([gaps(j, v, 'val')['superconv verified'] for j in dev]):.2f}" for v in VARIANTS]
    return [*lines, "| **mean** | " + " | ".join(means) + " |"]


def horizon_table(dev: list[dict[str, Any]]) -> list[str]:
    lines = ["| workload | " + " | ".join(f"probes of {f:.0%}: shift (decades) / val points lost" for f in HORIZONS)
             + " |", "|---" * (len(HORIZONS) + 1) + "|"]  # fmt: skip
    for name, group in _by_workload(dev).items():
        cells = []
        for f in HORIZONS:
            pairs = [horizon_bias(j, f"{f:g}") for j in group]
            cells.append(f"{np.mean([p[0] for p in pairs]):+.2f} / {np.mean([p[1] for p in pairs]):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def jobs_table(jobs: list[dict[str, Any]], variant: Variant) -> list[str]:
    lines = ["| workload | seed | grid best (test) | " + " | ".join(METHODS) + " | confidence: curve; verified |",
             "|---" * (len(METHODS) + 4) + "|"]  # fmt: skip
    for job in jobs:
        best = max((job["runs"][k] for k in job["grid"]), key=lambda r: r["test"])
        lrs = method_lrs(job, variant)
        cells = [f"{lrs[m]:.2g} -> {job['runs'][key(lrs[m])]['test']:.2f}" for m in METHODS]
        probes = job["probes"][f"{variant[0]:g}"]
        verified = probes["confidence"]["level"] if len(job["probes"]) == 1 else "n/a"
        lines.append(f"| {job['workload']} | {job['seed']} | {best['test']:.2f} @ {best['lr']:.3g} | "
                     + " | ".join(cells) + f" | {job['range_test']['confidence']['level']}; {verified} |")  # fmt: skip
    return lines


def confidence_table(dev: list[dict[str, Any]], held: list[dict[str, Any]], variant: Variant) -> list[str]:
    """Does the confidence mean anything? The mean test gap of the suggestions it grades, by level."""
    lines = ["| confidence | superconv default: jobs, mean / max test gap | superconv verified (held-out): jobs, "
             "mean / max test gap |", "|---|---|---|"]  # fmt: skip
    for level in ("high", "medium", "low"):
        cells = []
        for jobs, method, source in ((dev + held, "superconv default", "curve"), (held, "superconv verified", "v")):
            sel = [gaps(j, variant, "test")[method] for j in jobs
                   if (j["range_test"]["confidence"] if source == "curve"
                       else j["probes"][f"{variant[0]:g}"]["confidence"])["level"] == level]  # fmt: skip
            cells.append(f"{len(sel)}, {np.mean(sel):.2f} / {max(sel):.2f}" if sel else "0")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    variant = as_variant(report["chosen_variant"])
    dev, held = report.get("dev", []), report.get("held_out", [])
    fraction, metric, span = variant
    lines = [
        "# Which LR suggestion can you trust? Development vs held-out workloads",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('workers', 1)} worker processes with 1 torch thread "
        f"each; torch {m['torch']}, Python {m['python']}. Development phase {report.get('dev_seconds', 0) / 60:.1f} "
        f"min, held-out phase {report.get('held_out_seconds', 0) / 60:.1f} min; load average at the start "
        f"{report.get('load_start', 'n/a')} (other sessions' work shared the 2 cores).",
        "",
        "Protocol: every LR is trained with the same one-cycle run (superconv.OneCycleLR, torch's shape, "
        "div_factor 25) from the same initial weights and batch order; a method's gap is the grid's best "
        "accuracy (7 LRs half a decade apart) minus the method's, in points, mean / max over 3 seeds. The "
        "verification's settings were chosen on the DEVELOPMENT workloads by validation accuracy; the HELD-OUT "
        "workloads were then run once with them frozen: "
        f"{sum(span) + 1} candidates ({'s/3, s, 3s' if span == (1, 1) else 's/3, s'} around superconv's "
        f"suggestion s), each probed for {fraction:.0%} of the run's updates, chosen by validation {metric}.",
        "'fastai valley (reimpl.)' is fastai 2.7's lr_find + valley reimplemented line by line (fastai is not "
        "installed); 'verification cost' is the probes' wall time over the one-cycle run they prepare. "
        f"'{REFERENCE}' is not a method but the noise floor: even the full grid search, choosing by validation, "
        "misses the test-best grid LR by this much.",
        "",
        "## Held-out workloads: gap in TEST accuracy (points), mean / max over seeds",
        "",
        *gap_table(held, variant, "test", targets=True),
        "",
        "## Development workloads: gap in VALIDATION accuracy (what the design looked at)",
        "",
        *gap_table(dev, variant, "val", targets=False),
        "",
        "Verification variants on the development workloads (mean validation gap; the lowest mean was chosen):",
        "",
        *variants_table(dev),
        "",
        "## Short-horizon bias (development workloads)",
        "",
        "Short one-cycle runs at every grid LR: how far (decades, + = higher) their best LR is from the full runs' "
        "best, and the validation points lost by training the full run at the short runs' best (mean over seeds).",
        "",
        *horizon_table(dev),
        "",
        "## Confidence against the gap it should predict",
        "",
        *confidence_table(dev, held, variant),
        "",
        "## Every job (test accuracy)",
        "",
        *jobs_table(held + dev, variant),
    ]
    return "\n".join(lines) + "\n"


def as_variant(value: Any) -> Variant:
    fraction, metric, span = value
    return float(fraction), str(metric), (int(span[0]), int(span[1]))


# --------------------------------------------------------------------------------------------- running


def run_jobs(names: list[str], variants: list[Variant], horizons: tuple[float, ...], workers: int,
             report: dict[str, Any], phase: str) -> None:  # fmt: skip
    """Run every (workload, seed) job of ``names`` on ``workers`` processes; save the JSON after each."""
    jobs = [(n, s, variants, horizons) for n in names for s in SEEDS]
    report[phase] = []
    with mp.get_context("spawn").Pool(workers) as pool:
        for job in pool.imap_unordered(_star_job, jobs):
            report[phase].append(job)
            best = max((job["runs"][k] for k in job["grid"]), key=lambda r: r["val"])
            picks = {f"{v[0]:g}/{v[1]}/{v[2]}": variant_lr(job, v) for v in variants}
            print(f"{job['workload']} seed {job['seed']}: grid best (val) {best['val']:.2f}% @ {best['lr']:.3g}; "
                  + "; ".join(f"{m} {job['runs'][k]['lr']:.2g} -> {job['runs'][k]['val']:.2f}"
                              for m, k in job["methods"].items())
                  + "; verified " + ", ".join(f"{n} {lr:.2g} -> {job['runs'][key(lr)]['val']:.2f}"
                                               for n, lr in picks.items())
                  + f"  [{job['seconds']:.0f}s]", flush=True)  # fmt: skip
            write_json(OUT.with_suffix(".json"), report)


def _star_job(args: tuple[Any, ...]) -> dict[str, Any]:
    return run_job(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("all", "dev", "held-out", "report"), default="all")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    path = OUT.with_suffix(".json")
    report: dict[str, Any] = json.loads(path.read_text()) if args.phase in ("held-out", "report") else {}
    t0 = time.perf_counter()
    if args.phase in ("all", "dev"):
        report = {"machine": machine_info() | {"torch_threads": 1, "workers": args.workers}, "seeds": list(SEEDS),
                  "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg())}  # fmt: skip
        dev = [n for n, w in WORKLOADS.items() if w.role == "dev"]
        run_jobs(dev, list(VARIANTS), HORIZONS, args.workers, report, "dev")
        report["chosen_variant"] = list(choose_variant(report["dev"]))
        report["dev_seconds"] = time.perf_counter() - t0
        write_json(path, report)
    if args.phase in ("all", "held-out"):
        if "chosen_variant" not in report:
            raise SystemExit("run --phase dev first: the held-out phase uses the variant chosen on it")
        t1 = time.perf_counter()
        held = [n for n, w in WORKLOADS.items() if w.role == "held-out"]
        run_jobs(held, [as_variant(report["chosen_variant"])], (), args.workers, report, "held_out")
        report["held_out_seconds"] = time.perf_counter() - t1
        write_json(path, report)
    md = markdown(report)
    write_text(OUT.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
