"""Which LR suggestion can you trust? Measured the way users feel it, on workloads the methods were NOT tuned on.

Protocol (round 4 of issue 18; numbers in ``benchmarks/results/lr_suggestion.md``, earlier rounds in
``lr_suggestion_round2.md`` and ``lr_suggestion_round3.md``):

1. Workloads (``_suggestion_workloads.py``): a DEVELOPMENT set (every earlier round's workloads, all seen by now)
   and a HELD-OUT set of new ones (other model families and tasks, AdamW and SGD), written before any was run.
   Each has train / validation / test data; 3 seeds (initial weights, batch order).
2. Development phase (``_suggestion_design.py``): full one-cycle runs and short probes on a quarter-decade LR
   grid, superconv's range-test curve and torch-lr-finder's suggestion; the jobs an earlier round measured are
   reused (each records its round). Every candidate estimator and every verification variant (candidate set,
   probe length, metric, tie rule; probes at most 15% of the run) is scored on it by VALIDATION accuracy, the
   short-horizon bias of the probes is measured, and one variant is chosen by a fixed objective. superconv's
   defaults (``superconv.finder.verify``) implement it; the phase stops if they do not.
3. Held-out phase, run once with everything frozen: superconv's range test; its default suggestion; its verified
   suggestion (``verify(...)`` with its defaults, the very call a user makes); torch-lr-finder's steepest gradient
   (its own sweep); fastai's ``valley`` (reimplemented line by line from fastai 2.7, not installed); a 7-point
   log grid half a decade apart. Every LR is trained with the same one-cycle run (superconv.OneCycleLR, torch's
   shape, div_factor 25) and scored by TEST accuracy: the gap, in points, to the grid's best (mean / max over
   seeds), and the verification's wall time as a share of the run it prepares.

Run: ``PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/lr_suggestion.py --phase dev`` (then ``--phase
held-out``; ``--phase report`` re-renders the markdown). Writes ``benchmarks/results/lr_suggestion.json`` after
every job, and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _suggestion_design as design
from _machine import machine_info
from _suggestion_report import BEST_PROBE, markdown
from _suggestion_runs import fastai_valley, one_cycle, range_test, start, torch_lr_finder_steepest
from _suggestion_workloads import WORKLOADS
from superconv.files import write_json, write_text
from superconv.finder.verify import curve_confidence, verify

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "lr_suggestion"
SEEDS = (0, 1, 2)
#: A reference, not a method: 7 full runs, the best by validation accuracy (its test gap is the noise floor).
REFERENCE = "grid searched by validation (7 runs)"
METHODS = ("superconv default", "superconv verified", BEST_PROBE, "torch-lr-finder steepest", "fastai valley (reimpl.)",
           REFERENCE)  # fmt: skip
#: Rough cost of one job of each workload (for the order the pool takes them in: longest first).
COST = {"fmnist-cnn-gap-adamw": 5, "fmnist32-vgg-crops-sgd": 4, "digits-mlp-sgd": 1, "fmnist-mlp-sgd": 1,
        "digits-mlp-dropout-adamw": 1, "fmnist-softmax-sgd": 1, "bigram-cnn1d-sgd": 1, "fmnist20-resnet-avg-sgd": 4,
        "tabular-mlp-bn-sgd": 1}  # fmt: skip


def key(lr: float) -> str:
    return f"{lr:.6g}"


def held_out_job(name: str, seed: int) -> dict[str, Any]:
    """Every method's LR for one held-out workload and seed, each (and the grid) trained in full."""
    w, data, init, t_start = start(name, seed)
    train, val, _ = data
    result, model, opt = range_test(w, init, train, seed)
    steps = w.run_steps(train)
    val_loader = [(val[0][i : i + 125], val[1][i : i + 125]) for i in range(0, len(val[1]), 125)]
    check = verify(model, opt, result, w.train_loader(train, seed), val_loader, criterion=w.criterion(),
                   run_steps=steps, val_batches=len(val_loader), schedule={"div_factor": 25.0})  # fmt: skip
    methods = {
        "superconv default": float(result.suggestion),
        "superconv verified": float(check.lr),
        BEST_PROBE: float(check.candidates[check.chosen].lr),
        "torch-lr-finder steepest": torch_lr_finder_steepest(w, init, train, seed),
        "fastai valley (reimpl.)": fastai_valley(w, init, train, seed),
    }
    job: dict[str, Any] = {"workload": name, "role": w.role, "seed": seed, "run_steps": steps, "runs": {},
                           "grid": [key(lr) for lr in w.grid], "methods": {m: key(lr) for m, lr in methods.items()},
                           "verification": check.to_dict(), "summary": check.summary()}  # fmt: skip
    for lr in [*w.grid, *methods.values()]:
        if key(lr) not in job["runs"]:
            job["runs"][key(lr)] = {"lr": lr, **one_cycle(w, init, data, seed, lr)}
    job["range_test"] = {"suggestion": result.suggestion, "quality": result.quality, "estimates": result.estimates,
                         "confidence": curve_confidence(result).to_dict(), "seconds": result.elapsed_s}  # fmt: skip
    job["seconds"] = time.perf_counter() - t_start
    return job


