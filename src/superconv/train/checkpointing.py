"""A run's checkpoints as handlers: ``best.pt`` (the best weights by validation) and ``last.pt`` (everything needed
to continue exactly where the run stopped), and the resume that reads them back.

Both are plain data written atomically (:mod:`superconv.train.checkpoint`) and read with ``weights_only=True``.
``last.pt`` holds the model, optimizer, scheduler and scaler states, every stateful handler's state (EMA, early
stopping, the applied schedule, the best metrics) under its ``state_key``, the position (epoch, batch, update),
the history, the RNG streams and the training seconds so far.

Under several processes every process builds the payload (the epoch's sums are reduced over them) and rank 0 alone
writes it; ``last.pt`` also records how many processes trained (:func:`check_processes` says which resumes work).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import superconv.distributed as distributed
from superconv import rng
from superconv.errors import CheckpointError
from superconv.train.checkpoint import load_checkpoint, save_checkpoint, state_on_cpu
from superconv.train.events import Callback

if TYPE_CHECKING:
    from superconv.train.state import FitState

CHECKPOINT_FORMAT = "superconv-checkpoint-v2"
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def unwrapped(model: nn.Module) -> nn.Module:
    """The module itself, also inside ``torch.compile`` or DistributedDataParallel wrappers (keys with a prefix)."""
    inner = getattr(model, "_orig_mod", None)
    return distributed.unwrap(inner if isinstance(inner, nn.Module) else model)


def check_processes(ckpt: dict[str, Any], loader: Any, path: Path) -> None:
    """Refuse a resume with another number of processes unless the batches stay the same.

    superconv's loaders keep the global batch whatever the number of processes (each takes ``batch / N`` of it),
    so the epoch's batches, the position and the schedule carry over from N to M processes. Another loader (a
    ``DataLoader`` with a ``DistributedSampler``: a batch per process) would change the batches and the epoch's
    length: it resumes only with the number of processes it was saved with.
    """
    saved, now = int(ckpt.get("world_size", 1)), distributed.world_size()
    if saved == now or callable(getattr(loader, "shard", None)):
        return
    raise CheckpointError(
        f"Cannot resume from {path}: it was trained by {saved} process(es), this run has {now}, and its training "
        f"loader's batches are per process (not superconv's global batches): resume with {saved} process(es) "
        f"(torchrun --nproc-per-node {saved} ...)"
    )


def load_last(out: Path) -> dict[str, Any]:
    """The run saved in ``out/last.pt``, checked to be a superconv training checkpoint.

    If ``last.pt`` is missing or unreadable (a disk fault, a file truncated by hand) and the checkpoint before it,
    ``last.prev.pt``, is good, that one is used, with a warning: the run then repeats the epoch in between.
    """
    path, previous = out / "last.pt", out / "last.prev.pt"
    if not path.exists() and not previous.exists():
        raise CheckpointError(
            f"Cannot resume: {path} does not exist. Resume from a run directory written by "
            "`superconv train --out DIR` (it holds last.pt)"
        )
    try:
        return _training_checkpoint(path)
    except CheckpointError as problem:
        if not previous.exists():
            raise
        ckpt = _training_checkpoint(previous)
        warnings.warn(f"{problem}; resuming from {previous.name}, the checkpoint before it", UserWarning, stacklevel=2)
        return ckpt


def _training_checkpoint(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Cannot resume from {path}: it is not a superconv training checkpoint "
            f"(format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    return ckpt


class BestCheckpoint(Callback):
    """Keeps the weights of the best epoch by ``monitor``: in host memory for the final test, and in ``best.pt``.

    The weights kept are those validation evaluated (the EMA's average when one is on).
    """

    state_key = "best"

    def __init__(self, monitor: str, out: Path | None, config: dict[str, Any]) -> None:
        self.monitor = monitor
        self.out = out
        self.config = config
        self.epoch: int | None = None
        self.val_accuracy: float | None = None
        self.val_loss: float | None = None
        self.weights: dict[str, Any] | None = None

    def on_fit_start(self, state: FitState) -> None:
        if self.epoch is not None:  # restored from a checkpoint
            self._report(state)

    def improves(self, metrics: dict[str, float]) -> bool:
        if self.epoch is None:
            return True
        if self.monitor == "val_accuracy":
            return metrics["val_accuracy"] > (self.val_accuracy or 0.0)
        return metrics["val_loss"] < (self.val_loss if self.val_loss is not None else math.inf)

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        state.improved = "val_accuracy" in metrics and self.improves(metrics)
        if not state.improved:
            return
        self.epoch = int(metrics["epoch"])
        self.val_accuracy, self.val_loss = metrics["val_accuracy"], metrics["val_loss"]
        assert state.eval_model is not None
        self.weights = state_on_cpu(unwrapped(state.eval_model))
        self._report(state)
        if self.out is not None:
            payload = {"format": CHECKPOINT_FORMAT, "model": self.weights, "epoch": self.epoch, "metrics": metrics}
            if distributed.is_main():
                save_checkpoint(self.out / "best.pt", {**payload, "config": self.config, "max_lr": state.max_lr})

    def _report(self, state: FitState) -> None:
        if state.result is not None:
            state.result.best_epoch = self.epoch
            state.result.best_val_accuracy, state.result.best_val_loss = self.val_accuracy, self.val_loss
            if self.out is not None:
                state.result.checkpoint = str(self.out / "best.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.val_accuracy, self.val_loss = state["epoch"], state["val_accuracy"], state["val_loss"]
        self.weights = None
        best = self.out / "best.pt" if self.out is not None else None
        if self.epoch is not None and best is not None and best.exists():
            saved = load_checkpoint(best)
            # best.pt may be one epoch ahead of last.pt (killed in between): that epoch is trained again.
            if saved.get("epoch") == self.epoch:
                self.weights = saved["model"]


class Checkpointer(Callback):
    """Writes ``last.pt`` after every epoch and where an interruption stops the run; :meth:`restore` resumes it."""

    def __init__(self, out: Path, stateful: dict[str, Callback], config: dict[str, Any]) -> None:
        self.path = out / "last.pt"
        self.stateful = stateful
        self.config = config

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        result = state.result
        finished = state.epoch + 1 >= state.epochs or (state.stop_training and not (result and result.interrupted))
        self.save(state, epoch=state.epoch + 1, batch=0, finished=finished)

    def on_fit_end(self, state: FitState) -> None:
        if state.stop_reason == "interrupted":  # mid-epoch: the epoch's remaining batches run on resume
            self.save(state, epoch=state.epoch, batch=state.batch, finished=False)

    def save(self, state: FitState, *, epoch: int, batch: int, finished: bool) -> None:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model": state_on_cpu(state.model),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict() if state.scaler is not None else None,
            **{key: handler.state_dict() for key, handler in self.stateful.items()},
            "epoch": epoch,
            "batch": batch,
            # mid-epoch: the epoch's training loss/accuracy sums so far, so its metrics cover the whole epoch
            "meter": state.meter.state_dict() if batch and state.meter is not None else None,
            "skipped_steps": state.skipped_steps,
            "step": state.step,
            "total_steps": state.total_steps,
            "epochs": state.epochs,
            "precision": PRECISION_NAMES[state.autocast_dtype],
            "channels_last": state.channels_last,
            "max_lr": state.max_lr,
            "finished": finished,
            "history": list(state.history),
            "rng": rng.capture(),
            "config": self.config,
            "train_seconds": state.clock(),
            "range_test_seconds": state.result.range_test_seconds if state.result is not None else 0.0,
            "world_size": distributed.world_size(),
        }
        if not distributed.is_main():
            return
        if self.path.exists():  # keep the previous checkpoint until the new one is complete
            os.replace(self.path, self.path.with_name("last.prev.pt"))
        save_checkpoint(self.path, payload)

    def restore(self, state: FitState, ckpt: dict[str, Any]) -> None:
        """Put the saved run back into ``state`` and the handlers: the loop then continues bit-identically."""
        check_processes(ckpt, state.train_loader, self.path)
        try:
            state.model.load_state_dict(ckpt["model"])
            state.optimizer.load_state_dict(ckpt["optimizer"])
            state.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"Cannot resume from {self.path}: it does not match this run ({first}). Resume with the "
                "same model, optimizer, epochs, batch size and accumulation as the saved run"
            ) from exc
        if state.scaler is not None and ckpt.get("scaler"):
            state.scaler.load_state_dict(ckpt["scaler"])
        for key, handler in self.stateful.items():
            if ckpt.get(key) is not None:
                handler.load_state_dict(ckpt[key])
            elif getattr(handler, "resume_hint", None):
                raise CheckpointError(f"Cannot resume from {self.path}: {handler.resume_hint}")  # type: ignore[attr-defined]
        state.history.extend(ckpt["history"])
        state.step, state.epoch, state.start_batch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])
        state.skipped_steps = int(ckpt.get("skipped_steps", 0))
        if ckpt.get("meter") is not None:
            from superconv.train.loop import EpochMeter

            state.meter = EpochMeter(state.device)
            state.meter.load_state_dict(ckpt["meter"])
        state.clock.before = float(ckpt.get("train_seconds", 0.0))
        if state.result is not None:
            state.result.range_test_seconds = float(ckpt.get("range_test_seconds", 0.0))
        rng.restore(ckpt["rng"])
