"""The training loop: epochs of batches, one optimizer update per ``accumulation_steps`` batches.

Everything else (EMA, NaN guard, checkpoints, early stopping, progress, the table) is a handler on the events
of :mod:`superconv.train.events`. Batches arrive on the device; losses and accuracies accumulate as device
tensors, so the loop itself never waits for the device.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch

import superconv.distributed as distributed
from superconv.train.evaluation import evaluate
from superconv.train.events import Events
from superconv.train.optim import first_group_momentum
from superconv.train.state import FitState


def run(state: FitState, events: Events) -> None:
    """Train from ``state.epoch`` (and ``state.start_batch``) to ``state.epochs`` or until a handler stops."""
    events.fire("on_fit_start", state)
    state.clock.start()
    while state.epoch < state.epochs and state.stop_reason is None and not state.stop_training:
        events.fire("on_epoch_start", state)
        skip, state.start_batch = state.start_batch, 0
        if not skip or state.meter is None:  # a run resumed mid-epoch keeps the epoch's sums so far
            state.meter = EpochMeter(state.device)
        meter = state.meter
        for index, (inputs, labels) in epoch_batches(state.train_loader, state.epoch, skip):
            train_batch(state, index, inputs, labels, meter)
            state.batch = index + 1
            events.fire("on_batch_end", state)
            if state.updated and (state.stop_reason is not None or state.step >= state.total_steps):
                break  # stopped, or the planned updates are done (a run sized to a budget ends mid-epoch)
        events.fire("on_train_epoch_end", state)
        if state.stop_reason is not None:
            break
        metrics = meter.metrics(state)
        metrics.update(validate(state))
        metrics["seconds"] = state.clock()
        state.history.append(metrics)
        events.fire("on_epoch_end", state, metrics)
        state.epoch += 1
    events.fire("on_fit_end", state)


def epoch_batches(loader: Iterable[Any], epoch: int, skip: int) -> Iterator[tuple[int, Any]]:
    """``(batch index, batch)`` for one epoch, starting at batch ``skip`` (a resumed run).

    The loader's order must be a function of the epoch (``set_epoch``) for a resume to be exact; superconv's
    loaders can also start at a batch without producing the skipped ones. A ``DataLoader``'s sampler with a
    ``set_epoch`` (``DistributedSampler``) gets the epoch: a new shuffle every epoch, the same on every process.
    """
    set_epoch = getattr(loader, "set_epoch", None) or getattr(getattr(loader, "sampler", None), "set_epoch", None)
    if set_epoch is not None and skip and "start_batch" in inspect.signature(set_epoch).parameters:
        set_epoch(epoch, start_batch=skip)
        return enumerate(loader, start=skip)
    if set_epoch is not None:
        set_epoch(epoch)
    return itertools.islice(enumerate(loader), skip, None)


def train_batch(state: FitState, index: int, inputs: torch.Tensor, labels: torch.Tensor, meter: EpochMeter) -> None:
    """Forward and backward one batch; the optimizer update when it completes an accumulation window.

    Each loss is divided by the size of its accumulation window, so the update applies the mean gradient of the
    window's batches, also for the shorter last window of an epoch.
    """
    inputs = inputs.to(state.device, non_blocking=True)
    labels = labels.to(state.device, non_blocking=True)
    if state.channels_last and inputs.ndim == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    assert state.forward_model is not None
    with state.autocast():
        logits = state.forward_model(inputs)
        loss = state.criterion(logits, labels)
    accumulation, batches = state.accumulation_steps, state.batches_per_epoch
    window = min(accumulation, batches - index + index % accumulation)
    scaled = loss / window if window > 1 else loss
    (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
    state.loss = loss.detach()
    meter.add(state.loss, logits, labels)
    window_end = (index + 1) % accumulation == 0 or index + 1 == batches
    state.updated = window_end and optimizer_update(state)


def optimizer_update(state: FitState) -> bool:
    """One optimizer update at the scheduled LR, then the schedule's next value.

    Returns False when the GradScaler skipped the update (inf/NaN gradients in fp16): then neither the schedule
    nor ``state.step`` advances, so every schedule counts real updates only.
    """
    optimizer = state.optimizer
    state.applied_lr = float(optimizer.param_groups[0]["lr"])
    state.applied_momentum = first_group_momentum(optimizer)
    if state.scaler is not None:
        assert state.update_counter is not None
        before = state.update_counter.count
        state.scaler.step(optimizer)
        state.scaler.update()
        stepped = state.update_counter.count != before
    else:
        optimizer.step()
        stepped = True
    optimizer.zero_grad(set_to_none=True)
    if not stepped:
        state.skipped_steps += 1
        return False
    state.scheduler.step()
    state.step += 1
    return True


def validate(state: FitState) -> dict[str, float]:
    """Validation loss and accuracy of ``state.eval_model`` (empty without a validation loader)."""
    if state.val_loader is None:
        return {}
    assert state.eval_model is not None
    loss, accuracy = evaluate(
        state.eval_model,
        state.val_loader,
        state.device,
        autocast_dtype=state.autocast_dtype,
        channels_last=state.channels_last,
        tta=state.tta,
    )
    return {"val_loss": loss, "val_accuracy": accuracy}


class EpochMeter:
    """The epoch's training loss and accuracy, summed on the device (read once, at the epoch's end).

    Under several processes each sums its own batches; the metrics and the saved state are the sums over all
    processes (a resumed run puts them back on rank 0 alone, so that they are not counted twice).
    """

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def totals(self) -> tuple[float, int, int]:
        """(loss sum, correct, seen) over all processes."""
        if not distributed.active():
            return self.loss_sum.item(), int(self.correct.item()), self.seen
        sums = torch.stack([self.loss_sum.double(), self.correct.double(), torch.tensor(self.seen).to(self.loss_sum)])
        loss_sum, correct, seen = distributed.sum_tensor(sums).tolist()
        return loss_sum, round(correct), round(seen)

    def state_dict(self) -> dict[str, Any]:
        loss_sum, correct, seen = self.totals()
        return {"loss_sum": loss_sum, "correct": correct, "seen": seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        main = distributed.is_main()
        self.loss_sum.fill_(state["loss_sum"] if main else 0.0)
        self.correct.fill_(state["correct"] if main else 0)
        self.seen = int(state["seen"]) if main else 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.float() * labels.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.seen += labels.shape[0]

    def metrics(self, state: FitState) -> dict[str, float]:
        loss_sum, correct, seen = self.totals()
        return {
            "epoch": state.epoch + 1,
            "step": state.step,
            "lr": float(state.optimizer.param_groups[0]["lr"]),
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
        }
