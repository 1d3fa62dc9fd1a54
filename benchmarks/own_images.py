"""Your own images, fast: an image folder through ``superconv train`` next to the same kind of images through the
built-in Fashion-MNIST path (issue 20).

The benchmark writes its own folders from Fashion-MNIST *training* images (Debian's copy, read with
``superconv.data.read_idx``) as 64x64 RGB JPEGs, balanced over the 10 classes:

* ``splits/``: ``train/<class>/`` 250 per class (2,500) and ``val/<class>/`` 50 per class (500);
* ``flat/``: ``<class>/`` 300 per class (3,000), no split folders (superconv carves test and validation sets).

Then it runs, as subprocesses on this checkout's sources (``PYTHONPATH``), with no tuning options:

* ``superconv train --dataset imagefolder --data-dir splits/``
* ``superconv train --dataset imagefolder --data-dir flat/``
* ``superconv train --dataset fashion-mnist --subset 2500``

and measures each one's wall time from process start to exit, its peak RSS (the largest process of its tree, from
``wait4``: what ``/usr/bin/time`` reports) and the peak of its whole tree's summed RSS (sampled every 0.1 s from
``/proc``: DataLoader workers included, shared pages counted once per process). Validation/test accuracy and the
range test's seconds come from the run directory's ``metrics.json``; the data decisions from its ``config.json``
where the CLI records them, else from ``superconv.data.load_data`` with the run's defaults (marked so).

``--large`` adds the streaming case: a 50,000-image folder (64x64 JPEGs in a temporary folder) loaded with a cache
budget smaller than its decoded size, then one epoch of training through ``superconv.fit`` (fixed LR, no range
test) in a subprocess; it must stream, with peak RSS <= 3 GiB.

Run (a quiet machine; the targets are for a 2-core CPU):

    PYTHONPATH=src .venv/bin/python benchmarks/own_images.py             # the three runs
    PYTHONPATH=src .venv/bin/python benchmarks/own_images.py --large     # and the 50,000-image streaming case

Smoke test (any machine, a few minutes): ``--train-per-class 25 --val-per-class 5 --out /tmp/own_images_smoke``.

Writes ``benchmarks/results/own_images.json`` and ``.md`` (``--out PREFIX`` changes both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import device_label, machine_info
from superconv.data import DEFAULT_FASHION_MNIST_DIR, read_idx
from superconv.files import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
IMAGE_SIDE = 64  # px, as in the report
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
# Issue 20's targets for the 2,500-image folder on a 2-core CPU.
TARGET_SECONDS = 60.0
TARGET_RATIO = 3.0
TARGET_RSS_GIB = 1.5
TARGET_RANGE_SHARE = 0.20
TARGET_ACCURACY_GAP = 0.02
TARGET_LARGE_RSS_GIB = 3.0


@dataclass
class Run:
    """One measured subprocess."""

    name: str
    command: list[str]
    returncode: int | None = None
    wall_seconds: float | None = None
    peak_rss_bytes: int | None = None  # the largest process of the tree (wait4's ru_maxrss)
    peak_tree_rss_bytes: int | None = None  # the whole tree, sampled
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    range_test_seconds: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    steps: int | None = None
    decisions: dict[str, str] = field(default_factory=dict)
    decisions_source: str = ""
    log_tail: str = ""


# --------------------------------------------------------------------------------------------
# The folders


def _fashion_mnist(source: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(source / "train-images-idx3-ubyte.gz")
    labels = read_idx(source / "train-labels-idx1-ubyte.gz")
    return images, labels.astype(np.int64)


def _pick(labels: np.ndarray, per_class: int, seed: int) -> dict[int, np.ndarray]:
    """``per_class`` seeded indices of each class."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return {c: order[labels[order] == c][:per_class] for c in range(10)}


def _save_jpegs(images: np.ndarray, indices: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        grey = Image.fromarray(images[i]).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BILINEAR)
        grey.convert("RGB").save(folder / f"{int(i):05d}.jpg", quality=90)


def write_folders(root: Path, train_per_class: int, val_per_class: int, source: Path) -> dict[str, Path]:
    """``splits/`` (train/ + val/) and ``flat/`` (no split folders) of 64x64 RGB JPEGs; returns both roots."""
    images, labels = _fashion_mnist(source)
    picked = _pick(labels, train_per_class + val_per_class, seed=0)
    for c, idx in picked.items():
        name = f"{c}"
        _save_jpegs(images, idx[:train_per_class], root / "splits" / "train" / name)
        _save_jpegs(images, idx[train_per_class:], root / "splits" / "val" / name)
        _save_jpegs(images, idx, root / "flat" / name)
    return {"splits": root / "splits", "flat": root / "flat"}


