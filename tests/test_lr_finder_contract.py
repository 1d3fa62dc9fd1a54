"""torch-lr-finder's contract, case by case: every test runs the same user code against ``torch_lr_finder.LRFinder``
and ``superconv.LRFinder`` (the ``LRFinder`` fixture is parametrized over both), so the two must agree on
signatures, exception types, history lengths and what ``plot`` returns. ``TestSameNumbers`` runs one script on both
and compares the recorded histories number for number.

The cases follow torch-lr-finder's documented usage (its README and docstrings); the differences superconv keeps on
purpose are listed in ``docs/lr_finder_dropin.md`` and tested in ``test_lr_finder.py``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt

tlf = pytest.importorskip("torch_lr_finder")
import superconv  # noqa: E402

Finder = Callable[..., Any]


@pytest.fixture(params=["torch-lr-finder", "superconv"])
def LRFinder(request: pytest.FixtureRequest) -> Finder:
    return tlf.LRFinder if request.param == "torch-lr-finder" else superconv.LRFinder


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


# --------------------------------------------------------------------------------------------- tasks


def xor_data(n: int = 800, extras: int = 0, seed: int = 0) -> TensorDataset:
    """8 random bits; the label is their parity (as float, for MSELoss); ``extras`` more columns per sample."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, 8), generator=g)
    label = (bits.sum(1, keepdim=True) % 2).float()
    tensors = [bits.float(), label, *(torch.randint(0, 2, (n,), generator=g) for _ in range(extras))]
    return TensorDataset(*tensors)


def xor_loader(n: int = 800, batch_size: int = 8, **kwargs: Any) -> DataLoader:
    return DataLoader(xor_data(n, **kwargs), batch_size=batch_size)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))


def sgd(model: nn.Module, lr: float = 1e-5) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr)


