"""The markdown report of ``lr_suggestion.py``: held-out results first, then the development phase that chose."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import _suggestion_design as design
from _suggestion_workloads import WORKLOADS

#: An ablation, not a method of its own: the verification's best probe, without the "between" rule.
BEST_PROBE = "verified, best probe only"


def _mm(gaps: list[float]) -> str:
    return f"{np.mean(gaps):.2f} / {max(gaps):.2f}"


def _by_workload(jobs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(jobs, key=lambda j: (j["workload"], j["seed"])):
        out.setdefault(job["workload"], []).append(job)
    return out


def held_out_gaps(job: dict[str, Any], methods: tuple[str, ...], reference: str) -> dict[str, float]:
    """Each method's gap (points) to the grid's best TEST accuracy on a held-out job."""
    runs = job["runs"]
    best = max(runs[k]["test"] for k in job["grid"])
    lrs = {m: runs[k]["lr"] for m, k in job["methods"].items()}
    lrs[reference] = max((runs[k] for k in job["grid"]), key=lambda r: r["val"])["lr"]
    return {m: best - runs[f"{lrs[m]:.6g}"]["test"] for m in methods}


def cost(job: dict[str, Any]) -> float:
    """The verification's wall time over the one-cycle run at the LR it chose."""
    lr = job["verification"]["lr"]
    return job["verification"]["seconds"] / job["runs"][f"{lr:.6g}"]["seconds"]


def held_out_table(held: list[dict[str, Any]], methods: tuple[str, ...], reference: str) -> list[str]:
    lines = ["| workload | optimizer | grid best (test) | " + " | ".join(methods) + " | verification cost |",
             "|---" * (len(methods) + 4) + "|"]  # fmt: skip
    verdicts = []
    for name, group in _by_workload(held).items():
        w = WORKLOADS[name]
        per = {m: [held_out_gaps(j, methods, reference)[m] for j in group] for m in methods}
        best = np.mean([max(j["runs"][k]["test"] for k in j["grid"]) for j in group])
        share = np.mean([cost(j) for j in group])
        lines.append(f"| {name} ({w.family}) | {w.optimizer} | {best:.2f}% | "
                     + " | ".join(_mm(g) for g in per.values()) + f" | {share:.0%} |")  # fmt: skip
        v, st = per["superconv verified"], per["torch-lr-finder steepest"]
        ok = np.mean(v) <= 0.3 and max(v) <= 0.5 and np.mean(v) < np.mean(st)
        verdicts.append(f"- {name}: mean {np.mean(v):.2f} (<= 0.3: {'yes' if np.mean(v) <= 0.3 else 'no'}), max "
                        f"{max(v):.2f} (<= 0.5: {'yes' if max(v) <= 0.5 else 'no'}), below steepest's mean "
                        f"{np.mean(st):.2f}: {'yes' if np.mean(v) < np.mean(st) else 'no'} -> "
                        f"{'met' if ok else 'NOT met'}")  # fmt: skip
    every = {m: [held_out_gaps(j, methods, reference)[m] for j in held] for m in methods}
    lines.append("| **all held-out jobs** | | | " + " | ".join(_mm(g) for g in every.values())
                 + f" | {np.mean([cost(j) for j in held]):.0%} |")  # fmt: skip
    return [*lines, "", "Targets (issue 18) for superconv verified:", "", *verdicts]


def held_out_jobs(held: list[dict[str, Any]], methods: tuple[str, ...], reference: str) -> list[str]:
    lines = ["| workload | seed | grid best (test) | " + " | ".join(methods) + " | confidence: curve; verified |",
             "|---" * (len(methods) + 4) + "|"]  # fmt: skip
    for job in sorted(held, key=lambda j: (j["workload"], j["seed"])):
        runs = job["runs"]
        best = max((runs[k] for k in job["grid"]), key=lambda r: r["test"])
        lrs = {m: runs[k]["lr"] for m, k in job["methods"].items()}
        lrs[reference] = max((runs[k] for k in job["grid"]), key=lambda r: r["val"])["lr"]
        cells = [f"{lrs[m]:.2g} -> {runs[f'{lrs[m]:.6g}']['test']:.2f}" for m in methods]
        lines.append(f"| {job['workload']} | {job['seed']} | {best['test']:.2f} @ {best['lr']:.3g} | "
                     + " | ".join(cells) + f" | {job['range_test']['confidence']['level']}; "
                     f"{job['verification']['confidence']['level']} |")  # fmt: skip
    return lines


