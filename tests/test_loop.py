"""The training loop and its event interface: handlers without touching the loop, and the loop's arithmetic
(accumulation windows, skipped fp16 updates, a resumed epoch's metrics)."""

from __future__ import annotations

import copy
import csv
import os
import signal
from pathlib import Path

import pytest
import torch

import superconv
from superconv import Callback, fit
from superconv.data import load_data
from superconv.errors import ConfigError
from superconv.models import build_model
from superconv.schedule.baselines import build_scheduler
from superconv.schedule.steps import UpdateCounter
from superconv.train import loop
from superconv.train.state import FitState


def _data(batch_size: int = 64):
    return load_data("digits", batch_size=batch_size, seed=0)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)


class LRToCSV(superconv.Callback):
    """The handler the architecture promises in about 15 lines: the LR of every optimizer update, to a CSV file."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []

    def on_batch_end(self, state: FitState) -> None:
        if state.updated:  # the batch ended an optimizer update
            self.rows.append((state.step, state.applied_lr))

    def on_fit_end(self, state: FitState) -> None:
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerows([("step", "lr"), *self.rows])


def test_a_new_handler_logs_every_update_without_touching_the_loop(tmp_path: Path) -> None:
    d = _data()
    log = LRToCSV(tmp_path / "lr.csv")
    r = fit(_model(), d.train, d.val, epochs=2, max_lr=0.01, callbacks=[log], verbose=False, precision="fp32")
    with open(tmp_path / "lr.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step", "lr"] and len(rows) == 1 + r.steps
    assert [float(lr) for _, lr in rows[1:]] == r.lrs  # the LR each update applied, as fit reports it
    assert [int(s) for s, _ in rows[1:]] == list(range(1, r.steps + 1))


def test_on_fit_end_sees_the_final_weights_and_fit_returns_the_best() -> None:
    d = _data()

    class Capture(Callback):
        def on_fit_end(self, state: FitState) -> None:
            self.final = copy.deepcopy(state.model.state_dict())

    cap = Capture()
    model = _model()
    r = fit(model, d.train, d.val, epochs=4, max_lr=0.05, callbacks=[cap], verbose=False, precision="fp32")
    assert r.best_epoch is not None
    last = r.history[-1]
    if r.best_epoch < len(r.history) and last["val_accuracy"] != r.best_val_accuracy:
        assert any(not torch.equal(cap.final[k], v) for k, v in model.state_dict().items())


def test_accumulation_windows_apply_the_mean_gradient_also_the_last_shorter_one() -> None:
    """3 batches per epoch, windows of 2: the second window holds one batch and its gradient must not be halved."""
    torch.manual_seed(0)
    x, y = torch.randn(48, 5), torch.randint(0, 3, (48,))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    model = torch.nn.Linear(5, 3)
    at_update: list[tuple[dict[str, torch.Tensor], list[torch.Tensor]]] = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def capture(optimizer: object, args: object, kwargs: object) -> None:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        at_update.append((weights, [p.grad.detach().clone() for p in model.parameters()]))

    opt.register_step_pre_hook(capture)
    fit(model, batches, None, epochs=1, max_lr=0.1, optimizer=opt, accumulation_steps=2, schedule="constant",
        verbose=False, precision="fp32")  # fmt: skip
    assert len(at_update) == 2
    for (weights, grads), window in zip(at_update, (batches[:2], batches[2:])):
        ref = torch.nn.Linear(5, 3)
        ref.load_state_dict(weights)
        loss = sum(torch.nn.functional.cross_entropy(ref(a), b) for a, b in window) / len(window)
        loss.backward()
        for got, want in zip(grads, [p.grad for p in ref.parameters()]):
            torch.testing.assert_close(got, want)


def test_a_run_resumed_mid_epoch_reports_the_whole_epoch(tmp_path: Path) -> None:
    d = _data()
    kwargs = dict(epochs=2, max_lr=0.01, verbose=False, precision="fp32", progress=False)
    full = fit(_model(), d.train, d.val, **kwargs)

    class InterruptAt(Callback):
        def on_batch_end(self, state: FitState) -> None:
            if state.step == 25:  # mid-epoch 2
                os.kill(os.getpid(), signal.SIGINT)

    first = fit(_model(), d.train, d.val, out_dir=tmp_path, callbacks=[InterruptAt()], **kwargs)
    assert first.interrupted and len(first.history) == 1
    resumed = fit(_model(seed=5), d.train, d.val, out_dir=tmp_path, resume=True, **kwargs)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip


def test_skipped_fp16_updates_advance_no_schedule() -> None:
    """A GradScaler skip (inf gradients) must not step the schedule: baselines count real updates too."""
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    sched = build_scheduler("cosine", opt, 0.1, total_steps=10)
    state = FitState(model=model, optimizer=opt, scheduler=sched, device=torch.device("cpu"), scaler=scaler,
                     update_counter=UpdateCounter(opt))  # fmt: skip
    loss = scaler.scale(model(torch.full((2, 3), float("inf"))).sum())
    loss.backward()
    assert loop.optimizer_update(state) is False
    assert state.step == 0 and state.skipped_steps == 1 and sched.last_epoch == 0
    model.zero_grad()
    scaler.scale(model(torch.ones(2, 3)).sum()).backward()
    assert loop.optimizer_update(state) is True
    assert state.step == 1 and sched.last_epoch == 1


def test_the_range_test_sweeps_with_the_runs_accumulation() -> None:
    d = _data(batch_size=32)
    r = fit(_model(), d.train, d.val, epochs=1, accumulation_steps=2, range_test_kwargs={"num_iter": 20},
            verbose=False, precision="fp32")  # fmt: skip
    assert r.range_test.accumulation_steps == 2


def test_patience_without_validation_is_refused() -> None:
    d = _data()
    with pytest.raises(ConfigError, match=r"patience=3 needs a val_loader: early stopping watches the validation"):
        fit(_model(), d.train, None, epochs=2, max_lr=0.01, patience=3, verbose=False)


def test_a_stalled_one_cycle_run_finishes_its_cycle_instead_of_stopping_at_a_high_lr(tmp_path: Path) -> None:
    d = _data()
    # so small an LR that validation cannot improve after the first epoch: patience runs out early in the warm-up
    kwargs = dict(epochs=20, max_lr=1e-12, patience=2, verbose=False, precision="fp32", progress=False)
    r = fit(_model(), d.train, d.val, **kwargs)
    per_epoch = len(d.train)
    assert r.stopped_early and "finished early" in r.message
    assert 3 * per_epoch < r.steps < 20 * per_epoch
    # the run ends at the annihilation LR the planned cycle would have ended at, not at the LR of the stall
    stall = r.lrs[3 * per_epoch - 1]
    assert stall > 1e-12 / 25 and r.lrs[-1] == pytest.approx(1e-12 / 25 / 1e4, rel=1e-6)
    assert r.lrs[-1] == min(r.lrs)


def test_a_run_resumed_while_finishing_its_cycle_ends_bit_identical(tmp_path: Path) -> None:
    d = _data()
    kwargs = dict(epochs=20, max_lr=1e-12, patience=2, verbose=False, precision="fp32", progress=False)
    model = _model()
    full = fit(model, d.train, d.val, **kwargs)

    class InterruptAt(Callback):
        def on_batch_end(self, state: FitState) -> None:
            if state.step == full.steps - 10:  # inside the compressed anneal
                os.kill(os.getpid(), signal.SIGINT)

    first = fit(_model(), d.train, d.val, out_dir=tmp_path, callbacks=[InterruptAt()], **kwargs)
    assert first.interrupted
    resumed_model = _model(seed=3)
    resumed = fit(resumed_model, d.train, d.val, out_dir=tmp_path, resume=True, **kwargs)
    assert resumed.steps == full.steps
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_corrupt_last_checkpoint_falls_back_to_the_one_before_it(tmp_path: Path) -> None:
    d = _data()
    kwargs = dict(epochs=3, max_lr=0.01, verbose=False, precision="fp32", progress=False)
    full_model = _model()
    fit(full_model, d.train, d.val, **kwargs)

    class StopAfterEpoch2(Callback):
        def on_epoch_end(self, state: FitState, metrics: dict) -> None:
            if state.epoch == 1:
                state.stop_training = True

    fit(_model(), d.train, d.val, out_dir=tmp_path, callbacks=[StopAfterEpoch2()], **kwargs)
    assert (tmp_path / "last.prev.pt").exists()
    (tmp_path / "last.pt").write_bytes(b"\x80\x02 half a checkpoint")  # a disk fault
    resumed = _model(seed=9)
    with pytest.warns(UserWarning, match=r"last.pt: it is corrupt.*resuming from last.prev.pt"):
        r = fit(resumed, d.train, d.val, out_dir=tmp_path, resume=True, **kwargs)
    assert r.epochs == 3  # epoch 2 trained again from the checkpoint after epoch 1
    for (name, a), b in zip(full_model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
