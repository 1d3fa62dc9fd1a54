"""superconv.fit on tiny real data (scikit-learn's digits): learning, resume, early stopping, NaN, counting."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch

from superconv import Callback, EarlyStopping, fit
from superconv.data import load_data
from superconv.errors import CheckpointError, ConfigError
from superconv.models import build_model
from superconv.train.state import FitState


def _data(batch_size: int = 64, **kw):
    return load_data("digits", batch_size=batch_size, seed=0, **kw)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)


def test_fit_learns_and_reports(tmp_path: Path) -> None:
    d = _data()
    r = fit(
        _model(),
        d.train,
        d.val,
        epochs=3,
        max_lr=5e-3,
        test_loader=d.test,
        out_dir=tmp_path,
        verbose=False,
        precision="fp32",
    )
    assert r.test_accuracy is not None and r.test_accuracy > 0.8
    assert r.epochs == 3 and len(r.history) == 3
    assert r.steps == 3 * len(d.train) == len(r.lrs)
    assert r.best_val_accuracy == max(h["val_accuracy"] for h in r.history)
    # the schedule applied is the one-cycle: peak at max_lr, ends orders of magnitude below
    assert max(r.lrs) == pytest.approx(5e-3, rel=1e-3) and r.lrs[-1] < 5e-3 / 1e4
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)  # plain data only
        assert "model" in ckpt


def test_fit_runs_the_range_test_when_no_max_lr() -> None:
    d = _data()
    r = fit(
        _model(),
        d.train,
        d.val,
        epochs=2,
        verbose=False,
        precision="fp32",
        range_test_kwargs={"num_iter": 30},
        verify=False,  # the suggestion itself (verification: tests/test_fit_verify.py)
    )
    assert r.range_test is not None and r.max_lr == r.range_test.suggestion
    assert r.range_test_seconds > 0


class _InterruptAt(Callback):
    """Sends the process a real SIGINT at a given optimizer update."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state: FitState) -> None:
        if state.step == self.step and state.batch > 0:
            os.kill(os.getpid(), signal.SIGINT)
            self.step = -1


@pytest.mark.parametrize("interrupt_at", [7, 20])  # mid-epoch, and exactly at an epoch boundary
def test_resume_after_an_interrupt_gives_the_same_final_weights(tmp_path: Path, interrupt_at: int) -> None:
    kwargs = {"epochs": 3, "max_lr": 5e-3, "verbose": False, "precision": "fp32"}
    d = _data()
    assert len(d.train) == 20
    full = _model()
    fit(full, d.train, d.val, **kwargs)

    d = _data()
    interrupted = _model()
    r1 = fit(interrupted, d.train, d.val, out_dir=tmp_path, callbacks=[_InterruptAt(interrupt_at)], **kwargs)
    assert r1.interrupted and "--resume" in r1.message
    assert r1.steps == interrupt_at

    d = _data()
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    r2 = fit(resumed, d.train, d.val, out_dir=tmp_path, resume=True, **kwargs)
    assert not r2.interrupted and r2.steps == 60 and len(r2.history) == 3
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


class _SpeedUpAt(Callback):
    """At a given update, brings the cycle's end closer, as the time budget does on a machine turned slower."""

    def __init__(self, step: int, steps: int) -> None:
        self.step, self.steps = step, steps

    def on_batch_end(self, state: FitState) -> None:
        if state.step == self.step and state.updated:
            state.total_steps = state.scheduler.speed_up(self.steps)
            state.epochs = math.ceil(state.total_steps / len(state.train_loader))
            self.step = -1


def test_a_run_whose_cycle_was_compressed_resumes_with_the_same_weight_average(tmp_path: Path) -> None:
    # ema="auto" takes its decay from the run's length; the length shrank when the cycle was compressed, and the
    # resumed run must go on with the decay the average began with (it refused to load it before).
    kwargs = {"epochs": 16, "max_lr": 5e-3, "verbose": False, "precision": "fp32", "ema": "auto", "ema_every": 1}
    full = _model()
    d = _data()
    ref = fit(full, d.train, d.val, callbacks=[_SpeedUpAt(10, 200)], **kwargs)
    assert ref.ema is not None and ref.steps == 210  # 320 planned: a weight average, its decay from 320

    d = _data()
    r1 = fit(_model(), d.train, d.val, out_dir=tmp_path, callbacks=[_SpeedUpAt(10, 200), _InterruptAt(25)], **kwargs)
    assert r1.interrupted and r1.steps == 25

    d = _data()
    resumed = _model(seed=123)
    r2 = fit(resumed, d.train, d.val, out_dir=tmp_path, resume=True, **kwargs)
    assert r2.steps == 210 and r2.ema == ref.ema
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_early_stopping_counts_epochs_without_improvement() -> None:
    stopper = EarlyStopping(patience=2)
    assert [stopper.update(v) for v in (0.5, 0.6, 0.55, 0.7, 0.7, 0.69)] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert stopper.best == 0.7
    loss = EarlyStopping(patience=1, mode="min")
    assert [loss.update(v) for v in (1.0, 0.9, 0.95)] == [False, False, True]


