"""How good is each LR finder's suggestion, measured the way users feel it: the final accuracy of a short
one-cycle run that uses it as ``max_lr``.

For each (dataset, model, optimizer) combination and seed, every finder probes the SAME initial model on
the SAME data (100 steps, 1e-7 -> 10 or the tool's defaults):

(a) superconv's default suggestion (``LRFinder.range_test(...).suggestion``),
(b) torch-lr-finder's steepest-gradient suggestion (``range_test`` + ``plot(suggest_lr=True)``),
(c) fastai's ``valley`` (``Learner.lr_find(suggest_funcs=(valley,))``),
(d) Lightning's tuner (``Tuner(trainer).lr_find(...)`` with its defaults, ``.suggestion()``),

and then a one-cycle run (torch's ``OneCycleLR``: cos, div_factor 25) trains from that same initial model
with the same batch order for each suggested LR and for each LR of a log-spaced grid (e). The table gives
each final test accuracy and each suggestion's gap to the grid's best.

Run: ``.venv/bin/python benchmarks/lr_suggestion.py`` (about 15 minutes on 2 CPU cores). The anchors are
optional (``pip install torch-lr-finder fastai lightning``); a missing one is reported and skipped.
Writes ``benchmarks/results/lr_suggestion.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from superconv.finder.lr_finder import LRFinder
from superconv.finder.suggest import DEFAULT_ESTIMATOR, ESTIMATORS

HERE = Path(__file__).resolve().parent
FMNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
START_LR, END_LR, NUM_ITER = 1e-7, 10.0, 100

# --------------------------------------------------------------------------------------------- data


def _idx(path: Path) -> np.ndarray:
    """Read an idx file (.gz): the header gives the number of dimensions and their sizes."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def digits() -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits (offline): 1437 train / 360 test, a fixed split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    x = torch.tensor(x[perm] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[perm], dtype=torch.long)
    return TensorDataset(x[:1437], y[:1437]), TensorDataset(x[1437:], y[1437:])


def fashion_mnist(n_train: int = 5_000, n_test: int = 5_000) -> tuple[TensorDataset, TensorDataset]:
    """A fixed subset of Fashion-MNIST (n_train of the 60k training images, n_test of the 10k test ones)."""

    def load(split: str, n: int) -> TensorDataset:
        x = _idx(FMNIST / f"{split}-images-idx3-ubyte.gz")
        y = _idx(FMNIST / f"{split}-labels-idx1-ubyte.gz")
        idx = np.random.default_rng(1).permutation(len(x))[:n]
        xt = (torch.tensor(x[idx], dtype=torch.float32) / 255.0 - 0.2860) / 0.3530
        return TensorDataset(xt.unsqueeze(1), torch.tensor(y[idx], dtype=torch.long))

    return load("train", n_train), load("t10k", n_test)


# --------------------------------------------------------------------------------------------- models


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def tiny_cnn(batchnorm: bool = False, width: int = 8) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm2d(cout)] if batchnorm else []
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, width), *block(width, 2 * width), nn.Flatten(), nn.Linear(2 * width * 49, 10))


@dataclass(frozen=True)
class Combo:
    name: str
    data: Callable[[], tuple[TensorDataset, TensorDataset]]
    model: Callable[[], nn.Module]
    optimizer: str  # "sgd" or "adamw"
    batch_size: int
    epochs: int
    grid: tuple[float, ...]

    def make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)


def _half_decades(lo: float, hi: float) -> tuple[float, ...]:
    return tuple(float(f"{10 ** (e / 2):.3g}") for e in range(round(2 * lo), round(2 * hi) + 1))


COMBOS = {
    "digits-mlp-sgd": Combo("digits-mlp-sgd", digits, mlp, "sgd", 64, 10, _half_decades(-3, 0.5)),
    "fmnist-cnn-adamw": Combo("fmnist-cnn-adamw", fashion_mnist, tiny_cnn, "adamw", 128, 3, _half_decades(-4, -0.5)),
    "fmnist-bncnn-sgd": Combo(
        "fmnist-bncnn-sgd",
        fashion_mnist,
        lambda: tiny_cnn(batchnorm=True),
        "sgd",
        128,
        3,
        _half_decades(-3, 0.5),
    ),
}

# --------------------------------------------------------------------------------------------- training


