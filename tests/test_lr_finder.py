"""LRFinder: exact restore (also after an exception), divergence, NaN, accumulation, AMP, batch shapes,
validation mode, exports and every bad argument's message. Tiny models: the whole file runs in seconds."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from superconv import LRFinder, RangeTestResult
from superconv.errors import ConfigError
from superconv.finder import suggest
from superconv.finder.lr_finder import find_lr

# --------------------------------------------------------------------------------------------- helpers


class Net(nn.Module):
    """Linear + BatchNorm (running stats, num_batches_tracked) + dropout (uses the RNG)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 3)
        self.register_buffer("scratch", torch.zeros(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scratch += 1  # a non-persistent buffer the forward pass changes: it must come back too
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def make_data(n_batches: int = 8, batch: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, generator=g)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 6, generator=g)
        out.append((x, (x @ w).argmax(1)))
    return out


def setup(opt: str = "adamw", warm: bool = True) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Net()
    if opt == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.85, 0.99), weight_decay=0.1)
    if warm:  # non-empty optimizer state and grads, running stats moved away from their init
        for x, y in make_data(3, seed=5):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()  # a mode the test must not leave changed
    return model, optimizer


def clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone(v) for v in obj)
    return obj


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bit-for-bit equality of nested state (tensors with torch.equal, dtype and device too)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.device == b.device and a.shape == b.shape, where
        assert torch.equal(a, b), f"tensor differs at {where}"
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def capture(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "params": clone(dict(model.named_parameters())),
        "buffers": clone(dict(model.named_buffers())),  # non-persistent ones too
        "grads": {n: clone(p.grad) for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "optimizer": clone(optimizer.state_dict()),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state()[1].copy(),
    }


def assert_restored(before: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    after = capture(model, optimizer)
    for key in ("params", "buffers", "grads", "modes", "optimizer", "torch_rng", "python_rng"):
        assert_same(before[key], after[key], key)
    assert np.array_equal(before["numpy_rng"], after["numpy_rng"])
    # the parameters are the same objects the optimizer holds (restored in place)
    assert [id(p) for p in model.parameters()] == [id(p) for g in optimizer.param_groups for p in g["params"]]


CE = nn.CrossEntropyLoss()

# --------------------------------------------------------------------------------------------- restore


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_exact_restore_after_a_completed_test(opt: str) -> None:
    model, optimizer = setup(opt)
    random.seed(3)
    np.random.seed(3)
    before = capture(model, optimizer)
    result = LRFinder(model, optimizer, CE).range_test(make_data(), start_lr=1e-5, end_lr=1.0, num_iter=20)
    assert len(result.lrs) > 0
    assert_restored(before, model, optimizer)


def test_exact_restore_when_the_loss_fn_raises_mid_test() -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)
    calls = 0

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 7:
            raise RuntimeError("boom in the user's loss")
        x, y = batch
        return CE(m(x), y)

    with pytest.raises(RuntimeError, match="boom"):
        LRFinder(model, optimizer, loss_fn=loss_fn).range_test(make_data(), num_iter=20)
    assert calls == 7
    assert_restored(before, model, optimizer)


def test_restore_of_grad_scaler_scheduler_and_fresh_optimizer() -> None:
    model, optimizer = setup(warm=False)  # empty optimizer state must stay empty
    sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    optimizer.step()
    sched.step()
    sched.step()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    before = capture(model, optimizer)
    sched_before = clone(sched.state_dict())
    scaler_before = clone(scaler.state_dict())
    finder = LRFinder(model, optimizer, CE, grad_scaler=scaler, scheduler=sched)
    finder.range_test(make_data(), num_iter=20)
    assert_restored(before, model, optimizer)
    assert_same(sched_before, sched.state_dict(), "scheduler")
    assert_same(scaler_before, scaler.state_dict(), "scaler")
    assert optimizer.param_groups[0]["lr"] == sched_before["_last_lr"][0]


def test_snapshot_file_only_when_asked_and_removed(tmp_path: Path) -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)
    LRFinder(model, optimizer, CE, memory_cache=False, cache_dir=tmp_path).range_test(make_data(), num_iter=15)
    assert_restored(before, model, optimizer)
    assert list(tmp_path.iterdir()) == []


