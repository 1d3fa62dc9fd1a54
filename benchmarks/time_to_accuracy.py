"""Time to accuracy on Fashion-MNIST: superconv's default recipe against the seed's recipe and fastai's.

In one process on one device, over several seeds, with the recipes alternating within each seed so that
machine noise hits all of them:

(1) ``seed``: the seed's recipe - torchvision's FashionMNIST through a ``DataLoader`` (PIL transforms:
    ``RandomCrop(28, padding=2)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``; 2 workers,
    pinned memory on CUDA), AdamW with torch's defaults, torch-lr-finder's range test (end_lr 10,
    100 iterations) and its steepest-gradient suggestion (``plot(suggest_lr=True)``), torch's
    ``OneCycleLR`` stepped after every batch, fp32, ``loss.item()`` every batch;
(2) ``fastai``: fastai's ``lr_find()`` (valley) + ``fit_one_cycle`` with its defaults (its Adam,
    fp32), fastai's DataLoader over the same torchvision datasets and transforms (skipped, with the
    reason, where fastai cannot be imported);
(3) ``superconv``: ``superconv train``'s default recipe for the device (``superconv.train.recipes``, read at
    run time): ``load_data`` (data resident on the device, on-device crop+flip) + ``fit`` (its range
    test, one cycle, bf16 autocast and channels_last where the hardware has them).

Every recipe trains the SAME architecture and width (the superconv recipe's), for the same epochs and
batch size, from the same initial weights (per seed), on the official 60k/10k split (no validation
carve-out), and evaluates the TEST accuracy after every epoch. A recipe's clock starts with the data
set still in files (the uncompressed idx files, page-cached) and stops at its final test accuracy:
data set-up, range test and per-epoch evaluations are all inside. Seconds to a target = the clock at
the first epoch-end evaluation at or above it. CUDA start-up and a model warm-up (kernel selection)
run once before all recipes and are reported separately.

Compute: forward FLOPs per image come from ``torch.utils.flop_counter.FlopCounterMode``; a training
image costs 3x that (forward + backward), an evaluation image 1x (2x with flip TTA). Total FLOPs count
the training images, the range test's images and the evaluated images; achieved FLOP/s = total FLOPs /
total seconds, against ``--peak-tflops``, else the device's dense bf16 peak where it is known (a table of
GPU names), else the device's measured ceiling: the best rate of a large square matmul in the fast
precision (bf16 where the device has it), measured once before the recipes and reported with them.

Run (full; a quiet machine, GPU if there is one):

    .venv/bin/python benchmarks/time_to_accuracy.py                       # 5 seeds, all recipes
    .venv/bin/python benchmarks/time_to_accuracy.py --device cpu --threads 2

Smoke test (any machine, about a minute):

    .venv/bin/python benchmarks/time_to_accuracy.py --device cpu --subset 3000 --epochs 1 --seeds 1 \\
        --targets 50,70 --out /tmp/tta_smoke.json

Writes ``benchmarks/results/time_to_accuracy.json`` and ``.md`` (``--out`` changes both).
``--report-only`` re-renders the .md from the .json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import device_label, machine_info
from _recipes_external import (
    RunLog,
    Setup,
    fastai_unavailable,
    preimport,
    prepare_data_root,
    run_fastai_recipe,
    run_seed_recipe,
    seed_everything,
    sync,
)
from superconv import Callback, fit
from superconv.data import DEFAULT_FASHION_MNIST_DIR, load_data
from superconv.device import resolve_precision, use_channels_last
from superconv.models import build_model
from superconv.train.recipes import Recipe, adapt, default_recipe

HERE = Path(__file__).resolve().parent
RECIPES = ("seed", "fastai", "superconv")
DEFAULT_TARGETS = {"cuda": "93,94", "cpu": "90,92"}
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a substring of torch.cuda.get_device_name();
# the first match wins, so the more specific names come first.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3)
    ("H200", 989.0),
    ("A100", 312.0),
)


# --------------------------------------------------------------------------------------------- superconv


class _Clock(Callback):
    """Per-epoch test accuracy (the val loader is the test set) and pure training time."""

    def __init__(self, log: RunLog, device: torch.device, batches: int, batch_size: int) -> None:
        self.log, self.device, self.batches, self.batch_size = log, device, batches, batch_size
        self.t = 0.0

    def on_epoch_start(self, state: Any) -> None:
        self.t = time.perf_counter()

    def on_batch_end(self, state: Any) -> None:
        if state.batch == self.batches:  # the epoch's last batch: its update has been issued
            sync(self.device)
            self.log.train_seconds += time.perf_counter() - self.t
            self.log.train_images += self.batches * self.batch_size  # drop_last: full batches only

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        self.log.epoch_end(int(metrics["epoch"]), float(metrics["val_accuracy"]))


def train_schedule_kwargs(preset: str) -> dict[str, Any]:
    """The one-cycle arguments ``superconv train`` passes to ``fit`` with its defaults (read from the CLI).

    The CLI expands the preset (so its ``div_factor`` wins over the range test's) and adds the momentum
    options' defaults; ``schedule_kwargs={"preset": ...}`` alone would train a slightly different schedule.
    """
    from superconv.cli.options import shape_kwargs
    from superconv.cli.train_cmd import train

    defaults = {p.name: p.default for p in train.params}
    shape_names = ("pct_start", "pct_down", "anneal_strategy", "div_factor", "final_div_factor", "three_phase")
    shape = shape_kwargs(preset, **{k: defaults.get(k) for k in shape_names})
    shape.update({k: defaults.get(k) for k in ("base_momentum", "max_momentum", "cycle_momentum")})
    return shape


def run_superconv_recipe(setup: Setup, seed: int, recipe: Recipe) -> RunLog:
    dev = setup.device
    log = RunLog("superconv", seed)
    seed_everything(seed)
    model = setup.build_model()
    log.start()
    data = load_data(
        "fashion-mnist",
        data_dir=setup.data_root,
        batch_size=setup.batch_size,
        eval_batch_size=setup.eval_batch_size,
        val_fraction=0,
        device=dev,
        seed=seed,
        subset=setup.subset,
    )
    sync(dev)
    log.load_seconds = log.elapsed()
    clock = _Clock(log, dev, len(data.train), setup.batch_size)
    result = fit(
        model,
        data.train,
        data.test,  # as the validation set: the test accuracy after every epoch
        epochs=setup.epochs,
        optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay,
        label_smoothing=recipe.label_smoothing,
        schedule_kwargs=train_schedule_kwargs(recipe.preset),
        tta=bool(recipe.tta),
        ema=recipe.ema,
        compile=recipe.compile,
        patience=None,  # the benchmark trains every recipe for the same epochs
        range_test_kwargs={"num_iter": recipe.range_test_iters},
        device=dev,
        callbacks=[clock],
        verbose=False,
        progress=False,
    )
    log.finish()
    log.range_test_seconds = result.range_test_seconds
    rt = result.range_test
    log.range_test_images = (len(rt.lrs) if rt is not None else 0) * setup.batch_size
    assert data.test is not None  # load_data always builds the official test split
    log.eval_images = len(log.epochs) * data.test.dataset_size * (2 if recipe.tta else 1)
    log.max_lr = result.max_lr
    log.precision = result.precision
    if result.diverged or result.message:
        log.notes = result.message
    return log


# --------------------------------------------------------------------------------------------- set-up


def forward_flops_per_image(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Forward FLOPs of one image (FlopCounterMode counts convolutions and matmuls; 1 FMA = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(2, *shape))
    return counter.get_total_flops() / 2


def device_peak_tflops(
    device: torch.device, override: float | None, measured: dict[str, Any] | None = None
) -> tuple[float | None, str]:
    """The peak the achieved FLOP/s are compared with: ``--peak-tflops``, else the datasheet's (known GPUs),
    else the measured dense-matmul ceiling (``gemm_ceiling``; CPUs have no datasheet figure here)."""
    if override is not None:
        return override, "given with --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_TFLOPS:
            if key in name:
                return peak, f"dense bf16 tensor-core peak of {key} (datasheet)"
    if measured is not None:
        return measured["tflops"], f"measured: {measured['label']}"
    return None, "unknown (pass --peak-tflops to compare)"


def gemm_ceiling(device: torch.device, dtype: torch.dtype | None, repeats: int = 5) -> dict[str, Any]:
    """The device's practical ceiling: the best TFLOP/s of a large square matmul in the recipes' fast precision.

    A datasheet peak is out of reach for a small CNN (and unknown for most CPUs); this says how far the
    recipes are from what this machine, with this torch build, does on its best-shaped work.
    """
    dtype = dtype or torch.float32
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 20 if device.type == "cuda" else 2
    (a @ b).sum()  # warm-up (kernel selection)
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            c = a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / inner)
    del a, b, c
    tflops = 2 * n**3 / best / 1e12
    label = f"best of {repeats} {str(dtype).removeprefix('torch.')} {n}x{n} matmuls, {tflops:.2f} TFLOP/s"
    return {"tflops": tflops, "n": n, "dtype": str(dtype), "label": label}


def cuda_startup(device: torch.device) -> float:
    """One-time CUDA initialisation plus a warm-up matmul (reported, never inside a recipe's time)."""
    t = time.perf_counter()
    torch.cuda.init()
    a = torch.randn(1024, 1024, device=device)
    (a @ a).sum().item()
    sync(device)
    return time.perf_counter() - t


def model_warmup(setup: Setup, steps: int = 3) -> float:
    """A few training steps in every precision/memory format the recipes use: kernel selection and
    allocator growth happen here once, not in whichever recipe happens to run first."""
    dev = setup.device
    t = time.perf_counter()
    fast = resolve_precision("auto", dev)
    channels_last = use_channels_last("auto", dev)
    variants = {(None, False), (fast, channels_last)}
    for dtype, cl in variants:
        model = setup.build_model().to(dev)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters())
        x = torch.randn(setup.batch_size, 1, 28, 28, device=dev)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (setup.batch_size,), device=dev)
        for _ in range(steps):
            ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with ctx:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext():
            model.eval()(torch.randn(setup.eval_batch_size, 1, 28, 28, device=dev))
    sync(dev)
    return time.perf_counter() - t