def loader(ds: TensorDataset, batch_size: int, seed: int, shuffle: bool = True) -> DataLoader:
    """A loader whose batch order depends only on ``seed`` (every finder and run sees the same batches)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=shuffle)


def accuracy(model: nn.Module, ds: TensorDataset) -> float:
    model.eval()
    x, y = ds.tensors
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
    return 100.0 * correct / len(x)


def one_cycle(
    combo: Combo,
    init: dict[str, torch.Tensor],
    train: TensorDataset,
    test: TensorDataset,
    seed: int,
    max_lr: float,
) -> float:
    """Final test accuracy (%) of a one-cycle run from ``init`` with peak LR ``max_lr``."""
    if not (math.isfinite(max_lr) and max_lr > 0):
        return float("nan")
    torch.manual_seed(seed)
    model = combo.model()
    model.load_state_dict(init)
    dl = loader(train, combo.batch_size, seed)
    opt = combo.make_optimizer(model.parameters(), max_lr)
    total = combo.epochs * len(dl)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, div_factor=25.0)
    crit = nn.CrossEntropyLoss()
    model.train()
    for _ in range(combo.epochs):
        for x, y in dl:
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x), y)
            if not torch.isfinite(loss):
                return accuracy(model, test)  # diverged: the weights are what they are
            loss.backward()
            opt.step()
            sched.step()
    return accuracy(model, test)


# --------------------------------------------------------------------------------------------- finders


def fresh(combo: Combo, init: dict[str, torch.Tensor]) -> nn.Module:
    model = combo.model()
    model.load_state_dict(init)
    return model


def find_superconv(combo: Combo, init: dict[str, torch.Tensor], train: TensorDataset, seed: int) -> dict[str, Any]:
    model = fresh(combo, init)
    opt = combo.make_optimizer(model.parameters(), START_LR)
    result = LRFinder(model, opt, nn.CrossEntropyLoss()).range_test(
        loader(train, combo.batch_size, seed), start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER
    )
    return {
        "lr": result.suggestion,
        "estimates": result.estimates,
        "quality": result.quality,
        "div_factor": result.div_factor,
        "curve": {"lr": result.lrs, "loss": result.losses},
    }


def find_torch_lr_finder(
    combo: Combo, init: dict[str, torch.Tensor], train: TensorDataset, seed: int
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder as TLRFinder

    model = fresh(combo, init)
    opt = combo.make_optimizer(model.parameters(), START_LR)
    finder = TLRFinder(model, opt, nn.CrossEntropyLoss(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader(train, combo.batch_size, seed), end_lr=END_LR, num_iter=NUM_ITER)
        ax, lr = finder.plot(suggest_lr=True)  # its steepest-gradient suggestion, as its users get it
    plt.close(ax.figure)
    return {"lr": float(lr) if lr is not None else float("nan")}


def find_fastai(combo: Combo, init: dict[str, torch.Tensor], train: TensorDataset, test: TensorDataset,
                seed: int) -> dict[str, Any]:  # fmt: skip
    from functools import partial

    from fastai.callback.schedule import valley
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import OptimWrapper

    model = fresh(combo, init)
    if combo.optimizer == "sgd":
        opt_func = partial(OptimWrapper, opt=torch.optim.SGD, momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        opt_func = partial(OptimWrapper, opt=torch.optim.AdamW, weight_decay=1e-2)
    dls = DataLoaders(loader(train, combo.batch_size, seed), loader(test, 1000, seed, shuffle=False), device="cpu")
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=opt_func)
    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):
        res = learn.lr_find(suggest_funcs=(valley,), show_plot=False)
    return {"lr": float(res.valley)}


def find_lightning(combo: Combo, init: dict[str, torch.Tensor], train: TensorDataset, seed: int) -> dict[str, Any]:
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = fresh(combo, init)
            self.lr = START_LR
            self.crit = nn.CrossEntropyLoss()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.crit(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return combo.make_optimizer(self.parameters(), self.lr)

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir="/tmp/superconv-bench-lightning",
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder = Tuner(trainer).lr_find(Module(), train_dataloaders=loader(train, combo.batch_size, seed))
    lr = finder.suggestion() if finder is not None else None
    return {"lr": float(lr) if lr is not None else float("nan")}


# --------------------------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_one(combo: Combo, train: TensorDataset, test: TensorDataset, seed: int, every_estimator: bool) -> dict:
    """All finders and all one-cycle runs for one combination and seed."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    init = {k: v.clone() for k, v in combo.model().state_dict().items()}
    finders: dict[str, dict[str, Any]] = {"superconv": find_superconv(combo, init, train, seed)}
    anchors: dict[str, Callable[[], dict[str, Any]]] = {
        "torch-lr-finder": lambda: find_torch_lr_finder(combo, init, train, seed),
        "fastai": lambda: find_fastai(combo, init, train, test, seed),
        "lightning": lambda: find_lightning(combo, init, train, seed),
    }
    for tool, fn in anchors.items():
        try:
            finders[tool] = fn()
        except ImportError as exc:
            finders[tool] = {"lr": float("nan"), "error": f"not installed: {exc}"}
    cache: dict[float, float] = {}

    def acc(lr: float) -> float:
        if lr not in cache:
            cache[lr] = one_cycle(combo, init, train, test, seed, lr)
        return cache[lr]

    grid = {lr: acc(lr) for lr in combo.grid}
    best_lr = max(grid, key=lambda k: grid[k])
    for f in finders.values():
        f["acc"] = acc(f["lr"])
        f["gap"] = grid[best_lr] - f["acc"]
    sc = finders["superconv"]
    if every_estimator:
        sc["estimate_acc"] = {k: acc(v) for k, v in sc["estimates"].items()}
    return {
        "combo": combo.name,
        "seed": seed,
        "grid": {f"{k:g}": v for k, v in grid.items()},
        "grid_best_lr": best_lr,
        "grid_best_acc": grid[best_lr],
        "finders": finders,
        "seconds": time.perf_counter() - t0,
    }