def test_reset_is_safe_and_history_is_torch_lr_finder_shaped() -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)
    finder = LRFinder(model, optimizer, CE)
    finder.reset()  # before any test: nothing to do
    result = finder.range_test(make_data(), num_iter=20)
    finder.reset()
    finder.reset()
    assert_restored(before, model, optimizer)
    assert finder.history == {"lr": result.lrs, "loss": result.smoothed_losses}
    assert finder.result is result


# --------------------------------------------------------------------------------------------- stopping


def regression(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(x := torch.randn(32, 4, generator=g), x.sum(1, keepdim=True)) for _ in range(n)]


def test_divergence_stops_the_sweep_and_leaves_only_finite_points() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = capture(model, optimizer)
    result = LRFinder(model, optimizer, nn.MSELoss()).range_test(
        regression(), start_lr=1e-4, end_lr=100.0, num_iter=100
    )
    assert result.diverged and result.stop_reason in ("diverged", "non-finite")
    assert len(result.lrs) < 100 and result.lrs[-1] < 100.0
    assert all(math.isfinite(v) for v in result.losses + result.smoothed_losses + result.curve)
    assert result.quality == "ok"
    assert result.suggestion < result.lrs[-1]
    assert_restored(before, model, optimizer)


def test_divergence_with_negative_losses() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(m(x), y) - 10.0  # best is about -10

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stable = LRFinder(model, optimizer, loss_fn=loss_fn).range_test(regression(), start_lr=1e-4, end_lr=0.05)
    assert not stable.diverged and len(stable.lrs) == 100  # a negative best must not trigger at once
    wild = LRFinder(model, optimizer, loss_fn=loss_fn).range_test(regression(), start_lr=1e-4, end_lr=100.0)
    assert wild.diverged and len(wild.lrs) < 100


def test_nan_from_the_first_batch() -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return CE(m(x), y) * float("nan")

    result = LRFinder(model, optimizer, loss_fn=loss_fn).range_test(make_data(), num_iter=20)
    assert result.stop_reason == "non-finite" and result.diverged
    assert result.lrs == [] and result.losses == []
    assert result.quality == "diverged-immediately" and "start the sweep lower" in result.warning
    assert_restored(before, model, optimizer)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --------------------------------------------------------------------------------------------- steps


def test_accumulation_advances_per_update_and_records_the_mean() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[tuple[float, float]] = []  # (lr in force, micro-batch loss)
    steps = 0
    original_step = optimizer.step

    def counting_step(*args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        steps += 1
        return original_step(*args, **kwargs)

    optimizer.step = counting_step  # type: ignore[method-assign]

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(m(x), y)
        seen.append((optimizer.param_groups[0]["lr"], loss.item()))
        return loss

    result = LRFinder(model, optimizer, loss_fn=loss_fn).range_test(
        regression(5), start_lr=1e-5, end_lr=1e-2, num_iter=12, accumulation_steps=3
    )
    assert len(result.lrs) == 12 and steps == 12 and len(seen) == 36
    assert result.lrs == pytest.approx(np.geomspace(1e-5, 1e-2, 12).tolist())
    for i in range(12):
        micro = seen[3 * i : 3 * i + 3]
        assert {lr for lr, _ in micro} == {result.lrs[i]}  # one LR per update
        assert result.losses[i] == pytest.approx(np.mean([v for _, v in micro]), rel=1e-5)


def test_amp_skipped_steps_do_not_advance_the_sweep() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    # A scale this large overflows float32 gradients: the scaler skips and halves until it fits.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return 1e4 * nn.functional.mse_loss(m(x), y)

    result = LRFinder(model, optimizer, loss_fn=loss_fn, grad_scaler=scaler).range_test(
        regression(), start_lr=1e-9, end_lr=1e-6, num_iter=20
    )
    assert result.skipped_steps > 0
    assert len(result.lrs) == 20
    assert result.lrs == pytest.approx(np.geomspace(1e-9, 1e-6, 20).tolist())
    assert scaler.get_scale() == 2.0**127  # restored


def test_autocast_bfloat16_runs() -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)
    result = LRFinder(model, optimizer, CE).range_test(make_data(), num_iter=15, autocast_dtype=torch.bfloat16)
    assert len(result.lrs) > 0 and all(math.isfinite(v) for v in result.losses)
    assert_restored(before, model, optimizer)


