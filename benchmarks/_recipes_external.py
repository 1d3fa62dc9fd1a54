"""The anchors of ``time_to_accuracy.py``: the seed's recipe and fastai's, plus what all recipes share.

Each recipe function takes a :class:`Setup` and a seed and returns a :class:`RunLog`: the test accuracy
after every epoch with the seconds elapsed since the recipe started (its data set-up, range test and
per-epoch evaluations included), and the pieces of that time.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
RANGE_TEST_ITERS = 100  # the seed's and fastai's range test length (both tools' default)


@dataclass
class Setup:
    """What every recipe of one benchmark run shares."""

    device: torch.device
    data_root: Path  # holds FashionMNIST/raw/<the four uncompressed idx files>
    epochs: int
    batch_size: int
    eval_batch_size: int
    subset: int | None
    workers: int  # DataLoader workers of the seed's and fastai's data path
    build_model: Callable[[], nn.Module]


@dataclass
class RunLog:
    recipe: str
    seed: int
    status: str = "ok"  # "ok", "skipped: ..." or "failed: ..."
    epochs: list[dict[str, float]] = field(default_factory=list)  # epoch, seconds, test_accuracy
    load_seconds: float = 0.0  # data set-up: files -> datasets/loaders (-> device)
    range_test_seconds: float = 0.0
    train_seconds: float = 0.0  # optimizer steps only: no range test, no evaluation
    total_seconds: float = 0.0  # start -> final test accuracy
    train_images: int = 0
    range_test_images: int = 0
    eval_images: int = 0  # forward passes at evaluation (TTA counts twice)
    max_lr: float | None = None
    precision: str = "fp32"
    notes: str = ""
    _t0: float = field(default=0.0, repr=False)

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def epoch_end(self, epoch: int, test_accuracy: float) -> None:
        self.epochs.append({"epoch": epoch, "seconds": self.elapsed(), "test_accuracy": test_accuracy})

    def finish(self) -> None:
        self.total_seconds = self.elapsed()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_t0")
        return d


def fp32_label(device: torch.device) -> str:
    """What "fp32" means for the anchors: on CUDA, torch lets cuDNN run fp32 convolutions in TF32 by default
    (``torch.backends.cudnn.allow_tf32``), which the anchors keep, as their users do."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "fp32, TF32 convolutions"
    return "fp32"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def prepare_data_root(source: Path, root: Path) -> Path:
    """Decompress the Debian .gz idx files into ``root/FashionMNIST/raw`` (what torchvision reads).

    Done once, before any timing: it stands for a data set that is already downloaded and extracted.
    All recipes (superconv included) then read the same uncompressed files.
    """
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        target = raw / name
        if not target.exists():
            with gzip.open(source / f"{name}.gz", "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


def preimport() -> None:
    """Import what the recipes import lazily, so that no recipe's clock pays a one-time import."""
    import importlib

    for module in (
        "torchvision.datasets",
        "torchvision.transforms",
        "matplotlib.pyplot",
        "torch_lr_finder",
        "tqdm.auto",
        "superconv.finder.lr_finder",
        "superconv.finder.suggest",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _torchvision_datasets(setup: Setup, seed: int) -> tuple[Any, Any]:
    """The seed's data path: torchvision's FashionMNIST with PIL transforms (crop+flip = superconv's)."""
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(FMNIST_MEAN, FMNIST_STD)
    train_tf = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=2),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    root = str(setup.data_root)
    train = datasets.FashionMNIST(root, train=True, transform=train_tf, download=False)
    test = datasets.FashionMNIST(root, train=False, transform=test_tf, download=False)
    if setup.subset is not None:
        idx = np.sort(np.random.default_rng(seed).permutation(len(train))[: setup.subset])
        train = Subset(train, idx.tolist())
    return train, test


@torch.no_grad()
def _test_accuracy(model: nn.Module, loader: Any, device: torch.device) -> tuple[float, int]:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.shape[0]
    model.train()
    return correct / total, total


# --------------------------------------------------------------------------------------------- (1) seed


def run_seed_recipe(setup: Setup, seed: int) -> RunLog:
    """torch-lr-finder's steepest-gradient suggestion, torch's OneCycleLR, AdamW, DataLoader, fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.data import DataLoader
    from torch_lr_finder import LRFinder

    dev = setup.device
    log = RunLog("seed", seed, precision=fp32_label(setup.device))
    seed_everything(seed)
    model = setup.build_model()
    log.start()
    train_ds, test_ds = _torchvision_datasets(setup, seed)
    pin = dev.type == "cuda"
    train_loader = DataLoader(
        train_ds,
        batch_size=setup.batch_size,
        shuffle=True,
        num_workers=setup.workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
    )
    test_loader = DataLoader(test_ds, batch_size=setup.eval_batch_size, num_workers=setup.workers, pin_memory=pin)
    model.to(dev)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters())  # torch's defaults: lr 1e-3, weight decay 1e-2
    log.load_seconds = log.elapsed()

    t = time.perf_counter()
    finder = LRFinder(model, optimizer, criterion, device=dev)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(train_loader, end_lr=10, num_iter=RANGE_TEST_ITERS)
        plotted = finder.plot(suggest_lr=True)  # its steepest-gradient suggestion, as its users get it
    ax, lr = plotted if isinstance(plotted, tuple) else (plotted, None)
    plt.close(ax.figure)
    finder.reset()  # restores the model and the optimizer
    sync(dev)
    log.range_test_seconds = time.perf_counter() - t
    log.range_test_images = len(finder.history["lr"]) * setup.batch_size
    del finder
    if lr is None or not np.isfinite(lr):
        log.status = "failed: torch-lr-finder gave no suggestion"
        log.finish()
        return log
    log.max_lr = float(lr)

    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=log.max_lr, epochs=setup.epochs, steps_per_epoch=len(train_loader)
    )
    for epoch in range(setup.epochs):
        model.train()
        t = time.perf_counter()
        running_loss = 0.0
        for x, y in train_loader:
            x, y = x.to(dev, non_blocking=pin), y.to(dev, non_blocking=pin)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running_loss += loss.item() * y.shape[0]  # the seed's per-batch host sync
            log.train_images += y.shape[0]
        sync(dev)
        log.train_seconds += time.perf_counter() - t
        accuracy, n = _test_accuracy(model, test_loader, dev)
        log.eval_images += n
        log.epoch_end(epoch + 1, accuracy)
    log.finish()
    return log


# --------------------------------------------------------------------------------------------- (2) fastai


def fastai_unavailable() -> str | None:
    """Why fastai cannot run here, or None."""
    try:
        import fastai.callback.schedule  # noqa: F401  (patches Learner.lr_find / fit_one_cycle)
        from fastai.learner import Learner  # noqa: F401
    except Exception as exc:  # any import failure (missing, or built for another torch) means: skip
        return f"fastai cannot be imported ({type(exc).__name__}: {exc})"
    return None


def run_fastai_recipe(setup: Setup, seed: int, workdir: Path) -> RunLog:
    """fastai's ``lr_find()`` (valley) + ``fit_one_cycle`` with its defaults (Adam, wd 1e-2, fp32).

    Data: fastai's own DataLoader over the same torchvision datasets (same PIL crop+flip transforms
    as the seed's recipe), the test set as fastai's validation set so that fit_one_cycle reports the
    test accuracy after every epoch.
    """
    import fastai.callback.schedule  # noqa: F401  (patches Learner.lr_find / fit_one_cycle)
    from fastai.callback.core import Callback as FastaiCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy

    dev = setup.device
    log = RunLog("fastai", seed, precision=fp32_label(setup.device))
    seed_everything(seed)  # fastai's shuffles draw from Python's random
    model = setup.build_model()
    log.start()
    train_ds, test_ds = _torchvision_datasets(setup, seed)
    pin = dev.type == "cuda"
    dls = DataLoaders(
        DataLoader(
            train_ds,
            bs=setup.batch_size,
            shuffle=True,
            num_workers=setup.workers,
            pin_memory=pin,
            device=dev,
        ),
        DataLoader(test_ds, bs=setup.eval_batch_size, num_workers=setup.workers, pin_memory=pin, device=dev),
        path=workdir,
        device=dev,
    )
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=workdir)
    log.load_seconds = log.elapsed()

    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):
        suggestion = learn.lr_find(show_plot=False)  # default suggest_funcs=(valley,)
    sync(dev)
    log.range_test_seconds = time.perf_counter() - t
    log.range_test_images = len(learn.recorder.lrs) * setup.batch_size
    log.max_lr = float(suggestion.valley)

    class EpochLog(FastaiCallback):
        order = 60  # after the Recorder (50) has gathered the epoch's metrics

        def before_epoch(self) -> None:
            self.t = time.perf_counter()
            self.seen = 0

        def after_batch(self) -> None:
            if self.training:
                self.seen += self.yb[0].shape[0]

        def before_validate(self) -> None:
            sync(dev)
            log.train_seconds += time.perf_counter() - self.t
            log.train_images += self.seen

        def after_epoch(self) -> None:
            metric = self.learn.recorder.metrics[0]  # fastai's `accuracy` on the validation (= test) set
            log.eval_images += len(test_ds)
            log.epoch_end(self.epoch + 1, float(metric.value))

    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):
        learn.fit_one_cycle(setup.epochs, log.max_lr, cbs=[EpochLog()])
    log.finish()
    return log
