"""Which LRs verification probes by default: half the suggestion and torch-lr-finder's own suggestion, read off
the same sweep (checked against torch-lr-finder itself), merged when close, with a fallback and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from superconv.errors import ConfigError
from superconv.finder.candidates import MIN_RATIO, default_candidates, lagged_steepest
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


def test_default_candidates_are_half_the_suggestion_and_the_lagged_steepest_point() -> None:
    smoothed = [3.0] * 15 + [3.0 - 0.2 * i for i in range(10)] + [1.0] * 15
    result = _result(smoothed, suggestion=0.01)
    steep = lagged_steepest(result)
    assert steep is not None and steep != pytest.approx(0.005)
    assert default_candidates(result) == sorted([0.005, steep])


def test_close_candidates_are_probed_once_and_a_short_sweep_falls_back_to_the_suggestion() -> None:
    smoothed = [3.0] * 15 + [3.0 - 0.2 * i for i in range(10)] + [1.0] * 15
    steep = lagged_steepest(_result(smoothed, 1.0))
    assert steep is not None
    near = _result(smoothed, suggestion=2 * steep * (MIN_RATIO - 0.05) ** 0.5)  # s/2 within 15% of the steepest
    assert len(default_candidates(near)) == 1
    short = _result([3.0, 2.0, 1.0] * 5, suggestion=0.02)  # 15 points: torch-lr-finder's window is empty
    assert lagged_steepest(short) is None
    assert default_candidates(short) == pytest.approx([0.01, 0.02])


@pytest.mark.parametrize("suggestion", [math.nan, 0.0, -1.0])
def test_no_usable_suggestion_is_explained(suggestion: float) -> None:
    with pytest.raises(ConfigError, match=r"The range test gave no usable suggestion .* pass candidates=\[\.\.\.\]"):
        default_candidates(_result([2.0] * 30, suggestion))