# --------------------------------------------------------------------------------------------
# Measuring a subprocess


def _tree_rss(pid: int) -> int:
    """The summed resident memory of ``pid`` and its descendants, from /proc (0 where it cannot be read)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    return sum(rss.get(p, 0) for p in tree)


def measure(run: Run, timeout: float, env: dict[str, str], log: Path) -> Run:
    """Run ``run.command``; fill in the wall time, peak RSS (largest process, and whole tree) and return code."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(run.command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        peak_tree = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss(proc.pid))
            if time.perf_counter() - started > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
    run.wall_seconds = time.perf_counter() - started
    run.returncode = os.waitstatus_to_exitcode(status)
    proc.returncode = run.returncode  # reaped by wait4: tell Popen
    run.peak_rss_bytes = usage.ru_maxrss * 1024  # Linux reports KiB
    run.peak_tree_rss_bytes = peak_tree
    run.log_tail = log.read_text(errors="replace")[-1500:]
    return run


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _read_run_dir(run: Run, out: Path, data_dir: Path | None, dataset: str, subset: int | None) -> None:
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        run.val_accuracy = metrics.get("best_val_accuracy")
        run.test_accuracy = metrics.get("test_accuracy")
        run.range_test_seconds = metrics.get("range_test_seconds")
        run.train_seconds = metrics.get("train_seconds")
        run.epochs, run.steps = metrics.get("epochs"), metrics.get("steps")
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    recorded = config.get("decisions") or config.get("data", {}).get("decisions")
    if recorded:
        run.decisions, run.decisions_source = dict(recorded), "config.json"
        return
    from superconv.data import load_data  # the CLI does not record them yet: the same defaults, in this process

    device = config.get("device", "cpu")
    bundle = load_data(dataset, data_dir=data_dir, device=device, subset=subset, batch_size=1)  # size: no matter
    run.decisions, run.decisions_source = bundle.decisions, "load_data defaults (not recorded by the CLI)"


def train_run(name: str, args: list[str], work: Path, timeout: float, data_dir: Path | None, subset: int) -> Run:
    """``superconv train ARGS`` (an image folder at ``data_dir``, else Fashion-MNIST's ``subset``), measured."""
    out = work / f"run-{name}"
    command = [sys.executable, "-m", "superconv", "train", *args, "--out", str(out), "--no-progress"]
    run = measure(Run(name, command), timeout, child_env(), work / f"{name}.log")
    if data_dir is not None:
        _read_run_dir(run, out, data_dir, "imagefolder", None)
    else:
        _read_run_dir(run, out, None, "fashion-mnist", subset)
    return run


# --------------------------------------------------------------------------------------------
# The 50,000-image streaming case

_LARGE_SNIPPET = """
import json, sys, time
import torch
from superconv import fit
from superconv.data import load_data
from superconv.models import build_model
started = time.perf_counter()
data = load_data("imagefolder", data_dir=sys.argv[1], cache_budget=int(sys.argv[2]), batch_size=256, seed=0)
loaded = time.perf_counter() - started
model = build_model("resnet-small", num_classes=data.num_classes, in_channels=3, image_size=data.image_size, width=16)
result = fit(model, data.train, data.val, epochs=1, max_lr=3e-3, verbose=False, progress=False)
print(json.dumps({"cached": data.cached, "decisions": data.decisions, "load_seconds": loaded,
                  "train_size": data.train_size, "val_accuracy": result.best_val_accuracy,
                  "train_seconds": result.train_seconds}))
"""


def large_run(work: Path, count: int, budget: int, timeout: float, source: Path) -> dict[str, Any]:
    images, labels = _fashion_mnist(source)
    per_class = count // 10
    root = work / "large"
    started = time.perf_counter()
    if sum(1 for _ in root.glob("*/*.jpg")) != per_class * 10:  # --keep: a folder written before is reused
        for c, idx in _pick(labels, per_class, seed=1).items():
            _save_jpegs(images, idx, root / f"{c}")
    written = time.perf_counter() - started
    command = [sys.executable, "-c", _LARGE_SNIPPET, str(root), str(budget)]
    run = measure(Run("large-stream", command), timeout, child_env(), work / "large.log")
    report: dict[str, Any] = {"images": per_class * 10, "cache_budget": budget, "write_seconds": written}
    report.update(asdict(run))
    lines = [line for line in run.log_tail.splitlines() if line.startswith("{")]
    if lines:
        report.update(json.loads(lines[-1]))
    return report


