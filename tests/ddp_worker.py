"""One process of the DDP tests (tests/test_ddp.py), started by torchrun: ``ddp_worker.py SCENARIO OUT``.

Each scenario writes what the test compares to ``OUT/<scenario>-rank<R>.pt`` (plain data). The data are small
synthetic tensors in superconv's TensorLoader, sharded over the processes by ``fit`` (global batch 32).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import superconv
import superconv.distributed as distributed
from superconv.data.loaders import TensorLoader
from superconv.finder import LRFinder

torch.set_num_threads(1)
GLOBAL_BATCH = 32


def data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 1x8x8 uint8 images that a small model separates."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    noise = torch.randint(0, 120, (n, 1, 8, 8), generator=gen)
    images = noise + 30 * labels.view(-1, 1, 1, 1) * (torch.arange(8) < 4).view(1, 1, 1, 8)
    return images.clamp(0, 255).to(torch.uint8), labels


def loader(shuffle: bool = True, n: int = 256, seed: int = 0) -> TensorLoader:
    images, labels = data(n, seed)
    return TensorLoader(
        images, labels, batch_size=GLOBAL_BATCH, mean=[0.3], std=[0.3], shuffle=shuffle, drop_last=shuffle, seed=3
    )


def model() -> nn.Module:
    """No batch norm: the DDP curve equals the one-process curve on the same global batches."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))


class NaNOn(nn.Module):
    """``model``'s output, NaN on one rank from its ``after``-th training forward on."""

    def __init__(self, inner: nn.Module, rank: int, after: int) -> None:
        super().__init__()
        self.inner, self.rank, self.after, self.calls = inner, rank, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if distributed.rank() == self.rank and self.calls > self.after:
                return out * float("nan")
        return out


def weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def range_test(out: Path) -> dict[str, Any]:
    net = model()
    before = weights(net)
    ddp = distributed.wrap(net, torch.device("cpu"))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-5, momentum=0.9)
    result = LRFinder(ddp, optimizer, nn.CrossEntropyLoss()).range_test(
        loader().shard(distributed.rank(), distributed.world_size()), start_lr=1e-4, end_lr=10, num_iter=30
    )
    restored = all(torch.equal(before[k], v) for k, v in weights(net).items())
    return {"lrs": result.lrs, "losses": result.losses, "suggestion": result.suggestion, "restored": restored}


def fit(out: Path, resume: bool = False, epochs: int | None = 3, **kwargs: Any) -> dict[str, Any]:
    net = model()
    result = superconv.fit(
        net, loader(), loader(shuffle=False, n=100, seed=1), epochs=epochs, optimizer="sgd", verify=False,
        range_test_kwargs={"num_iter": 20}, out_dir=out / "run", resume=resume, progress=False, **kwargs,
    )  # fmt: skip
    return {
        "weights": weights(net),
        "steps": result.steps,
        "lrs": result.lrs,
        "max_lr": result.max_lr,
        "history": result.history,
        "diverged": result.diverged,
        "message": result.message,
        "world_size": distributed.world_size(),
        "decisions": result.decisions,
    }


def nan(out: Path) -> dict[str, Any]:
    """NaN on rank 1 only: in the range test from its 5th update, in training from its 10th batch."""
    torch.manual_seed(0)
    net = NaNOn(model(), rank=1, after=5)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-5)
    ddp = distributed.wrap(net, torch.device("cpu"))
    sharded = loader().shard(distributed.rank(), distributed.world_size())
    found = LRFinder(ddp, optimizer, nn.CrossEntropyLoss()).range_test(sharded, start_lr=1e-4, num_iter=30)
    net.after, net.calls = 10, 0
    trained = superconv.fit(net, loader(), epochs=3, max_lr=0.05, optimizer="sgd", progress=False, log_every=1000)
    return {
        "range_points": len(found.lrs),
        "range_stop": found.stop_reason,
        "suggestion": found.suggestion,
        "steps": trained.steps,
        "diverged": trained.diverged,
        "message": trained.message,
    }


class SlowRank(superconv.Callback):
    """Rank 1 turns slow once a fifth of the planned updates is done (another job took its core)."""

    def __init__(self) -> None:
        self.planned = 0

    def on_fit_start(self, state: Any) -> None:
        self.planned = state.total_steps

    def on_batch_end(self, state: Any) -> None:
        if distributed.rank() == 1 and state.step > self.planned // 5:
            time.sleep(0.02)


def budget(out: Path) -> dict[str, Any]:
    """A time budget under two processes, one of which slows down: one plan, one speed-up, the same schedule."""
    slow = SlowRank()
    report = fit(out, epochs=None, max_lr=0.05, time_budget=12, callbacks=[slow])  # type: ignore[arg-type]
    return {**report, "planned": slow.planned}


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    report: dict[str, Any]
    if scenario == "train":
        with distributed.session():
            report = {"range_test": range_test(out), "fit": fit(out)}
    elif scenario == "budget":
        with distributed.session():
            report = budget(out)
    elif scenario == "nan":
        with distributed.session():
            report = nan(out)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    torch.save(report, out / f"{scenario}-rank{int(os.environ.get('RANK', '0'))}.pt")


if __name__ == "__main__":
    main()
