"""What issue 18's target measures: how far an ORACLE that knows the best LR misses "the grid's best test accuracy".

Issue 18 asks of an LR suggestion, on every held-out workload, a gap to the best of a 7-point LR grid (test accuracy,
3 seeds) of at most 0.3 points on average and 0.5 at most. The grid's best is the largest of seven noisy numbers,
and a suggestion trains one run at an LR between the grid's points: part of any gap is noise, whatever the LR.
This benchmark measures that part. For every workload of the suggestion benchmark (``_suggestion_workloads.py``)
and seed it trains the 7-point grid in full, exactly as ``lr_suggestion.py`` does (same initial weights, batch
order and one-cycle run), finds the grid LR with the best TEST accuracy, and trains full runs at that LR times and
divided by 1.05 and 1.25: oracles that know the test-best LR to within 5% and 25%, which no method can beat. Each
oracle's gap (grid best test minus its test, mean / max over seeds) is scored against the issue's target, as is
"grid searched by validation" (the 7 runs, the best by validation accuracy). Nothing is chosen here: no method is
designed or scored on these runs.

Run: ``PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/suggestion_noise_floor.py`` (``--workers 2``; a run
that was stopped continues with the jobs the JSON does not hold yet, on the same CPU; ``--fresh`` starts over).
Writes
``benchmarks/results/suggestion_noise_floor.json`` after every job, and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from _machine import machine_info
from _suggestion_runs import one_cycle, start
from _suggestion_workloads import WORKLOADS
from superconv.files import write_json, write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "suggestion_noise_floor"
SEEDS = (0, 1, 2)
#: Each oracle trains at the test-best grid LR times this factor.
ORACLES = {"x1.05": 1.05, "/1.05": 1 / 1.05, "x1.25": 1.25, "/1.25": 1 / 1.25}
VALIDATION = "grid by validation"
TARGET_MEAN, TARGET_MAX = 0.3, 0.5


def job(name: str, seed: int) -> dict[str, Any]:
    """The 7-point grid and the oracles' runs for one workload and seed."""
    w, data, init, t0 = start(name, seed)
    grid = {f"{lr:.6g}": {"lr": lr, **one_cycle(w, init, data, seed, lr)} for lr in w.grid}
    best = max(grid.values(), key=lambda r: r["test"])
    oracles = {k: {"lr": best["lr"] * f, **one_cycle(w, init, data, seed, best["lr"] * f)} for k, f in ORACLES.items()}
    return {"workload": name, "seed": seed, "grid": grid, "oracles": oracles, "seconds": time.perf_counter() - t0}


def gaps(j: dict[str, Any]) -> dict[str, float]:
    """Each oracle's and the validation search's gap (points) to the grid's best test accuracy."""
    grid = list(j["grid"].values())
    best = max(r["test"] for r in grid)
    out = {k: best - r["test"] for k, r in j["oracles"].items()}
    out[VALIDATION] = best - max(grid, key=lambda r: r["val"])["test"]
    return out


def meets(values: list[float]) -> bool:
    return bool(np.mean(values) <= TARGET_MEAN and max(values) <= TARGET_MAX)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    jobs = sorted(report["jobs"], key=lambda j: (j["workload"], j["seed"]))
    every_name = list(dict.fromkeys(j["workload"] for j in jobs))
    names = [n for n in every_name if WORKLOADS[n].role != "larger"]
    larger = [n for n in every_name if WORKLOADS[n].role == "larger"]
    columns = [*ORACLES, VALIDATION]
    per = {n: {c: [gaps(j)[c] for j in jobs if j["workload"] == n] for c in columns} for n in every_name}
    lines = [
        "# What issue 18's target measures: the gap of an oracle that knows the best LR",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {report['workers']} worker processes with 1 torch thread each; "
        f"torch {m['torch']}, Python {m['python']}; {report.get('seconds', 0) / 60:.0f} min (load average at the "
        f"start of each invocation: {report.get('load_start', 'n/a')}).",
        "",
        "For every workload of the suggestion benchmark and 3 seeds: the 7-point LR grid trained in full exactly as "
        "`lr_suggestion.py` trains it, then full runs at the grid's TEST-best LR times (x) or divided by (/) 1.05 "
        "and 1.25: oracles that know the test-best LR to within 5% or 25%. Gap = the grid's best test accuracy minus "
        "the run's, in points, mean / max over the 3 seeds; **bold**: issue 18's target met (mean <= "
        f"{TARGET_MEAN}, max <= {TARGET_MAX}). '{VALIDATION}': the 7 grid runs, the best by validation accuracy (a "
        "grid search at 7 times the run's cost; it can only pick a grid LR, so it can hit the grid's best exactly).",
        "",
        *_table(names, per, jobs, columns),
    ]
    met = {c: sum(meets(per[n][c]) for n in names) for c in columns}
    every = {c: [g for n in names for g in per[n][c]] for c in columns}
    lines.append("| **target met on** | | | | | " + " | ".join(f"{met[c]} of {len(names)}" for c in columns) + " |")
    lines.append("| **all jobs** | | | | | " + " | ".join(_mm(every[c]) for c in columns) + " |")
    near = [g for c in ("x1.05", "/1.05") for g in every[c]]
    both = {n: meets(per[n]["x1.05"]) and meets(per[n]["/1.05"]) for n in names}
    lines += [
        "",
        f"An LR within 5% of the test-best grid LR loses {np.mean(near):.2f} points on average "
        f"(median {np.median(near):.2f}, {np.mean(np.array(near) > TARGET_MAX):.0%} of its runs more than "
        f"{TARGET_MAX}): the grid's best is the largest of seven noisy runs, and a run at any other LR draws its own "
        "noise. A suggestion can meet the target only on the workloads where these oracles do.",
        "",
        f"Both 5% oracles meet the target on {sum(both.values())} of {len(names)} workloads; they miss it on "
        + ", ".join(f"{n} ({WORKLOADS[n].family})" for n, ok in both.items() if not ok)
        + ".",
        *_other_machine(jobs, m),
    ]
    if larger:
        lines += ["", "## Larger data", "", "Two of the families whose oracles missed, with about 5 times the "
                  "training data and 2-2.5 times the test examples (workloads with role 'larger': measured here only, "
                  "never used to design or score a method). Does the noise shrink with the data?", "",
                  *_table(larger, per, jobs, columns)]  # fmt: skip
    return "\n".join(lines) + "\n"