def compile_warmup(setup: Setup, recipe: Recipe) -> float:
    """With ``compile`` on: one short superconv run first, so that torch.compile's one-time work (Inductor's
    code generation and autotuning, cached in-process) is not charged to whichever seed runs first. Each timed
    run still pays its own tracing and cache lookups."""
    t = time.perf_counter()
    short = dataclasses.replace(setup, epochs=1, subset=min(setup.subset or 60_000, 4 * setup.batch_size))
    run_superconv_recipe(short, 0, dataclasses.replace(recipe, range_test_iters=10))
    sync(setup.device)
    return time.perf_counter() - t


# --------------------------------------------------------------------------------------------- summary


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def seconds_to(run: dict[str, Any], target: float) -> float | None:
    for e in run["epochs"]:
        if e["test_accuracy"] >= target:
            return e["seconds"]
    return None


def summarize(
    runs: list[dict[str, Any]], targets: list[float], fwd_flops: float, peak_tflops: float | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in RECIPES:
        mine = [r for r in runs if r["recipe"] == name]
        if not mine:
            continue
        ok = [r for r in mine if r["status"] == "ok" and r["epochs"]]
        if not ok:
            summary[name] = {"status": mine[0]["status"], "runs": len(mine)}
            continue
        s: dict[str, Any] = {"status": "ok", "runs": len(ok), "failed": len(mine) - len(ok)}
        for target in targets:
            reached = [t for r in ok if (t := seconds_to(r, target)) is not None]
            s[f"seconds_to_{target:g}"] = _stats(reached)
            s[f"reached_{target:g}"] = f"{len(reached)}/{len(ok)}"
        s["final_accuracy"] = _stats([r["epochs"][-1]["test_accuracy"] for r in ok])
        for key in ("total_seconds", "load_seconds", "range_test_seconds", "train_seconds", "max_lr"):
            s[key] = _stats([r[key] for r in ok if r[key] is not None])
        s["images_per_second"] = _stats([r["train_images"] / r["train_seconds"] for r in ok if r["train_seconds"]])
        total_flops = [fwd_flops * (3 * r["train_images"] + 3 * r["range_test_images"] + r["eval_images"]) for r in ok]
        s["train_flops_per_image"] = 3 * fwd_flops
        s["total_flops"] = _stats(total_flops)
        achieved = [f / r["total_seconds"] for f, r in zip(total_flops, ok)]
        s["achieved_flops_per_second"] = _stats(achieved)
        if peak_tflops:
            s["fraction_of_peak"] = _stats([a / (peak_tflops * 1e12) for a in achieved])
        s["precision"] = ok[0]["precision"]
        summary[name] = s
    base = summary.get("seed", {})
    for s in summary.values():
        if s.get("status") != "ok":
            continue
        for target in targets:
            key = f"seconds_to_{target:g}"
            own, theirs = s.get(key), base.get(key)
            # The speed-up is only meaningful where both reached the target in every run.
            full = s[f"reached_{target:g}"].split("/")[0] == str(s["runs"])
            full_base = base.get(f"reached_{target:g}", "0/1").split("/")[0] == str(base.get("runs"))
            s[f"speedup_vs_seed_{target:g}"] = (
                theirs["mean"] / own["mean"] if own and theirs and full and full_base else None
            )
    return summary


# --------------------------------------------------------------------------------------------- report


def _fmt(stats: dict[str, float] | None, spec: str = ".1f", scale: float = 1.0) -> str:
    if stats is None:
        return "not reached"
    mean, lo, hi = (stats[k] * scale for k in ("mean", "min", "max"))
    if stats["n"] == 1:
        return format(mean, spec)
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def render_markdown(report: dict[str, Any]) -> str:
    targets = report["targets"]
    summary = report["summary"]
    lines = [
        f"# Time to accuracy: Fashion-MNIST on {report['device_label']}",
        "",
        f"`{report['command']}` ({report['date']}; torch {report['machine']['torch']}, "
        f"{report['machine']['torch_threads']} threads). Model `{report['recipe']['model']}` width "
        f"{report['recipe']['width']}, batch {report['batch_size']}, {report['epochs']} epochs, "
        f"{report['seeds']} seed(s)"
        + (f", training subset {report['subset']}" if report["subset"] else ", full 60k/10k split")
        + ". Mean [min, max] over seeds; seconds include data set-up, range test and per-epoch test "
        "evaluation.",
        "",
    ]
    if report.get("complete") is False:
        lines += [f"**Partial**: written after run {len(report['runs'])}; the benchmark did not finish.", ""]
    head = ["recipe"] + [f"s to {t:.0%}" for t in targets]
    head += ["final test acc", "range test s", "total s", "train img/s", "TFLOP total", "TFLOP/s", "% of peak"]
    head += [f"speed-up to {t:.0%}" for t in targets]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        if s.get("status") != "ok":
            lines.append(f"| {name} | {s['status']} |" + " |" * (len(head) - 2))
            continue
        failed = f", {s['failed']} run(s) failed" if s.get("failed") else ""
        row = [f"{name} ({s['precision']}{failed})"]
        for t in targets:
            cell = _fmt(s[f"seconds_to_{t:g}"])
            reached = s[f"reached_{t:g}"]
            if s[f"seconds_to_{t:g}"] is not None and not reached.startswith(str(s["runs"]) + "/"):
                cell += f" ({reached} reached)"
            row.append(cell)
        row += [
            _fmt(s["final_accuracy"], ".2%"),
            _fmt(s["range_test_seconds"]),
            _fmt(s["total_seconds"]),
            _fmt(s["images_per_second"], ".0f"),
            _fmt(s["total_flops"], ".1f", 1e-12),
            _fmt(s["achieved_flops_per_second"], ".3f", 1e-12),
            _fmt(s["fraction_of_peak"], ".2%") if "fraction_of_peak" in s else "peak unknown",
        ]
        for t in targets:
            speedup = s.get(f"speedup_vs_seed_{t:g}")
            row.append(f"{speedup:.2f}x" if speedup else "-")
        lines.append("| " + " | ".join(row) + " |")
    flops = report["forward_flops_per_image"]
    lines += [
        "",
        f"Forward FLOPs per image {flops / 1e6:.1f} M (training image: 3x = {3 * flops / 1e6:.1f} M). "
        + (f"Peak: {report['peak_tflops']:.3g} TFLOP/s" if report["peak_tflops"] else "Peak: unknown")
        + f" ({report['peak_source']})"
        + (
            f"; measured ceiling {report['gemm_ceiling']['label']}. "
            if report.get("gemm_ceiling") and not report["peak_source"].startswith("measured")
            else ". "
        )
        + "Train img/s: training images / optimizer-step seconds (no range test, no evaluation). "
        "Speed-up: the seed recipe's mean seconds to the target / the recipe's (same run; '-' where a "
        "run missed the target).",
    ]
    recipe = ", ".join(f"{k}={v}" for k, v in report["recipe"].items())
    kind = "GPU" if report["device"].startswith("cuda") else "CPU"
    lines += [
        "",
        f"superconv: `superconv train`'s default {kind} recipe ({recipe}; run with patience off and the "
        "test set as its per-epoch evaluation set). seed: torch-lr-finder steepest suggestion + torch "
        "OneCycleLR + AdamW (torch defaults) + DataLoader with torchvision crop/flip transforms, fp32. "
        "fastai: lr_find (valley) + fit_one_cycle with fastai's defaults, fastai DataLoader over the same "
        "torchvision datasets, fp32. All: the same architecture, width, batch size, epochs and initial weights.",
    ]
    once = []
    if report.get("cuda_startup_seconds") is not None:
        once.append(f"CUDA start-up {report['cuda_startup_seconds']:.2f} s")
    once.append(f"model warm-up {report['warmup_seconds']:.2f} s")
    if report.get("compile_warmup_seconds") is not None:
        once.append(f"torch.compile warm-up (one short superconv run) {report['compile_warmup_seconds']:.2f} s")
    lines += ["", "Once before all recipes, not in any recipe's time: " + ", ".join(once) + "."]
    lines += ["", "| recipe | seed | max_lr | load s | range test s | train s | total s | acc per epoch |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        accs = " ".join(f"{e['test_accuracy']:.2%}@{e['seconds']:.0f}s" for e in r["epochs"]) or r["status"]
        max_lr = f"{r['max_lr']:.3g}" if r["max_lr"] else "-"
        lines.append(
            f"| {r['recipe']} | {r['seed']} | {max_lr} | {r['load_seconds']:.2f} | "
            f"{r['range_test_seconds']:.1f} | {r['train_seconds']:.1f} | {r['total_seconds']:.1f} | {accs} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- main


def parse_targets(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    return sorted(v / 100 if v > 1 else v for v in values)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["width=48", "ema=0.99", "tta=false", "ema=none"]`` -> typed recipe overrides."""
    fields = Recipe().to_dict()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--set expects FIELD=VALUE with FIELD one of {sorted(fields)}, but got {item!r}")
        text = text.strip()
        default = fields[key]
        if text.lower() == "none":
            value: Any = None
        elif isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(f"--set {key}= expects true or false, but got {text!r}")
            value = text.lower() == "true"
        elif isinstance(default, int):
            value = int(text)
        elif isinstance(default, str):
            value = text
        else:  # float fields, and optional ones (None by default) that hold numbers
            value = float(text)
        out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {RECIPES}")
    parser.add_argument("--targets", default=None, help="test accuracies in %% (default: 93,94 CUDA; 90,92 CPU)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the superconv recipe's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the superconv recipe's")
    parser.add_argument("--subset", type=int, default=None, help="training images (smoke tests)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the seed/fastai path")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if known")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_FASHION_MNIST_DIR)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "time_to_accuracy.json")
    parser.add_argument("--report-only", action="store_true", help="re-render the .md from the .json")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of superconv's recipe (and the shared model), e.g. --set width=48 --set ema=0.99; "
        "repeatable (recipe tuning)",
    )
    args = parser.parse_args()
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    if args.report_only:
        md_path.write_text(render_markdown(json.loads(json_path.read_text())))
        print(md_path.read_text())
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but CUDA is not available here; use --device cpu or auto")
    else:
        dev = torch.device(args.device)
    try:
        overrides = parse_overrides(args.overrides)
        base = dataclasses.replace(default_recipe(dev.type), **overrides)
        # The adaptive defaults of `superconv train` for the full 60k training set (no validation carve-out).
        recipe, _ = adapt(base, train_size=60000, flip_invariant=True, device_type=dev.type, given=overrides)
    except ValueError as exc:
        parser.error(str(exc))
    targets = parse_targets(args.targets or DEFAULT_TARGETS["cuda" if dev.type == "cuda" else "cpu"])
    wanted = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = set(wanted) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipe(s) {sorted(unknown)}; expected some of {RECIPES}")
    epochs = args.epochs or recipe.epochs or 3
    batch_size = args.batch_size or recipe.batch_size

    cuda_seconds = cuda_startup(dev) if dev.type == "cuda" else None
    info = machine_info()

    def make_model() -> torch.nn.Module:
        return build_model(recipe.model, num_classes=10, in_channels=1, image_size=28, width=recipe.width)

    fwd = forward_flops_per_image(make_model(), (1, 28, 28))
    gemm = gemm_ceiling(dev, resolve_precision("auto", dev))
    peak, peak_source = device_peak_tflops(dev, args.peak_tflops, gemm)
    skip_fastai = fastai_unavailable() if "fastai" in wanted else None
    if skip_fastai:
        print(f"fastai skipped: {skip_fastai}", file=sys.stderr)

    runs: list[dict[str, Any]] = []

    def build_report(complete: bool) -> dict[str, Any]:
        return {
            "benchmark": "time_to_accuracy",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(shlex.quote(a) for a in [_python(), *sys.argv]),
            "machine": info,
            "device": str(dev),
            "device_label": device_label(info),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "recipe": recipe.to_dict(),
            "epochs": epochs,
            "batch_size": batch_size,
            "seeds": args.seeds,
            "subset": args.subset,
            "targets": targets,
            "forward_flops_per_image": fwd,
            "peak_tflops": peak,
            "peak_source": peak_source,
            "gemm_ceiling": gemm,
            "cuda_startup_seconds": cuda_seconds,
            "warmup_seconds": warmup_seconds,
            "compile_warmup_seconds": compile_seconds,
            "runs": runs,
            "complete": complete,
            "summary": summarize(runs, targets, fwd, peak),
        }

    def write(report: dict[str, Any]) -> None:
        """Atomic writes, after every run: a run cut off by a time limit keeps the seeds it finished."""
        json_path.parent.mkdir(parents=True, exist_ok=True)
        texts = {
            json_path: json.dumps(report, indent=1, default=_json_default) + "\n",
            md_path: render_markdown(report),
        }
        for path, text in texts.items():
            tmp_path = path.with_name(path.name + ".tmp")
            tmp_path.write_text(text)
            tmp_path.replace(path)

    with tempfile.TemporaryDirectory(prefix="superconv-tta-") as tmp:
        setup = Setup(
            device=dev,
            data_root=prepare_data_root(args.data_dir, Path(tmp)),
            epochs=epochs,
            batch_size=batch_size,
            eval_batch_size=2 * batch_size,
            subset=args.subset,
            workers=args.workers,
            build_model=make_model,
        )
        preimport()
        warmup_seconds = model_warmup(setup)
        compile_seconds = None
        if recipe.compile and "superconv" in wanted:
            try:
                compile_seconds = compile_warmup(setup, recipe)
            except Exception:  # the superconv runs will fail and say why; the anchors still run
                traceback.print_exc()
        print(
            f"{device_label(info)}: {recipe.model} width {recipe.width}, batch {batch_size}, {epochs} epochs, "
            f"targets {', '.join(f'{t:.0%}' for t in targets)}; warm-up {warmup_seconds:.1f} s",
            file=sys.stderr,
        )
        for seed in range(args.seeds):
            order = wanted[seed % len(wanted) :] + wanted[: seed % len(wanted)]  # rotate: noise hits all
            for name in order:
                if name == "fastai" and skip_fastai:
                    runs.append(RunLog("fastai", seed, status=f"skipped: {skip_fastai}").to_dict())
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if name == "seed":
                            log = run_seed_recipe(setup, seed)
                        elif name == "fastai":
                            log = run_fastai_recipe(setup, seed, Path(tmp) / "fastai")
                        else:
                            log = run_superconv_recipe(setup, seed, recipe)
                except Exception as exc:  # a broken anchor must not lose the other recipes' numbers
                    traceback.print_exc()
                    log = RunLog(name, seed, status=f"failed: {type(exc).__name__}: {exc}")
                row = log.to_dict()
                runs.append(row)
                write(build_report(complete=False))
                last = row["epochs"][-1] if row["epochs"] else None
                print(
                    f"seed {seed} {name:>9}: "
                    + (
                        f"{last['test_accuracy']:.2%} after {row['total_seconds']:.1f} s "
                        f"(range test {row['range_test_seconds']:.1f} s, max_lr {row['max_lr']:.3g})"
                        if last
                        else row["status"]
                    ),
                    file=sys.stderr,
                )
                if dev.type == "cuda":
                    torch.cuda.empty_cache()

    report = build_report(complete=True)
    write(report)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


def _python() -> str:
    """The interpreter as the command line named it (relative to the working directory when inside it)."""
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(Path.cwd()))
    return exe.name


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
