"""WeightEMA: the average it keeps, its interval, its state, and how fit uses it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from superconv import Callback, fit
from superconv.data import load_data
from superconv.errors import CheckpointError, ConfigError
from superconv.models import build_model
from superconv.train.ema import WeightEMA
from superconv.train.state import FitState


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _set_all(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
        for b in model.buffers():
            if b.is_floating_point():
                b.fill_(value)


def test_the_average_follows_the_ema_formula_for_weights_and_float_buffers() -> None:
    model = _net()
    ema = WeightEMA(model, decay=0.9, warmup=False)
    expected = None
    for step, value in enumerate([1.0, 2.0, 5.0, -3.0], start=1):
        _set_all(model, value)
        model[1].num_batches_tracked.fill_(10 * step)
        ema.update(step)
        expected = value if expected is None else 0.9 * expected + 0.1 * value  # the first update copies
        for name, t in ema.module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                assert t.item() == 10 * step, "integer buffers are copied, not averaged"
            else:
                torch.testing.assert_close(t, torch.full_like(t, expected), msg=name)


def test_every_k_updates_compounds_the_decay() -> None:
    model = _net()
    ema = WeightEMA(model, decay=0.9, every=4, warmup=False)
    _set_all(model, 1.0)
    for step in range(1, 4):
        ema.update(step)  # not due: nothing folded in yet
    assert ema.updates == 0
    ema.update(4)  # first update copies
    _set_all(model, 0.0)
    ema.update(8)
    weight = next(iter(ema.module.parameters()))
    torch.testing.assert_close(weight, torch.full_like(weight, 0.9**4))
    assert ema.half_life == pytest.approx(math.log(2) / -math.log(0.9))


def test_state_dict_round_trips_and_refuses_other_settings() -> None:
    model = _net()
    ema = WeightEMA(model, decay=0.99)
    _set_all(model, 2.0)
    ema.update(1)
    state = ema.state_dict()
    assert all(t.device.type == "cpu" for t in state["module"].values())
    other = WeightEMA(_net(), decay=0.99)
    other.load_state_dict(state)
    for a, b in zip(ema.module.state_dict().values(), other.module.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match=r"saved with decay=0.99, every=1, warmup=True; this run has decay=0.9,"):
        WeightEMA(_net(), decay=0.9).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"warmup=False: resume with the same EMA settings"):
        WeightEMA(_net(), decay=0.99, warmup=False).load_state_dict(state)


def test_the_decay_warms_up_with_the_update_count() -> None:
    model = _net()
    ema = WeightEMA(model, decay=0.99)
    assert [round(ema.decay_at(t), 4) for t in (0, 8, 90, 10_000)] == [0.1, 0.5, 0.91, 0.99]
    _set_all(model, 1.0)
    ema.update(1)  # copies
    _set_all(model, 0.0)
    ema.update(2)  # decay (1 + 2) / (10 + 2) = 0.25
    weight = next(iter(ema.module.parameters()))
    torch.testing.assert_close(weight, torch.full_like(weight, 0.25))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"decay": 1.0}, r"EMA decay to be a number in \(0, 1\), e.g. 0.99, but got 1.0"),
        ({"decay": 0}, r"EMA decay to be a number in \(0, 1\)"),
        ({"decay": "0.9"}, r"EMA decay to be a number in \(0, 1\)"),
        ({"every": 0}, r"EMA update interval to be a positive integer, but got 0"),
    ],
)
def test_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WeightEMA(_net(), **kwargs)


def test_a_compiled_wrapper_is_refused() -> None:
    wrapper = nn.Module()
    wrapper._orig_mod = _net()  # what torch.compile's OptimizedModule carries
    with pytest.raises(ConfigError, match=r"not its torch.compile wrapper"):
        WeightEMA(wrapper)


# --- in fit ----------------------------------------------------------------------------------------------


def _data():
    return load_data("digits", batch_size=64, seed=0)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)


class _Snapshots(Callback):
    """Keeps copies of the raw weights at each epoch end."""

    def __init__(self) -> None:
        self.raw: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        self.raw.append({k: v.clone() for k, v in state.model.state_dict().items()})


def test_fit_validates_and_returns_the_averaged_weights(tmp_path: Path) -> None:
    d = _data()
    snaps = _Snapshots()
    model = _model()
    r = fit(
        model,
        d.train,
        d.val,
        epochs=3,
        max_lr=5e-3,
        ema=0.9,
        test_loader=d.test,
        out_dir=tmp_path,
        callbacks=[snaps],
        verbose=False,
        precision="fp32",
    )
    assert r.test_accuracy is not None and r.test_accuracy > 0.8
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == r.best_epoch
    # the returned model holds the best checkpoint's (averaged) weights, not the raw weights of that epoch
    for name, value in model.state_dict().items():
        assert torch.equal(value, best["model"][name]), name
    raw = snaps.raw[r.best_epoch - 1]
    assert any(not torch.equal(raw[k], best["model"][k]) for k in raw if raw[k].is_floating_point())
    assert torch.load(tmp_path / "last.pt", weights_only=True)["ema"]["decay"] == 0.9


def test_fit_without_validation_returns_the_final_average() -> None:
    d = _data()
    model = _model()
    snaps = _Snapshots()
    fit(model, d.train, None, epochs=2, max_lr=5e-3, ema=0.5, callbacks=[snaps], verbose=False, precision="fp32")
    raw = snaps.raw[-1]  # raw weights at the end; with decay 0.5 the average lags them
    assert any(not torch.equal(v, raw[k]) for k, v in model.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("interrupt_at", [7])
def test_resume_with_ema_is_exact(tmp_path: Path, interrupt_at: int) -> None:
    import os
    import signal

    class _InterruptAt(Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_batch_end(self, state: FitState) -> None:
            if state.step == self.step:
                os.kill(os.getpid(), signal.SIGINT)
                self.step = -1

    kwargs = {"epochs": 2, "max_lr": 5e-3, "ema": 0.9, "verbose": False, "precision": "fp32"}
    full = _model()
    fit(full, _data().train, _data().val, **kwargs)
    part = _model()
    r1 = fit(part, _data().train, _data().val, out_dir=tmp_path, callbacks=[_InterruptAt(interrupt_at)], **kwargs)
    assert r1.interrupted
    resumed = _model(seed=5)
    fit(resumed, _data().train, _data().val, out_dir=tmp_path, resume=True, **kwargs)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    plain = {**kwargs, "ema": None}
    fit(_model(), _data().train, _data().val, out_dir=tmp_path / "plain", **plain)
    with pytest.raises(CheckpointError, match=r"without an EMA; resume it with ema=None \(.* --no-ema\)"):
        fit(_model(), _data().train, _data().val, out_dir=tmp_path / "plain", resume=True, **kwargs)