class CountingLoss(nn.MSELoss):
    """MSELoss that records every loss it returns (a spy: torch-lr-finder's tests use mocker.spy)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(output, target)
        self.values.append(loss.item())
        return loss


def count_calls(obj: Any, name: str) -> list[int]:
    """Wrap ``obj.name`` so each call is counted in the returned one-element list."""
    calls = [0]
    method = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return method(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


# --------------------------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("method", ["__init__", "range_test", "plot"])
def test_torch_lr_finder_calls_bind_the_same_way(method: str) -> None:
    theirs = list(inspect.signature(getattr(tlf.LRFinder, method)).parameters.values())
    ours = list(inspect.signature(getattr(superconv.LRFinder, method)).parameters.values())
    assert [p.name for p in ours[: len(theirs)]] == [p.name for p in theirs]  # same positional order
    for a, b in zip(theirs, ours):
        assert b.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD, b.name
        if a.default is not inspect.Parameter.empty:
            assert b.default == a.default, b.name
    # superconv's extras are keyword-only, after them
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in ours[len(theirs) :])


# --------------------------------------------------------------------------------------------- range_test


def test_fastai_style_usage(LRFinder: Finder) -> None:
    # torch-lr-finder's README: exponential sweep of the training loss from the optimizer's LR
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-7, weight_decay=1e-2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    lr_finder = LRFinder(model, optimizer, nn.MSELoss(), device="cpu")
    lr_finder.range_test(xor_loader(), end_lr=100, num_iter=100)
    history = lr_finder.history
    assert sorted(history) == ["loss", "lr"] and 2 <= len(history["lr"]) == len(history["loss"]) <= 100
    assert history["lr"][0] == 1e-7 and all(isinstance(v, float) for v in history["lr"] + history["loss"])
    assert lr_finder.best_loss == min(history["loss"])
    ax, lr = lr_finder.plot(ax=plt.subplots()[1])
    assert isinstance(ax, matplotlib.axes.Axes) and isinstance(lr, float) and lr > 0
    lr_finder.reset()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in initial.items())
    assert optimizer.param_groups[0]["lr"] == 1e-7


def test_leslie_smith_style_usage(LRFinder: Finder) -> None:
    # Validation loss, linear sweep, linear plot
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    lr_finder = LRFinder(model, optimizer, nn.MSELoss())
    lr_finder.range_test(xor_loader(), val_loader=xor_loader(64, seed=1), end_lr=0.1, num_iter=20, step_mode="linear")
    assert len(lr_finder.history["lr"]) == len(lr_finder.history["loss"]) == 20
    assert lr_finder.history["lr"] == pytest.approx(np.linspace(0.01, 0.1, 20).tolist())
    ax, _ = lr_finder.plot(log_lr=False, ax=plt.subplots()[1], skip_start=0, skip_end=0)
    assert ax.get_xscale() == "linear"
    lr_finder.reset()


@pytest.mark.parametrize(
    ("step_mode", "end_lr", "expected"),
    [("linear", 5e-5, [1e-5, 2e-5, 3e-5, 4e-5, 5e-5]), ("exp", 0.1, [1e-5, 1e-4, 1e-3, 1e-2, 0.1])],
)
def test_start_lr_none_starts_at_the_optimizer_lr(
    LRFinder: Finder,
    step_mode: str,
    end_lr: float,
    expected: list[float],
) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model, 1e-5), nn.MSELoss())
    lr_finder.range_test(xor_loader(), num_iter=5, step_mode=step_mode, end_lr=end_lr)
    assert lr_finder.history["lr"] == pytest.approx(expected)


def test_start_lr_sets_the_first_lr_and_step_mode_is_case_insensitive(LRFinder: Finder) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model, 0.5), nn.MSELoss())
    lr_finder.range_test(xor_loader(), start_lr=1e-4, end_lr=1e-2, num_iter=3, step_mode="EXP")
    assert lr_finder.history["lr"] == pytest.approx([1e-4, 1e-3, 1e-2])


@pytest.mark.parametrize("num_iter", [0, 1])
@pytest.mark.parametrize("step_mode", ["exp", "linear"])
def test_num_iter_below_two_is_a_value_error_naming_it(LRFinder: Finder, num_iter: int, step_mode: str) -> None:
    model = mlp()
    with pytest.raises(ValueError, match="num_iter"):
        LRFinder(model, sgd(model), nn.MSELoss()).range_test(
            xor_loader(), num_iter=num_iter, step_mode=step_mode, end_lr=5e-5
        )


@pytest.mark.parametrize("num_iter", [2, 3, 7])
def test_every_num_iter_it_accepts_gives_that_many_points(LRFinder: Finder, num_iter: int) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(xor_loader(), end_lr=1e-4, num_iter=num_iter)
    assert len(lr_finder.history["lr"]) == len(lr_finder.history["loss"]) == num_iter


def test_smooth_f_zero_records_the_raw_losses(LRFinder: Finder) -> None:
    model, criterion = mlp(), CountingLoss()
    lr_finder = LRFinder(model, sgd(model, 1e-3), criterion)
    lr_finder.range_test(xor_loader(), end_lr=0.5, num_iter=15, smooth_f=0)
    assert lr_finder.history["loss"] == pytest.approx(criterion.values, rel=1e-6)


def test_smooth_f_smooths_from_the_first_loss(LRFinder: Finder) -> None:
    model, criterion = mlp(), CountingLoss()
    lr_finder = LRFinder(model, sgd(model, 1e-3), criterion)
    lr_finder.range_test(xor_loader(), end_lr=0.5, num_iter=15, smooth_f=0.3)
    expected = [criterion.values[0]]
    for value in criterion.values[1:]:
        expected.append(0.3 * value + 0.7 * expected[-1])
    assert lr_finder.history["loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kwargs", [{"smooth_f": 1.0}, {"smooth_f": -0.1}, {"step_mode": "cosine"}])
def test_bad_smooth_f_or_step_mode_is_a_value_error(LRFinder: Finder, kwargs: dict[str, Any]) -> None:
    model = mlp()
    with pytest.raises(ValueError):
        LRFinder(model, sgd(model), nn.MSELoss()).range_test(xor_loader(), num_iter=5, **kwargs)


def test_divergence_stops_the_test(LRFinder: Finder) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model, 1e-3), nn.MSELoss())
    lr_finder.range_test(xor_loader(), end_lr=1e4, num_iter=100, diverge_th=3)
    history = lr_finder.history
    assert len(history["lr"]) < 100
    assert history["loss"][-1] > 3 * lr_finder.best_loss  # the point that diverged is recorded
    assert all(v <= 3 * lr_finder.best_loss for v in history["loss"][:-1])


def test_gradient_accumulation_calls_the_criterion_per_micro_batch(LRFinder: Finder) -> None:
    model, criterion = mlp(), CountingLoss()
    lr_finder = LRFinder(model, sgd(model), criterion)
    lr_finder.range_test(xor_loader(batch_size=8), num_iter=10, accumulation_steps=4)
    assert len(criterion.values) == 4 * 10 and len(lr_finder.history["lr"]) == 10


def test_device_memory_cache_and_cache_dir(LRFinder: Finder, tmp_path: Any) -> None:
    for kwargs in ({"device": "cpu"}, {"memory_cache": False}, {"memory_cache": False, "cache_dir": str(tmp_path)}):
        model = mlp()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        lr_finder = LRFinder(model, sgd(model), nn.MSELoss(), **kwargs)
        lr_finder.range_test(xor_loader(), end_lr=1.0, num_iter=5)
        lr_finder.reset()
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), kwargs


def test_reset_restores_discriminative_learning_rates(LRFinder: Finder) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 1e-3}, {"params": model[2].parameters(), "lr": 1e-5}],
        lr=1e-5,
        momentum=0.5,
    )
    lr_finder = LRFinder(model, optimizer, nn.MSELoss())
    lr_finder.range_test(xor_loader(), val_loader=xor_loader(64, seed=1), end_lr=0.1, num_iter=5)
    assert lr_finder.history["lr"][0] == 1e-3  # the first group's LR is recorded
    lr_finder.reset()
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-5]


# --------------------------------------------------------------------------------------------- loaders


class CustomLoaderIter:
    """Iterable, but neither a DataLoader nor a subclass of torch-lr-finder's adapters, and no length."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Any:
        return iter(self.loader)