# --------------------------------------------------------------------------------------------
# Report


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in present]
    except OSError:
        pass
    return []


def _gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**30:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _mean_val(runs: dict[str, Run], seeds: dict[str, list[float | None]], name: str) -> float | None:
    """The mean validation accuracy of ``name`` over its seeds (its one run where seeds were not recorded)."""
    values = [v for v in seeds.get(name, []) if v is not None]
    if values:
        return sum(values) / len(values)
    run = runs.get(name)
    return None if run is None else run.val_accuracy


def _checks(runs: dict[str, Run], seeds: dict[str, list[float | None]] | None = None) -> list[str]:
    """The issue's targets for the 2,500-image folder, each with its measured value and ok/MISSED."""
    seeds = seeds or {}
    folder, builtin = runs.get("imagefolder-splits"), runs.get("fashion-mnist-2500")
    if folder is None or folder.wall_seconds is None:
        return []
    lines = []

    def check(label: str, ok: bool, value: str) -> None:
        lines.append(f"- {label}: {value} - {'ok' if ok else 'MISSED'}")

    check(f"wall time <= {TARGET_SECONDS:.0f} s", folder.wall_seconds <= TARGET_SECONDS, f"{folder.wall_seconds:.1f} s")
    if builtin is not None and builtin.wall_seconds:
        ratio = folder.wall_seconds / builtin.wall_seconds
        check(f"<= {TARGET_RATIO:.0f}x the built-in run", ratio <= TARGET_RATIO, f"{ratio:.2f}x")
    n = max((len(v) for v in seeds.values()), default=1)
    for a, b, label in (("imagefolder-splits", "fashion-mnist-2500", "as run (the built-in path flips)"),
                        ("imagefolder-splits-flip", "fashion-mnist-2500", "both flipped"),
                        ("imagefolder-splits", "fashion-mnist-2500-noflip", "neither flipped")):  # fmt: skip
        va, vb = _mean_val(runs, seeds, a), _mean_val(runs, seeds, b)
        if va is not None and vb is not None:
            gap = vb - va
            check(f"validation within 2 points of the built-in, {label}, mean of {n} seed(s)",
                  gap <= TARGET_ACCURACY_GAP, f"{gap * 100:+.1f} points ({va:.1%} vs {vb:.1%})")  # fmt: skip
    if folder.peak_rss_bytes is not None:
        ok = folder.peak_rss_bytes <= TARGET_RSS_GIB * 2**30
        check(f"peak RSS <= {TARGET_RSS_GIB} GiB", ok, f"{_gib(folder.peak_rss_bytes)} GiB")
    if folder.range_test_seconds is not None:
        share = folder.range_test_seconds / folder.wall_seconds
        check(f"range test <= {TARGET_RANGE_SHARE:.0%} of wall time", share <= TARGET_RANGE_SHARE, f"{share:.1%}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    runs = {name: Run(**r) for name, r in report["runs"].items()}
    lines = [
        "# Your own images: image folder vs built-in path (`benchmarks/own_images.py`)",
        "",
        f"Machine: {report['device_label']}; CPU flags: {', '.join(report['cpu_flags']) or 'none of interest'}; "
        f"{report['date']}. Folders: {report['folders']}.",
        "",
        "| run | wall s | range test s (share) | epochs / updates | val acc | test acc | peak RSS GiB | tree RSS GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs.values():
        share = (
            f"{run.range_test_seconds:.1f} ({run.range_test_seconds / run.wall_seconds:.0%})"
            if run.range_test_seconds is not None and run.wall_seconds
            else "-"
        )
        wall = "-" if run.wall_seconds is None else f"{run.wall_seconds:.1f}"
        lines.append(
            f"| {run.name} | {wall} | {share} | {run.epochs} / {run.steps} | {_pct(run.val_accuracy)} | "
            f"{_pct(run.test_accuracy)} | {_gib(run.peak_rss_bytes)} | {_gib(run.peak_tree_rss_bytes)} |"
        )
    lines += [
        "",
        "Targets (issue 20, 2-core CPU):",
        *(_checks(runs, report.get("seeds")) or ["- not measured"]),
        "",
        "Decisions:",
    ]
    for run in runs.values():
        if run.decisions:
            lines.append(f"- **{run.name}** ({run.decisions_source}):")
            lines += [f"  - {key}: {text}" for key, text in run.decisions.items()]
    large = report.get("large")
    if large:
        lines += [
            "",
            f"Streaming case: {large['images']} images, cache budget {large['cache_budget'] / 1e6:.0f} MB: "
            f"cached={large.get('cached')}, wall {large['wall_seconds']:.1f} s "
            f"(load {large.get('load_seconds', 0):.1f} s, one epoch {large.get('train_seconds') or 0:.1f} s), "
            f"peak RSS {_gib(large['peak_rss_bytes'])} GiB, "
            f"tree {_gib(large['peak_tree_rss_bytes'])} GiB",
            f"- streams (cache budget below the decoded size): {'ok' if large.get('cached') is False else 'MISSED'}",
            f"- peak RSS <= {TARGET_LARGE_RSS_GIB} GiB: "
            f"{'ok' if (large['peak_rss_bytes'] or 0) <= TARGET_LARGE_RSS_GIB * 2**30 else 'MISSED'}",
        ]
        if large.get("decisions"):
            lines += [f"  - {key}: {text}" for key, text in large["decisions"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=250)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--source", type=Path, default=DEFAULT_FASHION_MNIST_DIR, help="Fashion-MNIST idx files")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--runs", default="imagefolder-splits,imagefolder-flat,fashion-mnist-2500,"
                        "imagefolder-splits-flip,fashion-mnist-2500-noflip")  # fmt: skip
    parser.add_argument("--large", action="store_true", help="also the 50,000-image streaming case")
    parser.add_argument("--large-images", type=int, default=50_000)
    parser.add_argument("--large-budget", type=int, default=20_000_000, help="bytes; below the decoded size")
    parser.add_argument("--out", type=Path, default=RESULTS / "own_images", help="prefix of the .json and .md")
    parser.add_argument("--keep", type=Path, default=None, help="write the folders and run directories here")
    parser.add_argument("--extra", default="", help="more `superconv train` arguments for every run")
    parser.add_argument("--seeds", type=int, default=3,
                        help="accuracy runs per configuration (--seed 0..N-1): validation sets of a few hundred "
                        "images differ by several points from seed to seed; the gap is taken on the means")  # fmt: skip
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="own_images-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = [n.strip() for n in args.runs.split(",") if n.strip()]
    folders = write_folders(work, args.train_per_class, args.val_per_class, args.source) if runs else {}
    subset = args.train_per_class * 10
    plans: dict[str, tuple[list[str], Path | None]] = {
        "fashion-mnist-2500": (["--dataset", "fashion-mnist", "--subset", str(subset)], None),
    }
    for key, folder in folders.items():
        plans[f"imagefolder-{key}"] = (["--dataset", "imagefolder", "--data-dir", str(folder)], folder)
    # Like for like: the built-in path flips Fashion-MNIST (its labels survive a flip), a folder is not flipped
    # unless asked. These two runs separate that choice from the path itself.
    if "splits" in folders:
        plans["imagefolder-splits-flip"] = ([*plans["imagefolder-splits"][0], "--flip"], folders["splits"])
    plans["fashion-mnist-2500-noflip"] = ([*plans["fashion-mnist-2500"][0], "--no-flip"], None)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "device_label": device_label(machine_info()),
        "cpu_flags": cpu_flags(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "folders": f"{args.train_per_class * 10} train + {args.val_per_class * 10} val {IMAGE_SIDE}x{IMAGE_SIDE} "
        f"RGB JPEGs (splits/), {(args.train_per_class + args.val_per_class) * 10} without splits (flat/)",
        "runs": {},
    }
    report["seeds"] = {name: [] for name in runs}
    for seed in range(args.seeds):  # seed 0 is the measured run of the table; the others add accuracies
        for name in runs:
            run_args, data_dir = plans[name]
            extra = [*args.extra.split(), *(["--seed", str(seed)] if seed else [])]
            run = train_run(f"{name}" + (f"-seed{seed}" if seed else ""), [*run_args, *extra], work, args.timeout,
                            data_dir, subset)  # fmt: skip
            if seed == 0:
                report["runs"][name] = asdict(run)
            report["seeds"][name].append(run.val_accuracy)
            print(f"{name} seed {seed}: exit {run.returncode}, {run.wall_seconds:.1f} s, val {_pct(run.val_accuracy)}",
                  flush=True)  # fmt: skip
            write_json(args.out.with_suffix(".json"), report)  # after every run: a crash keeps what was measured
    if args.large:
        report["large"] = large_run(work, args.large_images, args.large_budget, args.timeout, args.source)
        write_json(args.out.with_suffix(".json"), report)
    text = markdown(report)
    write_text(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
