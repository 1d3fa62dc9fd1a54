"""The sweep itself: train for ``num_iter`` updates while the LR grows, and record the loss of each.

One update: set each param group's LR, ``accumulation_steps`` forward/backward passes (the recorded training
loss is their mean), one optimizer step, then in validation mode the loss on the validation batches. The loop
stops early on divergence (:class:`~superconv.finder.plan.Divergence`), at once on a NaN/inf loss (before the
update is applied, and without recording it), and when the GradScaler skips :data:`MAX_CONSECUTIVE_SKIPS` updates
in a row; a skipped update is retried at the same LR with the next batch. Putting the model back is the caller's
job (:class:`~superconv.finder.snapshot.Snapshot`).

Under several processes (a DistributedDataParallel model, each process on its part of every batch) the sweep is
one sweep: each recorded loss is the mean over the processes (an all-reduce per update), so every process applies
the same stop rule to the same numbers and stops at the same update; a NaN on one process is a NaN in the mean,
and every process stops there together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import superconv.distributed as distributed
from superconv.errors import ConfigError
from superconv.finder.amp import Precision
from superconv.finder.batches import BatchLoss, TrainBatches, leading_size, to_device
from superconv.finder.plan import Divergence, SweepPlan
from superconv.finder.result import StopReason

#: After this many GradScaler-skipped updates in a row the test gives up (the scale has collapsed).
MAX_CONSECUTIVE_SKIPS = 50


@dataclass
class SweepRecord:
    """What the sweep recorded, one entry per applied update (the lists grow while it runs)."""

    lrs: list[float] = field(default_factory=list)  # the first param group's LR
    losses: list[float] = field(default_factory=list)  # raw: the validation loss in validation mode
    train_losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)  # torch-lr-finder's history["loss"]
    stop_reason: StopReason = "completed"
    skipped: int = 0


class Sweep:
    """One range test's loop over a model that is already on ``device``.

    Args:
        model: The model (trained in place; the caller restores it).
        optimizer: Its optimizer.
        plan: The checked settings.
        loss: The loss of one batch.
        precision: Autocast, backward and update (with a GradScaler or apex).
        device: Where batches go.
        val_loader: Validation-loss mode: these batches are evaluated after every update.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        plan: SweepPlan,
        loss: BatchLoss,
        precision: Precision,
        device: torch.device,
        val_loader: Iterable[Any] | None = None,
    ) -> None:
        self.model, self.optimizer, self.plan = model, optimizer, plan
        self.loss, self.precision, self.device = loss, precision, device
        self.val_loader = val_loader
        self.val_cache: list[Any] | None = None
        if val_loader is not None and plan.val_batches is not None:
            # The first val_batches batches, kept on the device: every step is measured on the same data.
            first = itertools.islice(iter(val_loader), plan.val_batches)
            self.val_cache = [to_device(b, device, plan.non_blocking) for b in first]

    def run(self, batches: TrainBatches, record: SweepRecord, progress: bool) -> SweepRecord:
        """Sweep, appending to ``record`` as it goes (so it holds what was done if the sweep raises)."""
        plan = self.plan
        watch = Divergence(plan.smooth_f, plan.diverge_th)
        consecutive_skips = 0
        bar = _progress_bar(plan.num_iter, progress)
        self.model.train()
        try:
            i = 0
            while i < plan.num_iter:
                lrs = plan.lrs(i)
                self._set_lrs(lrs)
                train_loss = self._forward_backward(batches)
                if not math.isfinite(train_loss):
                    record.stop_reason = "non-finite"
                    break
                if not self.precision.step(self.optimizer):  # the GradScaler skipped it: same LR, next batch
                    record.skipped += 1
                    consecutive_skips += 1
                    if consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                        record.stop_reason = "amp-skips"
                        break
                    continue
                consecutive_skips = 0
                loss = train_loss if self.val_loader is None else self._val_loss()
                if not math.isfinite(loss):
                    record.stop_reason = "non-finite"
                    break
                smoothed = watch.add(loss)
                record.lrs.append(lrs[0])
                record.losses.append(loss)
                record.train_losses.append(train_loss)
                record.smoothed.append(smoothed)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(lr=f"{lrs[0]:.2g}", loss=f"{loss:.4g}")
                if watch.diverged(smoothed):
                    record.stop_reason = "diverged"
                    break
                i += 1
        finally:
            if bar is not None:
                bar.close()
        return record

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def _forward_backward(self, batches: TrainBatches) -> float:
        """One update's micro-batches, forward and backward; their mean loss (the one host sync per update)."""
        self.optimizer.zero_grad(set_to_none=True)
        steps = self.plan.accumulation_steps
        total: torch.Tensor | None = None
        for _ in range(steps):
            batch = to_device(next(batches), self.device, self.plan.non_blocking)
            with self.precision.autocast():
                loss = self.loss(batch)
            loss = loss / steps  # as torch-lr-finder does, so the recorded loss is the same number
            part = loss.detach().float()
            total = part if total is None else total + part
            self.precision.backward(loss, self.optimizer)
        assert total is not None
        return distributed.mean(total)  # total.item() with one process

    def _val_loss(self) -> float:
        """The mean loss per sample over the validation batches, in eval mode and without gradients."""
        self.model.eval()
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        source = self.val_cache if self.val_cache is not None else self.val_loader
        assert source is not None
        with torch.no_grad():
            for batch in source:
                if self.val_cache is None:
                    batch = to_device(batch, self.device, self.plan.non_blocking)
                with self.precision.autocast():
                    losses.append(self.loss(batch).detach().float())
                sizes.append(leading_size(batch))
        self.model.train()
        if not losses:
            raise ConfigError("val_loader yielded no batches; pass a loader with at least one batch.")
        running = 0.0
        for value, size in zip(torch.stack(losses).tolist(), sizes):  # one host sync per step
            running += value * size  # torch-lr-finder's sum, in the same order
        if distributed.active():  # the mean per sample over every process's validation batches
            running, count = distributed.sum_tensor(torch.tensor([running, float(sum(sizes))])).tolist()
            return running / count
        return running / sum(sizes)


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="LR range test", leave=False)