def test_an_unsupported_train_loader_is_a_value_error(LRFinder: Finder) -> None:
    model = mlp()
    with pytest.raises(ValueError, match="`train_loader` has unsupported type"):
        LRFinder(model, sgd(model), nn.MSELoss()).range_test(CustomLoaderIter(xor_loader()), num_iter=5)


def test_an_unsupported_val_loader_is_a_value_error(LRFinder: Finder) -> None:
    model = mlp()
    with pytest.raises(ValueError, match="`val_loader` has unsupported type"):
        LRFinder(model, sgd(model), nn.MSELoss()).range_test(
            tlf.TrainDataLoaderIter(xor_loader()), val_loader=CustomLoaderIter(xor_loader()), num_iter=5
        )


class DictDataset(Dataset):
    def __init__(self) -> None:
        self.data = xor_data(160)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.data[i]
        return {"features": x, "target": y}


class DictTrainIter(tlf.TrainDataLoaderIter):
    def inputs_labels_from_batch(self, batch_data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_data["features"], batch_data["target"]


class DictValIter(tlf.ValDataLoaderIter):
    def inputs_labels_from_batch(self, batch_data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_data["features"], batch_data["target"]


def test_train_and_val_adapters_are_used(LRFinder: Finder) -> None:
    model = mlp()
    train = DictTrainIter(DataLoader(DictDataset(), batch_size=8))
    val = DictValIter(DataLoader(DictDataset(), batch_size=40))
    train_calls = count_calls(train, "inputs_labels_from_batch")
    val_calls = count_calls(val, "inputs_labels_from_batch")
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(train, val_loader=val, num_iter=30, end_lr=1e-3)  # 30 > 20 batches: the adapter cycles
    assert train_calls[0] == 30 and val_calls[0] == 30 * 4
    assert len(lr_finder.history["lr"]) == 30


def test_extra_values_in_a_batch_are_ignored(LRFinder: Finder) -> None:
    # (inputs, labels, *extras): only the first two are used
    model = mlp()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(xor_loader(extras=2), val_loader=xor_loader(64, extras=2), end_lr=1e-3, num_iter=5)
    assert len(lr_finder.history["lr"]) == 5


class TwoInputs(nn.Module):
    """A model with two inputs, taken as one tuple: torch-lr-finder calls ``model(inputs)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 1), nn.Linear(4, 1)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        left, right = inputs
        return self.a(left) + self.b(right)


class SplitIter(tlf.TrainDataLoaderIter):
    def inputs_labels_from_batch(self, batch_data: Any) -> tuple[Any, torch.Tensor]:
        x, y = batch_data
        return (x[:, :4], x[:, 4:]), y


def test_a_model_with_several_inputs(LRFinder: Finder) -> None:
    model = TwoInputs()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(SplitIter(xor_loader()), end_lr=1e-2, num_iter=10)
    assert len(lr_finder.history["lr"]) == 10


class WordModel(nn.Module):
    """Inputs that are not tensors: a list of words, looked up in the model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vocab = {"zero": 0, "one": 1}
        self.embed = nn.Embedding(2, 1)

    def forward(self, words: list[str]) -> torch.Tensor:
        return self.embed(torch.tensor([self.vocab[w] for w in words]))


def words_loader() -> DataLoader:
    samples = [("one", 1.0), ("zero", 0.0)] * 8

    def collate(batch: list[tuple[str, float]]) -> tuple[list[str], torch.Tensor]:
        return [w for w, _ in batch], torch.tensor([[v] for _, v in batch])

    return DataLoader(samples, batch_size=4, collate_fn=collate)  # type: ignore[arg-type]


def test_inputs_that_are_not_tensors(LRFinder: Finder) -> None:
    model = WordModel()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(words_loader(), val_loader=words_loader(), end_lr=1e-2, num_iter=6)
    assert len(lr_finder.history["lr"]) == 6


# --------------------------------------------------------------------------------------------- mixed precision


def test_torch_amp_backend(LRFinder: Finder) -> None:
    model = mlp()
    scaler = torch.amp.GradScaler("cpu")
    scale_calls = count_calls(scaler, "scale")
    lr_finder = LRFinder(
        model,
        sgd(model),
        nn.MSELoss(),
        amp_backend="torch",
        amp_config={"device_type": "cpu", "dtype": torch.bfloat16},
        grad_scaler=scaler,
    )
    lr_finder.range_test(xor_loader(), end_lr=1e-3, num_iter=8, accumulation_steps=2)
    assert scale_calls[0] == 8 * 2 and len(lr_finder.history["lr"]) == 8


@pytest.mark.parametrize("kwargs", [{"amp_backend": "torch"}, {"amp_backend": "apex"}, {"amp_backend": "tpu"}])
def test_amp_misconfiguration_is_a_value_error(LRFinder: Finder, kwargs: dict[str, Any]) -> None:
    # torch without a GradScaler, apex when it is not installed, an unknown backend
    pytest.importorskip("torch")
    if kwargs["amp_backend"] == "apex":
        try:
            import apex  # noqa: F401
        except ImportError:
            pass
        else:  # pragma: no cover - apex installed
            pytest.skip("apex is installed here")
    model = mlp()
    with pytest.raises(ValueError):
        LRFinder(model, sgd(model), nn.MSELoss(), **kwargs)


# --------------------------------------------------------------------------------------------- plot


@pytest.mark.parametrize("suggest_lr", [False, True])
@pytest.mark.parametrize("skip_start", [0, 5, 10])
@pytest.mark.parametrize("skip_end", [0, 5, 10])
def test_plot_draws_one_curve_and_returns_what_torch_lr_finder_returns(
    LRFinder: Finder,
    suggest_lr: bool,
    skip_start: int,
    skip_end: int,
) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(xor_loader(), num_iter=11, end_lr=0.1)
    ax = plt.subplots()[1]
    if suggest_lr and skip_start + skip_end + 2 > 11:
        with pytest.raises(RuntimeError, match="Need at least"):
            lr_finder.plot(skip_start=skip_start, skip_end=skip_end, suggest_lr=suggest_lr, ax=ax)
        return
    out = lr_finder.plot(skip_start=skip_start, skip_end=skip_end, suggest_lr=suggest_lr, ax=ax)
    assert len(ax.lines) == 1
    if suggest_lr:
        assert isinstance(out, tuple) and len(out) == 2 and out[0] is ax and isinstance(out[1], float)
        assert len(ax.collections) == 1
    else:
        assert out is ax and len(ax.collections) == 0
    x, y = ax.lines[0].get_data()
    window = slice(skip_start, -skip_end if skip_end else None)
    assert np.allclose(x, lr_finder.history["lr"][window]) and np.allclose(y, lr_finder.history["loss"][window])
    assert ax.get_xscale() == "log"


def test_plot_show_lr_and_bad_arguments(LRFinder: Finder) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(xor_loader(), num_iter=20, end_lr=0.1)
    ax = plt.subplots()[1]
    lr_finder.plot(ax=ax, show_lr=1e-3, suggest_lr=False)
    assert len(ax.lines) == 2  # the curve and the vertical line at show_lr
    for kwargs in ({"skip_start": -1}, {"skip_end": -1}, {"show_lr": "1e-3"}):
        with pytest.raises(ValueError):
            lr_finder.plot(ax=plt.subplots()[1], **kwargs)


def test_plot_without_axes_creates_and_shows_a_figure(LRFinder: Finder) -> None:
    model = mlp()
    lr_finder = LRFinder(model, sgd(model), nn.MSELoss())
    lr_finder.range_test(xor_loader(), num_iter=20, end_lr=0.1)
    ax, lr = lr_finder.plot()  # a pyplot figure, shown (a no-op on the Agg backend here)
    assert isinstance(ax, matplotlib.axes.Axes) and ax.figure in map(plt.figure, plt.get_fignums())
    assert math.isfinite(lr) and len(ax.lines) == 1


# --------------------------------------------------------------------------------------------- same numbers


class TestSameNumbers:
    """One script, both libraries: the same history (the same sweep, losses, smoothing and stop)."""

    @staticmethod
    def run(finder_class: Finder, script: Callable[[Finder], Any]) -> dict[str, list[float]]:
        torch.manual_seed(0)
        lr_finder = script(finder_class)
        return {k: list(v) for k, v in lr_finder.history.items()}

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"end_lr": 100, "num_iter": 100},
            {"end_lr": 1e4, "num_iter": 100, "diverge_th": 3},
            {"end_lr": 1.0, "num_iter": 30, "smooth_f": 0, "accumulation_steps": 3},
            {"start_lr": 1e-4, "end_lr": 0.5, "num_iter": 25, "step_mode": "linear", "smooth_f": 0.2},
        ],
        ids=["readme", "diverges", "accumulation", "linear"],
    )
    def test_training_loss_mode(self, kwargs: dict[str, Any]) -> None:
        def script(cls: Finder) -> Any:
            model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
            data = DataLoader(xor_data(400), batch_size=16, shuffle=True)
            lr_finder = cls(model, optimizer, nn.MSELoss())
            lr_finder.range_test(data, **kwargs)
            return lr_finder

        theirs, ours = self.run(tlf.LRFinder, script), self.run(superconv.LRFinder, script)
        assert len(ours["lr"]) == len(theirs["lr"])
        assert ours["lr"] == theirs["lr"]
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)

    def test_validation_mode(self) -> None:
        def script(cls: Finder) -> Any:
            model = mlp()
            lr_finder = cls(model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9), nn.MSELoss())
            lr_finder.range_test(xor_loader(), val_loader=xor_loader(100, batch_size=16, seed=2), end_lr=1.0,
                                 num_iter=20, step_mode="linear")  # fmt: skip
            return lr_finder

        theirs, ours = self.run(tlf.LRFinder, script), self.run(superconv.LRFinder, script)
        assert ours["lr"] == theirs["lr"]
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)