def test_early_stopping_in_fit() -> None:
    d = _data()
    # an LR so small nothing changes: validation accuracy cannot improve after the first epoch
    r = fit(_model(), d.train, d.val, epochs=10, max_lr=1e-12, patience=2, verbose=False, precision="fp32",
            schedule="constant")  # fmt: skip
    assert r.stopped_early and r.epochs == 3 and "early stopping" in r.message


class _NaNAfter(torch.nn.Module):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.calls, self.steps = 0, steps

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if self.calls > self.steps else loss


def test_nan_loss_stops_with_a_message_and_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    d = _data()
    r = fit(
        _model(),
        d.train,
        d.val,
        epochs=4,
        max_lr=5e-3,
        criterion=_NaNAfter(25),
        out_dir=tmp_path,
        test_loader=d.test,
        verbose=False,
        precision="fp32",
        log_every=5,
    )
    assert r.diverged and "NaN" in r.message and "--max-lr" in r.message
    assert r.epochs == 1 and (tmp_path / "best.pt").exists()
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in best.values() if v.is_floating_point())
    assert r.test_accuracy is not None and r.test_accuracy > 0.3  # evaluated on the best (finite) weights


def test_accumulation_counts_updates() -> None:
    d = _data()
    r = fit(_model(), d.train, None, epochs=2, max_lr=5e-3, accumulation_steps=3, verbose=False, precision="fp32")
    assert r.steps == 2 * math.ceil(20 / 3) == len(r.lrs)
    assert max(r.lrs) == pytest.approx(5e-3, rel=0.05)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "one-cycle-no-tail", "fastai"])
def test_baseline_schedules(schedule: str) -> None:
    d = _data()
    r = fit(_model(), d.train, None, epochs=2, max_lr=1e-2, schedule=schedule, verbose=False, precision="fp32")
    lrs = r.lrs
    assert len(lrs) == 40
    if schedule == "constant":
        assert set(lrs) == {1e-2}
    elif schedule == "step":
        assert lrs[0] == 1e-2 and lrs[20] == pytest.approx(1e-3) and lrs[30] == pytest.approx(1e-4)
    elif schedule == "cosine":
        assert lrs[0] == 1e-2 and lrs[-1] < 1e-4
    elif schedule == "one-cycle-no-tail":
        assert lrs[-1] == pytest.approx(1e-2 / 25, rel=0.05)
    else:
        assert lrs[-1] < 1e-6


class _Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_fit_start(self, state: FitState) -> None:
        self.events.append("start")

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        self.events.append(f"epoch{int(metrics['epoch'])}")
        state.stop_training = metrics["epoch"] >= 2

    def on_fit_end(self, state: FitState) -> None:
        self.events.append("end")


def test_callbacks_are_called_and_can_stop() -> None:
    d = _data()
    rec = _Recorder()
    r = fit(_model(), d.train, d.val, epochs=5, max_lr=5e-3, callbacks=[rec], verbose=False, precision="fp32")
    assert rec.events == ["start", "epoch1", "epoch2", "end"] and r.epochs == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ConfigError, r"epochs to be a positive integer, but got 0"),
        ({"accumulation_steps": 0}, ConfigError, r"accumulation_steps to be a positive integer"),
        ({"patience": 0}, ConfigError, r"patience to be a positive integer \(epochs\) or None, but got 0"),
        ({"monitor": "acc"}, ConfigError, r"Unknown monitor 'acc'"),
        ({"schedule": "linear"}, ConfigError, r"Unknown schedule 'linear'"),
        ({"max_lr": -1.0}, ConfigError, r"max_lr to be a positive, finite learning rate, but got -1\.0"),
        ({"optimizer": "lamb"}, ConfigError, r"Unknown optimizer 'lamb'"),
        ({"precision": "int8"}, ConfigError, r"Unknown precision 'int8'"),
        ({"resume": True}, ConfigError, r"resume=True needs out_dir"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    d = _data()
    args = {"epochs": 1, "max_lr": 1e-3, "verbose": False, **kwargs}
    with pytest.raises(error, match=match):
        fit(_model(), d.train, d.val, **args)


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    d = _data()
    with pytest.raises(CheckpointError, match=r"last.pt does not exist"):
        fit(_model(), d.train, d.val, epochs=1, out_dir=tmp_path, resume=True, verbose=False)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"last.pt"):
        fit(_model(), d.train, d.val, epochs=1, out_dir=tmp_path, resume=True, verbose=False)


def test_empty_or_unsized_loader() -> None:
    with pytest.raises(ConfigError, match=r"train_loader is empty"):
        fit(_model(), [], None, epochs=1, max_lr=1e-3, verbose=False)
    with pytest.raises(ConfigError, match=r"must have a length"):
        fit(_model(), iter([]), None, epochs=1, max_lr=1e-3, verbose=False)


def test_resume_into_a_different_model_is_a_clear_error(tmp_path: Path) -> None:
    d = _data()
    fit(_model(), d.train, d.val, epochs=1, max_lr=5e-3, out_dir=tmp_path, verbose=False, precision="fp32")
    torch.manual_seed(0)
    wider = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=16)
    with pytest.raises(CheckpointError, match=r"does not match this run .* Resume with the same model"):
        fit(wider, d.train, d.val, epochs=1, out_dir=tmp_path, resume=True, verbose=False, precision="fp32")