def confidence_table(held: list[dict[str, Any]], methods: tuple[str, ...], reference: str) -> list[str]:
    """Does the confidence mean anything? The held-out test gaps of the suggestions it grades, by level."""
    lines = ["| confidence | curve -> superconv default: jobs, mean / max test gap | verification -> superconv "
             "verified: jobs, mean / max test gap |", "|---|---|---|"]  # fmt: skip
    for level in ("high", "medium", "low"):
        cells = []
        for source, method in (("range_test", "superconv default"), ("verification", "superconv verified")):
            graded = [j for j in held if j[source]["confidence"]["level"] == level]
            sel = [held_out_gaps(j, methods, reference)[method] for j in graded]
            cells.append(f"{len(sel)}, {_mm(sel)}" if sel else "0")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def variants_table(dev: list[dict[str, Any]], scores: dict[str, float], chosen: str, top: int = 20) -> list[str]:
    """The ``top`` variants by objective (and the chosen one)."""
    names = sorted(_by_workload(dev))
    lines = ["| variant (s = superconv's suggestion, tlrf = torch-lr-finder's from the same sweep) | objective | "
             "mean | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]  # fmt: skip
    ranked = sorted(design.VARIANTS, key=lambda v: scores[v[0]])
    for variant in [v for i, v in enumerate(ranked) if i < top or v[0] == chosen]:
        per = design.by_workload(dev, design.picker(variant))
        label = f"**{variant[0]}** (chosen)" if variant[0] == chosen else variant[0]
        flat = [g for gs in per.values() for g in gs]
        lines.append(f"| {label} | {scores[variant[0]]:.2f} | {np.mean(flat):.2f} | "
                     + " | ".join(_mm(per[n]) for n in names) + " |")  # fmt: skip
    return lines


def dev_methods_table(dev: list[dict[str, Any]], chosen: str) -> list[str]:
    """Fallback estimators, the chosen verification and the fine grid's best, on the development workloads."""
    names = sorted(_by_workload(dev))
    variant = next(v for v in design.VARIANTS if v[0] == chosen)
    rows: dict[str, Any] = {
        f"estimator: {n}": (lambda j, f=f: f(design.estimates(j))) for n, f in design.FALLBACKS.items()
    }
    rows["torch-lr-finder steepest (its own sweep)"] = lambda j: j["tlrf_own_sweep"]
    rows[f"verified: {chosen}"] = design.picker(variant)
    rows["best of the 13-point grid (not a method)"] = lambda j: (
        10 ** max(zip([float(v["val"]) for v in j["full"].values()], np.log10([float(k) for k in j["full"]])))[1]
    )
    lines = ["| method | objective | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for label, fn in rows.items():
        per = design.by_workload(dev, fn)
        lines.append(f"| {label} | {design.objective(per):.2f} | " + " | ".join(_mm(per[n]) for n in names) + " |")
    return lines


def escalation_table(dev: list[dict[str, Any]], chosen: str) -> list[str]:
    """The development jobs whose probes learned nothing: the chosen variant's gap, and with longer probes."""
    plain = design.variant_named(chosen)
    flagged = [j for j in dev if design.learned_nothing(j, plain)]
    lines = ["| workload | seed | gap with the probes of the chosen variant | gap with probes of "
             f"{design.ESCALATION:.0%} after those learned nothing |", "|---|---|---|---|"]  # fmt: skip
    for job in sorted(flagged, key=lambda j: (j["workload"], j["seed"])):
        longer = design.pick_escalated(job, plain) if f"{design.ESCALATION:g}" in job["probes"] else math.nan
        cell = "not measured" if math.isnan(longer) else f"{design.gap(job, longer):.2f}"
        lines.append(f"| {job['workload']} | {job['seed']} | {design.gap(job, design.pick(job, plain)):.2f} | {cell} |")
    return lines


def horizon_table(dev: list[dict[str, Any]]) -> list[str]:
    fractions = [f"{f:g}" for f in design.FRACTIONS]
    lines = ["| workload | " + " | ".join(f"probes of {float(f):.1%}: shift (decades) / val points lost / rank corr."
                                         for f in fractions) + " |", "|---" * (len(fractions) + 1) + "|"]  # fmt: skip
    everything: dict[str, list[tuple[float, float, float]]] = {f: [] for f in fractions}
    for name, group in _by_workload(dev).items():
        cells = []
        for f in fractions:
            rows = [design.horizon_bias(j, f) for j in group]
            everything[f] += rows
            means = [np.mean([r[i] for r in rows]) for i in range(3)]
            cells.append(f"{means[0]:+.2f} / {means[1]:.2f} / {means[2]:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"|{np.mean([abs(r[0]) for r in everything[f]]):.2f}| / {np.mean([r[1] for r in everything[f]]):.2f} / "
             f"{np.mean([r[2] for r in everything[f]]):.2f}" for f in fractions]  # fmt: skip
    return [*lines, "| **all (mean absolute shift)** | " + " | ".join(cells) + " |"]


def markdown(report: dict[str, Any], methods: tuple[str, ...], reference: str) -> str:
    m = report["machine"]
    dev, held = report.get("dev", []), report.get("held_out", [])
    chosen = report.get("chosen_variant", "")
    lines = [
        f"# Which LR suggestion can you trust? Development vs held-out workloads (round {design.ROUND})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('workers', 1)} worker processes with 1 torch thread "
        f"each; torch {m['torch']}, Python {m['python']}. Development phase {report.get('dev_seconds', 0) / 60:.1f} "
        f"min this round (its jobs' time over the workers; load average at its start "
        f"{report.get('load_start_dev', 'n/a')}), held-out phase "
        f"{report.get('held_out_seconds', 0) / 60:.1f} min (load average {report.get('load_start_held_out', 'n/a')}); "
        "other sessions' work shared the 2 cores.",
        "",
        f"Protocol (round {design.ROUND} of issue 18; the earlier rounds' reports: "
        + ", ".join(f"`lr_suggestion_round{r}.md`" for r in range(2, design.ROUND))
        + f"): the DEVELOPMENT workloads are the earlier rounds' {len(_by_workload(dev))}, all seen by now "
        f"({sum(j.get('round') != design.ROUND for j in dev)} jobs reused as measured in earlier rounds, the last "
        f"round's held-out workloads measured in development mode this round: "
        f"{sum(j.get('round') == design.ROUND for j in dev)} jobs); the HELD-OUT "
        "workloads are new, written before any was run and run once, with everything frozen. "
        "On the development workloads, full one-cycle runs and probes (compressed one-cycle runs of 5%, 7.5% and "
        "15% of the run) were measured on a quarter-decade LR grid; every verification variant (candidates, probe "
        "length, metric, rule; probes at most 15% of the run) was scored by VALIDATION accuracy (interpolated on "
        f"that grid) and the lowest objective chosen: **{chosen}**, which superconv's `verify` defaults implement "
        "('between z': when the best probe is ahead of the runner-up by no more than z binomial standard errors, "
        "train at the geometric mean of their LRs). On the held-out workloads every LR is trained with the same "
        "one-cycle run (superconv.OneCycleLR, torch's shape, div_factor 25) from the same initial weights and batch "
        "order; a method's gap is the 7-point grid's best TEST accuracy (LRs half a decade apart) minus the "
        "method's, in points, mean / max over 3 seeds. 'verification cost' is the probes' wall time (training, "
        "validation, restores) over the one-cycle run at the LR they chose. "
        f"'{BEST_PROBE}' is an ablation: the verification's best probe without the 'between' rule (round 2's rule). "
        f"'{reference}' is not a method but the noise floor: even the full grid search, "
        "choosing by validation, misses the test-best grid LR by this much.",
    ]
    if not held:
        lines += ["", f"Round {design.ROUND} has no held-out run: superconv's defaults stay those of the last round "
                  "that had one, and its report holds the held-out results."]  # fmt: skip
    if held:
        lines += ["", "## Held-out workloads: gap in TEST accuracy (points), mean / max over seeds", "",
                  *held_out_table(held, methods, reference), "", "## Confidence against the gap it should predict "
                  "(held-out)", "", *confidence_table(held, methods, reference)]  # fmt: skip
    if dev:
        lines += [
            "", "## Development: verification variants (gap in VALIDATION accuracy, mean / max over seeds)", "",
            f"Objective: over workloads, the mean of (mean gap + max gap) / 2; candidates closer than 15% are "
            f"probed once. The best 20 of {len(design.VARIANTS)} variants.", "",
            *variants_table(dev, report["variant_scores"], chosen), "",
            "## Development: single estimators (no verification) and references (VALIDATION gap)", "",
            *dev_methods_table(dev, chosen), "",
            "## Development: longer probes where the probes learned nothing (VALIDATION gap)", "",
            "Jobs where every probe of the chosen variant was at the majority class's share (what `verify` flags); "
            f"objective over all development jobs without / with the longer probes: "
            f"{report.get('escalation', {}).get('plain', math.nan):.2f} / "
            f"{report.get('escalation', {}).get('escalated', math.nan):.2f}.", "",
            *escalation_table(dev, chosen), "",
            "## Development: short-horizon bias of the probes", "",
            "Probes at every grid LR against the full runs: decades from the full runs' best LR to the probes' "
            "best (+ = the probes prefer a higher LR), validation points lost by training the full run at the "
            "probes' best, and the rank correlation of probe and full-run validation accuracy over the LRs whose "
            "full run reached half the best.", "", *horizon_table(dev),
        ]  # fmt: skip
    if held:
        lines += ["", "## Every held-out job (test accuracy)", "", *held_out_jobs(held, methods, reference)]
    return "\n".join(lines) + "\n"