# --------------------------------------------------------------------------------------------- batches


def test_dict_batches_with_a_loss_fn_and_a_short_loader_is_cycled() -> None:
    model, optimizer = setup()
    batches = [{"features": x, "label": y} for x, y in make_data(3)]

    def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return CE(m(batch["features"]), batch["label"])

    result = LRFinder(model, optimizer, loss_fn=loss_fn).range_test(batches, start_lr=1e-6, end_lr=1e-2, num_iter=30)
    assert len(result.lrs) == 30  # 3 batches, 30 updates: cycled 10 times


class HFStyle(nn.Module):
    """A model that takes keyword inputs and returns an object with ``.loss`` (as Hugging Face models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(input_ids)
        return {"logits": logits, "loss": CE(logits, labels)}


def test_hugging_face_style_dict_batches_need_no_criterion() -> None:
    model = HFStyle()
    optimizer = torch.optim.AdamW(model.parameters())
    batches = [{"input_ids": x, "labels": y} for x, y in make_data(4)]
    result = LRFinder(model, optimizer).range_test(batches, num_iter=20)
    assert len(result.lrs) > 0


class NoLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(input_ids)}


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 3), nn.Linear(2, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(z)


def test_multi_input_tuple_batches() -> None:
    model = TwoInputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(x, x[:, :2], y) for x, y in make_data(4)]
    assert len(LRFinder(model, optimizer, CE).range_test(batches, num_iter=20).lrs) > 0


def test_collections_with_a_length_are_accepted_iterators_without_one_refused() -> None:
    # Contract change: torch-lr-finder refuses everything but a DataLoader and its adapters; superconv also takes
    # any re-iterable collection with a length, and refuses (with torch-lr-finder's ValueError) what has none.
    model, optimizer = setup()

    def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from make_data(2)

    class Reiterable:
        def __iter__(self) -> Iterator[Any]:
            return gen()

    class Sized(Reiterable):
        def __len__(self) -> int:
            return 2

    assert len(LRFinder(model, optimizer, CE).range_test(Sized(), num_iter=12).lrs) == 12
    with pytest.raises(ValueError, match=r"`train_loader` has unsupported type: Reiterable\. Expected a torch"):
        LRFinder(model, optimizer, CE).range_test(Reiterable(), num_iter=12)
    with pytest.raises(ValueError, match=r"`train_loader` has unsupported type: generator"):
        LRFinder(model, optimizer, CE).range_test(gen(), num_iter=12)
    with pytest.raises(ConfigError, match=r"train_loader is empty \(len 0\); pass a loader with at least one"):
        LRFinder(model, optimizer, CE).range_test([], num_iter=20)

    class Lying(Reiterable):
        def __iter__(self) -> Iterator[Any]:
            return iter(())

        def __len__(self) -> int:
            return 1

    with pytest.raises(ConfigError, match=r"train_loader yielded no batches; .*drop_last"):
        LRFinder(model, optimizer, CE).range_test(Lying(), num_iter=20)
    with pytest.raises(ConfigError, match=r"val_loader yielded no batches"):
        LRFinder(model, optimizer, CE).range_test(make_data(), Lying(), num_iter=20)


def test_validation_mode() -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)
    result = LRFinder(model, optimizer, CE).range_test(
        make_data(), val_loader=make_data(5, seed=9), num_iter=20, val_batches=2
    )
    assert result.loss_kind == "val" and result.train_losses is not None
    assert len(result.train_losses) == len(result.losses)
    assert result.losses != result.train_losses
    assert_restored(before, model, optimizer)


# --------------------------------------------------------------------------------------------- outputs


def test_the_result_says_how_sure_its_suggestion_is() -> None:
    model, optimizer = setup("sgd")
    result = LRFinder(model, optimizer, CE).range_test(make_data(), num_iter=30)
    analysis = suggest.analyze(result.lrs, result.losses, result.smooth_f, stopped_early=result.diverged)
    assert result.confidence == analysis.confidence.to_dict()  # the curve's confidence, as plain data
    assert result.confidence["level"] in ("high", "medium", "low") and 0 <= result.confidence["score"] <= 1
    assert f"confidence {result.confidence['level']} ({result.confidence['score']:.2f}): " in result.summary()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["confidence"] == result.confidence and RangeTestResult.from_dict(data) == result
    flat = LRFinder(model, optimizer, CE).range_test(make_data(), start_lr=1e-9, end_lr=1e-8, num_iter=30)
    assert flat.quality in ("flat", "no-descent") and flat.confidence["level"] == "low"  # LRs far too small
    assert flat.confidence["advice"] and flat.confidence["advice"] in flat.warning
    assert "confidence low" in flat.summary()


def test_result_exports_plot_and_one_cycle_kwargs(tmp_path: Path) -> None:
    model, optimizer = setup("sgd")
    result = LRFinder(model, optimizer, CE).range_test(make_data(), num_iter=30)
    assert isinstance(result, RangeTestResult)
    assert set(result.estimates) == {"minimum", "steepest", "valley", "min_div_10", "min_div_3", "descent"}
    kwargs = result.one_cycle_kwargs()
    assert set(kwargs) == {"max_lr", "div_factor"} and kwargs["max_lr"] == result.suggestion
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, **kwargs, total_steps=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(kwargs["max_lr"] / kwargs["div_factor"])
    del sched

    data = json.loads(result.to_json(tmp_path / "r.json").read_text())
    assert data["suggestion"] == result.suggestion and data["lrs"] == result.lrs
    assert RangeTestResult.from_dict(data) == result
    rows = (tmp_path / "r.csv") if result.to_csv(tmp_path / "r.csv") else None
    assert rows is not None
    lines = rows.read_text().splitlines()
    assert lines[0] == "step,lr,loss,smoothed_loss" and len(lines) == len(result.lrs) + 1
    png = result.plot(tmp_path / "r.png")
    assert png is not None and (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "suggested max_lr=" in result.summary()


def test_find_lr_writes_what_is_asked(tmp_path: Path) -> None:
    model, optimizer = setup()
    result = find_lr(
        model,
        optimizer,
        make_data(),
        CE,
        num_iter=15,
        plot_path=tmp_path / "p.png",
        json_path=tmp_path / "r.json",
        csv_path=tmp_path / "r.csv",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "r.csv", "r.json"]
    assert result.num_iter == 15


def test_import_superconv_does_not_import_matplotlib() -> None:
    code = "import sys, superconv, superconv.finder.lr_finder; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_start_lr_none_starts_each_group_at_its_lr_and_find_lr_at_1e_7() -> None:
    # Contract change: torch-lr-finder's start_lr=None is the optimizer's LR (superconv used min(lr, 1e-7));
    # find_lr, superconv's one call, keeps 1e-7.
    model, optimizer = setup()
    result = LRFinder(model, optimizer, CE).range_test(make_data(), end_lr=1.0, num_iter=12)
    assert result.start_lr == 3e-3 and result.lrs[0] == 3e-3
    assert find_lr(model, optimizer, make_data(), CE, end_lr=1e-3, num_iter=12, start_lr=None).lrs[0] == 1e-7
    groups = torch.optim.SGD(
        [{"params": [model.fc1.weight], "lr": 1e-3}, {"params": [model.fc2.weight], "lr": 1e-5}], lr=1e-4
    )
    seen: list[list[float]] = []

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        seen.append([g["lr"] for g in groups.param_groups])
        return CE(m(batch[0]), batch[1])

    LRFinder(model, groups, loss_fn=loss_fn).range_test(make_data(), end_lr=0.1, num_iter=3)
    assert seen == [[1e-3, 1e-5], pytest.approx([1e-2, 1e-3]), [0.1, 0.1]]  # each group from its own LR
    assert [g["lr"] for g in groups.param_groups] == [1e-3, 1e-5]
    with pytest.raises(ConfigError, match=r"start_lr has 1 values but the optimizer has 2 param groups"):
        LRFinder(model, groups, loss_fn=loss_fn).range_test(make_data(), start_lr=[1e-5], num_iter=3)
    with pytest.raises(ConfigError, match=r"start_lr=None starts the sweep at the optimizer's LR, but param group 0"):
        LRFinder(model, torch.optim.SGD(model.parameters(), lr=0.0), CE).range_test(make_data(), num_iter=3)


# --------------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_lr": 0}, r"Expected start_lr to be a positive, finite number \(e\.g\. 1e-7\), but got 0"),
        ({"start_lr": -1e-3}, r"Expected start_lr to be a positive, finite number .*but got -0\.001"),
        ({"end_lr": float("inf")}, r"Expected end_lr to be a positive, finite number \(the last LR .*but got inf"),
        ({"start_lr": 1.0, "end_lr": 0.5}, r"end_lr=0\.5 must be greater than the start LR 1; the sweep goes up"),
        ({"start_lr": 1e-3, "end_lr": 1e-3}, r"end_lr=0\.001 must be greater than the start LR 0\.001"),
        ({"num_iter": 1}, r"Expected num_iter to be an integer >= 2, but got 1"),
        ({"num_iter": 50.0}, r"Expected num_iter to be an integer >= 2, but got 50\.0"),
        ({"step_mode": "log"}, r"Unknown step_mode 'log': expected one of exp, linear"),
        (
            {"smooth_f": 1},
            r"Expected smooth_f in \[0, 1\) \(the weight of the newest loss.*0: no smoothing\), but got 1",
        ),
        ({"diverge_th": 0.5}, r"Expected diverge_th to be a number >= 1 .*e\.g\. 5, but got 0\.5"),
        ({"accumulation_steps": 0}, r"Expected accumulation_steps to be a positive integer, but got 0"),
        ({"non_blocking_transfer": "yes"}, r"Expected non_blocking_transfer to be True or False, but got 'yes'"),
        ({"val_batches": 2}, r"val_batches=2 was given without a val_loader; pass val_loader="),
        ({"val_batches": 0, "val_loader": [1]}, r"Expected val_batches to be a positive integer, but got 0"),
        (
            {"autocast_dtype": torch.float64},
            r"autocast_dtype=torch\.float64 must be torch\.bfloat16, torch\.float16",
        ),
        ({"grad_scaler": object()}, r"grad_scaler=object is not a GradScaler; pass torch\.amp\.GradScaler"),
        (
            {"estimator": "magic"},
            r"Unknown estimator 'magic': expected one of minimum, steepest, valley, min_div_10, min_div_3, descent",
        ),
        ({"progress": "yes"}, r"Expected progress to be True, False or None \(only on a terminal\), but got 'yes'"),
        ({"val_loader": 3}, r"`val_loader` has unsupported type: int\. Expected a torch\.utils\.data\.DataLoader"),
    ],
)
def test_bad_range_test_arguments(kwargs: dict[str, Any], message: str) -> None:
    model, optimizer = setup()
    before = capture(model, optimizer)
    with pytest.raises(ConfigError, match=message):
        LRFinder(model, optimizer, CE).range_test(make_data(), **kwargs)
    assert_restored(before, model, optimizer)


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    model, optimizer = setup()
    with pytest.raises(ConfigError, match=r"model=str is not a torch\.nn\.Module; pass the model"):
        LRFinder("model", optimizer, CE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"optimizer=list is not a torch\.optim\.Optimizer; pass the optimizer"):
        LRFinder(model, [], CE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"criterion='ce' is not callable; pass a loss such as"):
        LRFinder(model, optimizer, "ce")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"loss_fn=3 is not callable; pass a function loss_fn\(model, batch\)"):
        LRFinder(model, optimizer, loss_fn=3)  # type: ignore[arg-type]
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(ConfigError, match=r"cache_dir='.*a-file' is a file, not a folder; pass a folder"):
        LRFinder(model, optimizer, CE, memory_cache=False, cache_dir=file)
    with pytest.raises(ConfigError, match=r"scheduler=int has no state_dict/load_state_dict"):
        LRFinder(model, optimizer, CE, scheduler=3)
    with pytest.raises(ConfigError, match=r"Unknown device 'gpu0': expected auto, cpu, cuda, cuda:N or mps"):
        LRFinder(model, optimizer, CE, device="gpu0")
    with pytest.raises(ConfigError, match=r"criterion=None and no loss_fn: pass a criterion"):
        LRFinder(model, optimizer).range_test(make_data(), num_iter=20)
    with pytest.raises(RuntimeError, match=r"Need at least 17 iterations to suggest a learning rate\. Got 0"):
        LRFinder(model, optimizer, CE).plot()  # torch-lr-finder's error (superconv raised ConfigError before)
    with pytest.raises(ConfigError, match=r"plot_detailed\(\) needs a finished range test: call range_test"):
        LRFinder(model, optimizer, CE).plot_detailed()
    with pytest.raises(ConfigError, match=r"Unknown amp backend: 'cuda'; expected None, 'torch' or 'apex'"):
        LRFinder(model, optimizer, CE, amp_backend="cuda")
    with pytest.raises(ConfigError, match=r"`grad_scaler` is required when using `torch\.amp` \(amp_backend='torch'\)"):
        LRFinder(model, optimizer, CE, amp_backend="torch")
    with pytest.raises(ConfigError, match=r"amp_config=\['cpu'\] must be a dict of torch\.autocast arguments"):
        LRFinder(model, optimizer, CE, amp_config=["cpu"])  # type: ignore[arg-type]


def test_bad_batches_and_losses_are_explained() -> None:
    model, optimizer = setup()
    tensors = [torch.randn(4, 6)] * 3
    no_loss, dict_batches = NoLoss(), [{"input_ids": torch.randn(4, 6)}]
    before = capture(model, optimizer)
    with pytest.raises(ConfigError, match=r"a batch of type Tensor is not \(inputs, \.\.\., target\); pass loss_fn="):
        LRFinder(model, optimizer, CE).range_test(tensors, num_iter=20)
    with pytest.raises(ConfigError, match=r"the loss must be a scalar tensor, got a tensor of shape \(16,\)"):
        LRFinder(model, optimizer, nn.CrossEntropyLoss(reduction="none")).range_test(make_data(), num_iter=20)
    with pytest.raises(ConfigError, match=r"returned dict without a 'loss' for a dict batch; pass loss_fn="):
        LRFinder(no_loss, optimizer, CE).range_test(dict_batches, num_iter=20)
    assert_restored(before, model, optimizer)


# --------------------------------------------------------------------------------------------- defects (issue 15)


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.fc(x))))


def bn_setup() -> tuple[nn.Module, torch.optim.Optimizer, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = BatchNormNet()
    model(torch.randn(16, 6))  # running stats away from their init
    model.eval()
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9), clone(dict(model.named_buffers()))


def test_device_argument_puts_back_the_buffers_module_to_replaced() -> None:
    # Issue 15 #1: Module.to(device) replaces buffer tensors; the snapshot used to copy the saved values into the
    # old objects, so the module kept the swept statistics, on the other device. "meta" is a second device on any
    # machine: the sweep fails on it at the first .item(), and everything must come back all the same.
    model, optimizer, buffers = bn_setup()
    before = capture(model, optimizer)
    running_mean = model.bn.running_mean
    with pytest.raises(RuntimeError, match="meta"):
        LRFinder(model, optimizer, CE, device="meta").range_test(make_data(), num_iter=10)
    assert model.bn.running_mean is running_mean  # the original objects, in place
    assert_same(buffers, dict(model.named_buffers()), "buffers")
    assert_restored(before, model, optimizer)


def test_snapshot_restores_tensors_replaced_behind_its_back() -> None:
    from superconv.finder.snapshot import Snapshot

    model, optimizer, buffers = bn_setup()
    weight = model.fc.weight
    snapshot = Snapshot(model, optimizer, None, None, torch.device("cpu"), None)
    model.bn.running_var = torch.full((8,), 7.0)  # what Module.to does to a buffer on another device
    model.fc.weight = nn.Parameter(torch.zeros(8, 6))  # and to a parameter with swapped conversion
    snapshot.restore()
    assert_same(buffers, dict(model.named_buffers()), "buffers")
    assert model.fc.weight is weight and optimizer.param_groups[0]["params"][0] is weight


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_cuda_for_a_cpu_model_restores_it_on_the_cpu() -> None:
    model, optimizer, buffers = bn_setup()
    before = capture(model, optimizer)
    result = LRFinder(model, optimizer, CE, device="cuda").range_test(make_data(), start_lr=1e-5, num_iter=20)
    assert len(result.lrs) > 0
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    assert_same(buffers, dict(model.named_buffers()), "buffers")
    assert_restored(before, model, optimizer)


def test_a_sweep_nan_from_the_start_says_so_instead_of_max_lr_nan(tmp_path: Path) -> None:
    # Issue 15 #9: one_cycle_kwargs() (what fit and the CLI use) returned max_lr=nan, which failed later with a
    # confusing message. It now says the sweep diverged at once, where, and what to try.
    model, optimizer = setup()

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        return CE(m(batch[0]), batch[1]) * float("nan")

    result = LRFinder(model, optimizer, loss_fn=loss_fn).range_test(make_data(), start_lr=1e-4, num_iter=20)
    message = r"diverged at once: the loss was NaN/inf at its first step \(lr=0\.0001\)\. Try a lower start_lr"
    with pytest.raises(ConfigError, match=message):
        result.one_cycle_kwargs()
    assert json.loads(result.to_json(tmp_path / "r.json").read_text())["one_cycle_kwargs"] is None
    with pytest.raises(ConfigError, match=r"check the data and the model for NaN/inf"):
        find_lr(model, optimizer, make_data(), loss_fn=loss_fn, num_iter=20, json_path=tmp_path / "f.json")
    assert (tmp_path / "f.json").exists()  # written before the error, for a look


def test_plot_with_a_path_saves_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 15 #9: LRFinder.plot(path=...) saved the figure twice.
    from matplotlib.figure import Figure

    saved: list[str] = []
    original = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda self, fname, **kw: (saved.append(str(fname)), original(self, fname, **kw))
    )
    model, optimizer = setup()
    finder = LRFinder(model, optimizer, CE)
    finder.range_test(make_data(), start_lr=1e-5, num_iter=30)
    ax, lr = finder.plot(path=tmp_path / "a.png")
    assert saved == [str(tmp_path / "a.png")] and lr == finder.result.suggestion  # type: ignore[union-attr]
    assert len(ax.lines) == 1 and len(ax.collections) == 1  # torch-lr-finder's figure: one curve, one dot
    finder.plot_detailed(tmp_path / "b.png")
    assert saved[1:] == [str(tmp_path / "b.png")] and (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("losses", "stops_at"),
    [
        ([2.0, 1.0, 0.8, 3.9, 4.1], 4),  # torch-lr-finder's rule: 4.1 > 5 * 0.8
        ([2.0, 0.01, 0.04, 0.06, 0.3], None),  # near zero: 0.06 > 5 * 0.01 would stop on noise; the floor holds
        ([2.0, 0.01, 0.5, 0.9], 3),  # ... until the rise is 4 tenths of the drop: 0.9 > 0.01 + 4 * 0.199
        ([-10.0, -11.0, -10.5, 20.0, 40.0], 4),  # negative best (5 * best would stop at once): 40 > -11 + 4 * 11
    ],
)
def test_the_divergence_rule_is_the_documented_one(losses: list[float], stops_at: int | None) -> None:
    # Issue 15 #9: the docstring said "for positive losses this is torch-lr-finder's rule", which the code was not.
    from superconv.finder.plan import Divergence

    watch = Divergence(smooth_f=0.0, diverge_th=5.0)
    flags = [watch.diverged(watch.add(v)) for v in losses]
    assert (flags.index(True) if True in flags else None) == stops_at


def test_history_holds_what_was_recorded_when_the_test_raises() -> None:
    # torch-lr-finder fills history as it goes; an interrupted test can still be plotted
    model, optimizer = setup()
    calls = 0

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 8:
            raise KeyboardInterrupt
        return CE(m(batch[0]), batch[1])

    finder = LRFinder(model, optimizer, loss_fn=loss_fn)
    with pytest.raises(KeyboardInterrupt):
        finder.range_test(make_data(), start_lr=1e-5, num_iter=20)
    assert len(finder.history["lr"]) == len(finder.history["loss"]) == 7
    assert finder.best_loss == min(finder.history["loss"])


def test_apex_backend_scales_the_loss_when_apex_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import types

    calls: list[float] = []

    @contextlib.contextmanager
    def scale_loss(loss: torch.Tensor, optimizer: Any) -> Iterator[torch.Tensor]:
        calls.append(loss.item())
        yield loss * 1.0

    apex_amp = types.ModuleType("apex.amp")
    apex_amp.scale_loss = scale_loss  # type: ignore[attr-defined]
    apex = types.ModuleType("apex")
    apex.amp = apex_amp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "apex", apex)
    monkeypatch.setitem(sys.modules, "apex.amp", apex_amp)
    model, optimizer = setup()
    optimizer._amp_stash = object()  # type: ignore[attr-defined]  # what amp.initialize leaves
    finder = LRFinder(model, optimizer, CE, amp_backend="apex")
    finder.range_test(make_data(), start_lr=1e-5, num_iter=6, accumulation_steps=2)
    assert len(calls) == 12 and len(finder.history["lr"]) == 6


def test_several_inputs_in_a_list_of_batches_but_inputs_labels_extras_from_a_dataloader() -> None:
    # The one batch rule that depends on the loader: a plain list keeps superconv's (x1, ..., xn, target); a
    # DataLoader follows torch-lr-finder's (inputs, labels, *extras).
    model = TwoInputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    xs, ys = zip(*make_data(4))
    as_list = [(x, x[:, :2], y) for x, y in zip(xs, ys)]
    assert len(LRFinder(model, optimizer, CE).range_test(as_list, num_iter=5).lrs) == 5
    x, y = torch.cat(xs), torch.cat(ys)
    extras = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, torch.zeros_like(y)), batch_size=16)
    one_input = nn.Linear(6, 3)
    finder = LRFinder(one_input, torch.optim.SGD(one_input.parameters(), lr=1e-4), CE)
    assert len(finder.range_test(extras, num_iter=5).lrs) == 5