def _table(names: list[str], per: dict[str, dict[str, list[float]]], jobs: list[dict[str, Any]],
           columns: list[str]) -> list[str]:  # fmt: skip
    head = "| workload | family | optimizer | train / test examples | grid best (test) | "
    lines = [head + " | ".join(columns) + " |", "|---" * (len(columns) + 5) + "|"]
    for n in names:
        w = WORKLOADS[n]
        train, _, test = w.data()
        sizes = f"{train[1].numel()} / {test[1].numel()}"
        best = np.mean([max(r["test"] for r in j["grid"].values()) for j in jobs if j["workload"] == n])
        cells = [_cell(per[n][c]) for c in columns]
        lines.append(f"| {n} | {w.family} | {w.optimizer} | {sizes} | {best:.2f}% | " + " | ".join(cells) + " |")
    return lines


def _other_machine(jobs: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """The same grid runs as ``lr_suggestion.py``'s development jobs recorded them on another CPU, compared."""
    path = HERE / "results" / "lr_suggestion.json"
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    if stored.get("machine", {}).get("cpu") == machine["cpu"]:
        return []
    dev = {(j["workload"], j["seed"]): j for j in stored.get("dev", [])}
    diffs: dict[str, list[float]] = {}
    for j in jobs:
        other = dev.get((j["workload"], j["seed"]), {}).get("full", {})
        best = max(r["test"] for r in j["grid"].values())
        for r in j["grid"].values():
            o = other.get(f"{r['lr']:.4g}")
            if o and not o.get("skipped") and o.get("test") is not None and r["test"] > best - 3:
                diffs.setdefault(j["workload"], []).append(abs(o["test"] - r["test"]))
    flat = [d for v in diffs.values() for d in v]
    if not flat:
        return []
    resnets = [d for n, v in diffs.items() if "resnet" in n for d in v]
    return [
        "",
        f"The same runs on another CPU: `lr_suggestion.json` holds the development jobs' grid runs as measured on "
        f"{stored['machine']['cpu']} (same code, torch, seeds, initial weights and batch order). Of the {len(flat)} "
        f"grid runs within 3 points of their job's best, {sum(d == 0 for d in flat)} gave the same test accuracy here; "
        f"the others differ by float rounding that the training amplifies: |difference| median {np.median(flat):.2f}, "
        f"mean {np.mean(flat):.2f}, max {max(flat):.2f} points"
        + (f" (the ResNets: median {np.median(resnets):.2f}, max {max(resnets):.2f})" if resnets else "")
        + ". The same LR, run twice, moves by about the target's tolerance.",
    ]


def _mm(values: list[float]) -> str:
    return f"{np.mean(values):.2f} / {max(values):.2f}"


def _cell(values: list[float]) -> str:
    return f"**{_mm(values)}**" if meets(values) else _mm(values)


def _star(args: tuple[str, int]) -> dict[str, Any]:
    return job(*args)


def _measure(report: dict[str, Any], todo: list[tuple[str, int]], workers: int, path: Path) -> None:
    """Run the ``todo`` jobs on ``workers`` processes, adding each to ``report`` and saving it as it comes."""
    with mp.get_context("spawn").Pool(workers) as pool:
        for result in pool.imap_unordered(_star, todo):
            report["jobs"].append(result)
            g = gaps(result)
            print(f"{result['workload']} seed {result['seed']}: " + ", ".join(f"{k} {v:.2f}" for k, v in g.items())
                  + f"  [{result['seconds']:.0f}s]", flush=True)  # fmt: skip
            write_json(path, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), help="default: every workload")
    parser.add_argument("--report", action="store_true", help="only re-render the markdown from the JSON")
    parser.add_argument("--fresh", action="store_true", help="measure every job again (default: continue the JSON)")
    args = parser.parse_args()
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}: expected some of {sorted(WORKLOADS)}")
    path = OUT.with_suffix(".json")
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not args.report:
        here, there = machine_info()["cpu"], report.get("machine", {}).get("cpu")
        if report.get("jobs") and there != here and not args.fresh:
            raise SystemExit(f"{path} holds jobs measured on {there}, this is {here}: pass --fresh to measure "
                             "every job here (runs on two CPUs do not compare bit for bit)")  # fmt: skip
        if args.fresh:
            report = {}
        t0 = time.perf_counter()
        jobs = [j for j in report.get("jobs", []) if j["workload"] in WORKLOADS]
        done = {(j["workload"], j["seed"]) for j in jobs}
        todo = [(n, s) for n in args.workloads for s in SEEDS if (n, s) not in done]
        if todo:  # else the report stays as measured (its machine, workers and load)
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            report = {"machine": machine_info() | {"torch_threads": 1}, "workers": args.workers,
                      "load_start": "; ".join(filter(None, [report.get("load_start", "") if jobs else "", load])),
                      "seconds": report.get("seconds", 0.0) if jobs else 0.0, "jobs": jobs}  # fmt: skip
            _measure(report, todo, args.workers, path)
            report["seconds"] += time.perf_counter() - t0
            write_json(path, report)
    md = markdown(report)
    write_text(OUT.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