def run_jobs(names: list[str], fn: Callable[[str, int], dict[str, Any]], workers: int, report: dict[str, Any],
             phase: str, line: Callable[[dict[str, Any]], str]) -> None:  # fmt: skip
    """Run every (workload, seed) job of ``names`` that ``report[phase]`` does not hold yet on ``workers``
    processes; save the JSON after each."""
    report[phase] = [j for j in report.get(phase, []) if j["workload"] in names]
    done = {(j["workload"], j["seed"]) for j in report[phase]}
    todo = [(n, s) for n in names for s in SEEDS if (n, s) not in done]
    jobs = sorted(todo, key=lambda j: -COST.get(j[0], 3))
    with mp.get_context("spawn").Pool(workers) as pool:
        for job in pool.imap_unordered(_star, [(fn, *j) for j in jobs]):
            report[phase].append(job)
            print(f"{job['workload']} seed {job['seed']}: {line(job)}  [{job['seconds']:.0f}s]", flush=True)
            write_json(OUT.with_suffix(".json"), report)


def run_top_ups(report: dict[str, Any], variant: design.Variant, workers: int) -> None:
    """Probes of ``design.ESCALATION`` of the run for the development jobs whose ``variant`` probes learned nothing."""
    key_ = f"{design.ESCALATION:g}"
    jobs = {(j["workload"], j["seed"]): j for j in report["dev"]}
    todo = [k for k, j in jobs.items() if key_ not in j["probes"] and design.learned_nothing(j, variant)]
    with mp.get_context("spawn").Pool(workers) as pool:
        for extra in pool.imap_unordered(_top_up, todo):
            jobs[(extra["workload"], extra["seed"])]["probes"][key_] = extra["probes"]
            print(f"{extra['workload']} seed {extra['seed']}: probes of {key_} [{extra['seconds']:.0f}s]", flush=True)
            write_json(OUT.with_suffix(".json"), report)


def _top_up(job: tuple[str, int]) -> dict[str, Any]:
    return design.top_up(*job, design.ESCALATION)


def _star(args: tuple[Any, ...]) -> dict[str, Any]:
    fn, name, seed = args
    return fn(name, seed)


def _dev_line(job: dict[str, Any]) -> str:
    e = design.estimates(job)
    return f"grid best (val) {design.grid_best(job):.2f}%; minimum {e['minimum']:.3g}, tlrf {e['tlrf']:.3g}"


def _held_line(job: dict[str, Any]) -> str:
    best = max((job["runs"][k] for k in job["grid"]), key=lambda r: r["test"])
    runs = job["runs"]
    picks = "; ".join(f"{m} {runs[k]['lr']:.2g} -> {runs[k]['test']:.2f}" for m, k in job["methods"].items())
    return f"grid best (test) {best['test']:.2f}% @ {best['lr']:.3g}; {picks}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("dev", "held-out", "report"), required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="dev: measure every job again (default: keep the "
        "development jobs the JSON already holds, e.g. an earlier round's, and measure the rest)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    path = OUT.with_suffix(".json")
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    t0 = time.perf_counter()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.phase == "dev":
        kept = [] if args.fresh else [j for j in report.get("dev", []) if WORKLOADS[j["workload"]].role == "dev"]
        if kept and len(kept) == len(SEEDS) * sum(w.role == "dev" for w in WORKLOADS.values()):
            print("every development job is measured: choosing again from them")
            report["dev"] = kept
        else:
            report = {"machine": machine_info() | {"torch_threads": 1, "workers": args.workers}, "dev": kept,
                      "seeds": list(SEEDS), "load_start_dev": load}  # fmt: skip
        dev = [n for n, w in WORKLOADS.items() if w.role == "dev"]
        run_jobs(dev, design.dev_job, args.workers, report, "dev", _dev_line)
        chosen, scores = design.choose_variant(report["dev"])
        run_top_ups(report, design.variant_named(chosen), args.workers)
        plain, longer = design.variant_named(chosen), design.escalated(design.variant_named(chosen))
        report["escalation"] = {
            "plain": design.objective(design.by_workload(report["dev"], design.picker(plain))),
            "escalated": design.objective(design.by_workload(report["dev"], lambda j: design.pick_escalated(j, plain))),
            "jobs": sum(design.learned_nothing(j, plain) for j in report["dev"]),
            "name": longer[0],
        }
        measured = [j for j in report["dev"] if j.get("round") == design.ROUND]
        report |= {"chosen_variant": chosen, "variant_scores": scores,
                   "dev_seconds": sum(j["seconds"] for j in measured) / args.workers}  # fmt: skip
        write_json(path, report)
        if chosen != design.LIBRARY_DEFAULT:
            raise SystemExit(
                f"the development phase chose {chosen!r}, superconv's defaults implement "
                f"{design.LIBRARY_DEFAULT!r}: update superconv.finder.verify before the held-out phase"
            )
    if args.phase == "held-out":
        if not any(w.role == "held-out" for w in WORKLOADS.values()):
            raise SystemExit("no held-out workloads: a new round needs new ones, written before any is run")
        if report.get("chosen_variant") != design.LIBRARY_DEFAULT:
            raise SystemExit("run --phase dev first: the held-out phase runs the variant chosen there")
        report["load_start_held_out"] = load
        held = [n for n, w in WORKLOADS.items() if w.role == "held-out"]
        run_jobs(held, held_out_job, args.workers, report, "held_out", _held_line)
        report["held_out_seconds"] = time.perf_counter() - t0
        write_json(path, report)
    md = markdown(report, METHODS, REFERENCE)
    write_text(OUT.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