def run(combos: list[str], seeds: list[int], every_estimator: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for name in combos:
        combo = COMBOS[name]
        train, test = combo.data()
        for seed in seeds:
            row = run_one(combo, train, test, seed, every_estimator)
            rows.append(row)
            cells = [f"{k} {v['lr']:.3g} -> {v['acc']:.2f}% (gap {v['gap']:+.2f})" for k, v in row["finders"].items()]
            print(f"{name} seed {seed}: grid best {row['grid_best_acc']:.2f}% @ {row['grid_best_lr']:g}; "
                  + "; ".join(cells) + f"  [{row['seconds']:.0f}s]", flush=True)  # fmt: skip
            sc = row["finders"]["superconv"]
            if every_estimator:
                est = {k: f"{v:.3g} -> {sc['estimate_acc'][k]:.2f}" for k, v in sc["estimates"].items()}
                print(f"   superconv estimators: {est}; grid: {row['grid']}", flush=True)
    return {"machine": machine(), "default_estimator": DEFAULT_ESTIMATOR, "rows": rows}


def with_default(report: dict[str, Any], estimator: str) -> dict[str, Any]:
    """The report as if ``estimator`` were the default (the finder's curve does not depend on it)."""
    for row in report["rows"]:
        sc = row["finders"]["superconv"]
        sc["lr"] = sc["estimates"][estimator]
        sc["acc"] = sc["estimate_acc"][estimator]
        sc["gap"] = row["grid_best_acc"] - sc["acc"]
    report["default_estimator"] = estimator
    return report


TOOLS = ("superconv", "torch-lr-finder", "fastai", "lightning")


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# LR suggestion quality: final one-cycle accuracy",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}, "
        f"Python {m['python']}. superconv's default estimator: `{report['default_estimator']}`.",
        "",
        "Each cell: suggested max_lr -> final test accuracy (gap to the best LR of the grid, in points; "
        "lower is better, negative means better than the whole grid).",
        "",
        "Caveat: superconv's default estimator was chosen by looking at these same combinations (there is no "
        "held-out set); the last table shows every estimator, so the choice can be checked.",
        "",
        "| combination | seed | grid best | superconv | torch-lr-finder | fastai valley | Lightning tuner |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        cells = []
        for tool in TOOLS:
            f = row["finders"].get(tool)
            if f is None or not math.isfinite(f["lr"]):
                cells.append("n/a")
            else:
                cells.append(f"{f['lr']:.2g} -> {f['acc']:.2f}% ({f['gap']:+.2f})")
        lines.append(
            f"| {row['combo']} | {row['seed']} | {row['grid_best_acc']:.2f}% @ {row['grid_best_lr']:g} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Mean gap (points) per combination; worst gap in brackets:", ""]
    lines += [
        "| combination | superconv | torch-lr-finder | fastai valley | Lightning tuner |",
        "|---|---|---|---|---|",
    ]
    for combo in dict.fromkeys(r["combo"] for r in report["rows"]):
        cells = []
        for tool in TOOLS:
            gaps = [r["finders"][tool]["gap"] for r in report["rows"] if r["combo"] == combo and tool in r["finders"]]
            gaps = [g for g in gaps if math.isfinite(g)]
            cells.append(f"{np.mean(gaps):+.2f} [{max(gaps):+.2f}]" if gaps else "n/a")
        lines.append(f"| {combo} | " + " | ".join(cells) + " |")
    lines += ["", "Grid accuracies (%):", ""]
    for row in report["rows"]:
        grid = ", ".join(f"{k}: {v:.2f}" for k, v in row["grid"].items())
        lines.append(f"- {row['combo']} seed {row['seed']}: {grid}")
    if any("estimate_acc" in r["finders"]["superconv"] for r in report["rows"]):
        lines += ["", "Every superconv estimator (LR -> accuracy, gap):", ""]
        lines += [
            "| combination | seed | " + " | ".join(ESTIMATORS) + " |",
            "|---|---|" + "---|" * len(ESTIMATORS),
        ]
        for row in report["rows"]:
            sc = row["finders"]["superconv"]
            cells = [
                f"{sc['estimates'][k]:.2g} -> {sc['estimate_acc'][k]:.2f}% "
                f"({row['grid_best_acc'] - sc['estimate_acc'][k]:+.2f})"
                for k in ESTIMATORS
            ]
            lines.append(f"| {row['combo']} | {row['seed']} | " + " | ".join(cells) + " |")
    total = sum(r["seconds"] for r in report["rows"])
    lines += ["", f"Total time: {total / 60:.1f} minutes.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combos", nargs="+", default=list(COMBOS), choices=list(COMBOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--all-estimators", action="store_true", help="also train at every superconv estimator")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lr_suggestion")
    parser.add_argument("--report-only", action="store_true", help="re-render the .md from the .json")
    parser.add_argument("--default", choices=ESTIMATORS, help="report this estimator as the default")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.report_only:
        report = json.loads(args.out.with_suffix(".json").read_text())
    else:
        report = run(args.combos, args.seeds, args.all_estimators)
    if args.default is not None:
        report = with_default(report, args.default)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
