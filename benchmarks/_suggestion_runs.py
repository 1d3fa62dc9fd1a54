"""What the suggestion benchmark trains and measures: one-cycle runs from fixed initial weights, superconv's range
test, and the two reference finders (torch-lr-finder's steepest gradient from its own sweep, fastai's valley
reimplemented). Shared by the development phase (``_suggestion_design.py``) and ``lr_suggestion.py``."""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from _suggestion_workloads import WORKLOADS, Split, Workload
from superconv.finder.lr_finder import LRFinder
from superconv.schedule.scheduler import OneCycleLR

START_LR, END_LR, NUM_ITER = 1e-7, 10.0, 100


def start(name: str, seed: int) -> tuple[Workload, tuple[Split, ...], dict[str, torch.Tensor], float]:
    """A job's beginning in a worker process: one torch thread, the workload, its data, the seed's initial weights
    and the start time."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    w = WORKLOADS[name]
    data = w.data()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    return w, data, {k: v.clone() for k, v in w.model().state_dict().items()}, t0


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


def val_loss(model: nn.Module, split: Split, criterion: nn.Module) -> float | None:
    """The validation loss (``None`` when not finite)."""
    model.eval()
    with torch.no_grad():
        loss = float(criterion(model(split[0]), split[1]))
    return loss if math.isfinite(loss) else None


def one_cycle(w: Workload, init: dict[str, torch.Tensor], data: tuple[Split, ...], seed: int, lr: float,
              steps: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A one-cycle run (``steps`` updates, default the workload's run) from ``init``: validation accuracy and loss,
    and (full runs only) test accuracy; ``diverged`` when the training loss became NaN/inf (the run stops there)."""
    train, val, test = data
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), lr)
    total = steps or w.run_steps(train)
    sched = OneCycleLR(opt, max_lr=lr, total_steps=total, div_factor=25.0)
    crit = w.criterion()
    model.train()
    done, diverged = 0, False
    loader = w.train_loader(train, seed)
    while done < total:
        for x, y in loader:
            loss = crit(model(x), y)
            if not torch.isfinite(loss):
                done, diverged = total, True  # the weights are what they are
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done == total:
                break
    full = total == w.run_steps(train)
    return {"val": accuracy(model, val), "val_loss": val_loss(model, val, crit),
            "test": accuracy(model, test) if full else None, "diverged": diverged,
            "seconds": time.perf_counter() - t0}  # fmt: skip


# --------------------------------------------------------------------------------------------- methods


def range_test(w: Workload, init: dict[str, torch.Tensor], train: Split, seed: int) -> tuple[Any, nn.Module, Any]:
    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), START_LR)
    result = LRFinder(model, opt, w.criterion()).range_test(
        w.train_loader(train, seed), start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER, progress=False
    )
    return result, model, opt


def torch_lr_finder_steepest(w: Workload, init: dict[str, torch.Tensor], train: Split, seed: int) -> float:
    """torch-lr-finder's own sweep, and the LR its ``plot(suggest_lr=True)`` returns (computed without a plot)."""
    from torch_lr_finder import LRFinder as TLRFinder
    from torch_lr_finder import TrainDataLoaderIter

    model = fresh(w, init)
    opt = w.make_optimizer(model.parameters(), START_LR)
    finder = TLRFinder(model, opt, w.criterion(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        loader = w.train_loader(train, seed)
        if not isinstance(loader, torch.utils.data.DataLoader):  # it takes DataLoaders or its own adapter only
            loader = TrainDataLoaderIter(loader)
        finder.range_test(loader, end_lr=END_LR, num_iter=NUM_ITER)
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
    crit = w.criterion()
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
