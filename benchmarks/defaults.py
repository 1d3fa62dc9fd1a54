"""One good default everywhere: `superconv train` with no tuning options, on three kinds of data, two formats,
and under time budgets (issue 16).

Runs, as subprocesses on this checkout's sources, each timed from process start to its exit (the test result):

* ``superconv train`` (Fashion-MNIST, the main job), ``--dataset digits``, and ``--dataset imagefolder`` on a
  folder this benchmark writes (10 Fashion-MNIST classes as 64x64 JPEGs, 250 per class + 50 for validation);
* each in fp32 (``SUPERCONV_CPU_FORMAT=fp32``, standing in for a host without bf16) and with the format measured
  on this host (the default: bf16 and channels_last where they are faster here);
* ``superconv train --time-budget B`` on Fashion-MNIST for B = 30, 60, 180, 300 s (and 300 s in fp32): is the wall
  time within 10% of B, and what accuracy does it buy?

Prints a table (wall time, test accuracy, the decisions taken), writes JSON + markdown with the host's CPU flags.

    PYTHONPATH=src .venv/bin/python benchmarks/defaults.py                      # everything (about 25 min)
    PYTHONPATH=src .venv/bin/python benchmarks/defaults.py --only digits        # one dataset
    PYTHONPATH=src .venv/bin/python benchmarks/defaults.py --budgets ""         # no budget runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info
from own_images import Run, child_env, cpu_flags, measure, write_folders
from superconv.data import DEFAULT_FASHION_MNIST_DIR

RESULTS = Path(__file__).parent / "results"
# Issue 16's targets (2-core CPU, whole command).
TARGETS = {
    "fashion-mnist": "test >= 90% within 180 s on an AVX2-only host (fp32), within 60 s on an AMX/AVX-512-bf16 host",
    "digits": "test >= 97% within 30 s",
    "imagefolder": "within 2 points of the same data through the built-in path",
    "budget": "wall time within 10% of --time-budget",
}


def run_train(name: str, args: list[str], work: Path, fmt: str | None, timeout: float) -> dict[str, Any]:
    """``superconv train ARGS`` in a fresh run directory, measured; its metrics and decisions read back."""
    out = work / f"run-{name}"
    env = child_env()
    if fmt:
        env["SUPERCONV_CPU_FORMAT"] = fmt
    else:
        env.pop("SUPERCONV_CPU_FORMAT", None)
    env["SUPERCONV_CACHE_DIR"] = str(work / "cache")  # the format choice is measured once, in the first run
    command = [sys.executable, "-m", "superconv", "train", *args, "--out", str(out), "--no-progress"]
    run = measure(Run(name, command), timeout, env, work / f"{name}.log")
    row: dict[str, Any] = {"name": name, "args": args, "format_env": fmt or "measured", **asdict(run)}
    metrics = out / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        row.update({k: m.get(k) for k in ("test_accuracy", "best_val_accuracy", "train_seconds", "range_test_seconds",
                                          "epochs", "steps", "precision", "channels_last", "ema")})  # fmt: skip
    config = out / "config.json"
    if config.exists():
        row["decisions"] = json.loads(config.read_text()).get("decisions", {})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="fashion-mnist,digits,imagefolder")
    parser.add_argument("--formats", default="fp32,measured", help="fp32 (pinned) and/or measured")
    parser.add_argument("--budgets", default="30,60,180,300,300:fp32",
                        help="time budgets (s) on Fashion-MNIST, B or B:fp32 (pinned); '' for none")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "defaults.json")
    parser.add_argument("--source", type=Path, default=DEFAULT_FASHION_MNIST_DIR)
    args = parser.parse_args()
    datasets = [d for d in args.only.split(",") if d]
    formats = [None if f == "measured" else f for f in args.formats.split(",") if f]
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"machine": machine_info(), "cpu_flags": cpu_flags(), "command": " ".join(sys.argv),
                              "targets": TARGETS, "runs": rows}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="superconv-defaults-") as tmp:
        work = Path(tmp)
        folder = write_folders(work / "images", 250, 50, args.source)["splits"] if "imagefolder" in datasets else None
        plans = {
            "fashion-mnist": [],
            "digits": ["--dataset", "digits"],
            "imagefolder": ["--dataset", "imagefolder", "--data-dir", str(folder)],
        }
        for fmt in formats:
            for dataset in datasets:
                rows.append(run_train(f"{dataset}-{fmt or 'measured'}", plans[dataset], work, fmt, args.timeout))
                _write(report, args.out)
        for item in [b for b in args.budgets.split(",") if b]:
            budget, _, fmt = item.partition(":")
            name = f"budget-{budget}s" + (f"-{fmt}" if fmt else "")
            row = run_train(name, ["--time-budget", budget], work, fmt or None, args.timeout)
            row["budget"] = float(budget)
            rows.append(row)
            _write(report, args.out)
    print(_write(report, args.out))


def _write(report: dict[str, Any], out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    out.with_suffix(".md").write_text(text)
    return text


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Host: {m['cpu']} ({m['cores']} cores), torch {m['torch']}; bf16/AMX flags: "
        f"{', '.join(f for f in report['cpu_flags'] if 'bf16' in f or 'amx' in f) or 'none'}.",
        "",
        "| run | format | wall s (start to test result) | test acc | best val | epochs | updates | range test s | "
        "format used | budget kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        fmt_used = f"{r.get('precision')}{' + cl' if r.get('channels_last') else ''}" if r.get("precision") else "-"
        kept = "-"
        if r.get("budget") and r.get("wall_seconds"):
            kept = f"{r['wall_seconds'] / r['budget'] - 1:+.1%}"
        lines.append(
            f"| {r['name']} | {r['format_env']} | {_num(r.get('wall_seconds'))} | {_pct(r.get('test_accuracy'))} | "
            f"{_pct(r.get('best_val_accuracy'))} | {r.get('epochs') or '-'} | {r.get('steps') or '-'} | "
            f"{_num(r.get('range_test_seconds'))} | {fmt_used} | {kept} |"
        )
    lines += ["", "Decisions (first run of each dataset):", ""]
    seen: set[str] = set()
    for r in report["runs"]:
        key = r["name"].split("-")[0]
        if key in seen or not r.get("decisions"):
            continue
        seen.add(key)
        lines.append(f"- **{r['name']}**: " + "; ".join(f"{k}: {v}" for k, v in r["decisions"].items()))
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


if __name__ == "__main__":
    main()
