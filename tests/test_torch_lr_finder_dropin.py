"""Code written for ``torch_lr_finder.LRFinder`` runs unchanged with superconv's.

``SCRIPT`` is a script in torch-lr-finder's documented style (its README's example). It is executed once
with ``from superconv import LRFinder`` and, when torch-lr-finder is installed, once with the original
import, to show the same code works with both and to compare what users get.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # the script calls plot(), which shows a figure: headless here

SCRIPT = """
import torch
import torch.nn as nn
import torch.optim as optim
{import_line}

torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
w = torch.randn(20, 4, generator=g)
xs = torch.randn(640, 20, generator=g)
ys = (xs @ w).argmax(1)
trainloader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(xs, ys), batch_size=32, shuffle=True, generator=g
)

model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=1e-7, weight_decay=1e-2)
initial = {{k: v.clone() for k, v in model.state_dict().items()}}

lr_finder = LRFinder(model, optimizer, criterion, device="cpu")
lr_finder.range_test(trainloader, end_lr=100, num_iter=100)
ax, suggested = lr_finder.plot(suggest_lr=True)  # to inspect the loss-learning rate graph
lrs, losses = lr_finder.history["lr"], lr_finder.history["loss"]
lr_finder.reset()  # to reset the model and optimizer to their initial state
after = model.state_dict()
"""


def run_script(import_line: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(SCRIPT.format(import_line=import_line), namespace)
    return namespace


def check(ns: dict[str, Any]) -> None:
    assert len(ns["lrs"]) == len(ns["losses"]) > 10
    assert all(isinstance(v, float) for v in ns["lrs"] + ns["losses"])
    assert ns["suggested"] is not None and math.isfinite(ns["suggested"]) and ns["suggested"] > 0
    assert ns["ax"].get_xscale() == "log"
    for key, value in ns["initial"].items():
        assert torch.equal(value, ns["after"][key]), key


def test_torch_lr_finder_script_runs_unchanged_with_superconv() -> None:
    ns = run_script("from superconv import LRFinder")
    check(ns)
    result = ns["lr_finder"].result
    assert ns["suggested"] == result.suggestion
    assert ns["losses"] == result.smoothed_losses  # history["loss"] is smoothed, as in torch-lr-finder
    assert ns["lr_finder"].history is not None


def test_positional_arguments_match_torch_lr_finder() -> None:
    # torch-lr-finder's order: range_test(train_loader, val_loader, start_lr, end_lr, num_iter, step_mode...)
    from superconv import LRFinder

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(4)]
    finder = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss(), "cpu")
    result = finder.range_test(data, data[:2], 1e-4, 1.0, 20, "linear")
    assert result.loss_kind == "val" and result.step_mode == "linear"
    assert result.lrs[0] == pytest.approx(1e-4) and result.num_iter == 20


def test_same_script_with_torch_lr_finder_and_superconv_suggestion_is_sound() -> None:
    pytest.importorskip("torch_lr_finder")
    theirs = run_script("from torch_lr_finder import LRFinder")
    ours = run_script("from superconv import LRFinder")
    check(ours)
    # Both sweep the same model from the same start; superconv's suggestion is read off its lag-free curve,
    # never past its minimum and never in the diverged tail (benchmarks/lr_suggestion.py measures which
    # suggestion trains better).
    res = ours["lr_finder"].result
    assert res.quality == "ok"
    assert res.lrs[0] == pytest.approx(theirs["lrs"][0], rel=0.5)
    assert res.suggestion <= res.min_lr < res.lrs[-1]
