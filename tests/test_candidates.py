"""Which LRs verification probes by default: the suggestion and the geometric mean of the curve's steepest point
and the suggestion, merged when close, with a fallback and clear errors; torch-lr-finder's suggestion read off the
same sweep (checked against torch-lr-finder itself)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from superconv.errors import ConfigError
from superconv.finder.candidates import MIN_RATIO, curve_steepest, default_candidates, lagged_steepest
from superconv.finder.lr_finder import LRFinder
from superconv.finder.result import RangeTestResult


def _result(smoothed: list[float], suggestion: float) -> RangeTestResult:
    lrs = [10 ** (-5 + i / 10) for i in range(len(smoothed))]
    return RangeTestResult(lrs=lrs, losses=smoothed, smoothed_losses=smoothed, suggestion=suggestion)


def test_lagged_steepest_is_torch_lr_finders_suggestion_on_the_same_sweep() -> None:
    torch_lr_finder = pytest.importorskip("torch_lr_finder")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, :3].sum(1) > 0).long()
    data = DataLoader(TensorDataset(x, y), batch_size=32)  # torch-lr-finder takes DataLoaders only

    def model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        return model, torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    model, optimizer = model_and_optimizer()
    theirs = torch_lr_finder.LRFinder(model, optimizer, nn.CrossEntropyLoss(), device="cpu")
    theirs.range_test(data, end_lr=10, num_iter=60)
    lrs, losses = theirs.history["lr"][10:-5], theirs.history["loss"][10:-5]
    expected = lrs[int(np.gradient(np.array(losses)).argmin())]  # what its plot(suggest_lr=True) returns

    model, optimizer = model_and_optimizer()
    ours = LRFinder(model, optimizer, nn.CrossEntropyLoss()).range_test(data, end_lr=10, num_iter=60, progress=False)
    assert lagged_steepest(ours) == pytest.approx(expected, rel=1e-12)


def test_default_candidates_are_the_suggestion_and_the_point_between_it_and_the_steepest_descent() -> None:
    # a clean curve: flat, a steady descent over two decades, a minimum, then the explosion the sweep stops at
    lrs = np.logspace(-5, 0, 60)
    x = np.log10(lrs)
    losses = 2.5 - 1.2 * np.tanh(1.6 * (x + 3.0)) + np.where(x > -1.0, 8.0 * (x + 1.0) ** 2, 0.0)
    result = RangeTestResult(lrs=lrs.tolist(), losses=losses.tolist(), smoothed_losses=losses.tolist(),
                             suggestion=float(lrs[int(np.argmin(losses))]))  # fmt: skip
    steepest = curve_steepest(result)
    assert steepest is not None and 3e-4 < steepest < 3e-3  # the tanh's steepest point is at 1e-3
    candidates = default_candidates(result)
    assert candidates == pytest.approx([math.sqrt(steepest * result.suggestion), result.suggestion])
    assert candidates[0] < result.suggestion / MIN_RATIO  # two distinct probes


def test_close_candidates_are_probed_once_and_a_curve_without_a_steepest_point_falls_back_to_the_suggestion() -> None:
    lrs = np.logspace(-5, 0, 60)
    drop = np.where(lrs < 1e-2, 3.0, 1.0)  # one sharp step right below the minimum: steepest ~ minimum
    result = RangeTestResult(lrs=lrs.tolist(), losses=drop.tolist(), smoothed_losses=drop.tolist(), suggestion=1.1e-2)
    steepest = curve_steepest(result)
    assert steepest is not None
    between = math.sqrt(steepest * 1.1e-2)
    assert 1 / MIN_RATIO < between / 1.1e-2 < MIN_RATIO
    assert default_candidates(result) == pytest.approx([min(between, 1.1e-2)])  # merged: the lower one
    empty = RangeTestResult(lrs=[1e-3], losses=[1.0], smoothed_losses=[1.0], suggestion=0.02)
    assert curve_steepest(empty) is None
    assert default_candidates(empty) == pytest.approx([0.02])


def test_lagged_steepest_needs_its_window() -> None:
    short = _result([3.0, 2.0, 1.0] * 5, suggestion=0.02)  # 15 points: torch-lr-finder's window is empty
    assert lagged_steepest(short) is None
    assert lagged_steepest(_result([3.0] * 15 + [3.0 - 0.2 * i for i in range(10)] + [1.0] * 15, 0.01)) is not None


@pytest.mark.parametrize("suggestion", [math.nan, 0.0, -1.0])
def test_no_usable_suggestion_is_explained(suggestion: float) -> None:
    with pytest.raises(ConfigError, match=r"The range test gave no usable suggestion .* pass candidates=\[\.\.\.\]"):
        default_candidates(_result([2.0] * 30, suggestion))
