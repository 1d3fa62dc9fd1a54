"""One verification probe: a short, compressed one-cycle run at a candidate LR, then a validation pass.

The loop is deliberately small and independent of :mod:`superconv.train`: forward, backward, optimizer step,
:class:`superconv.OneCycleLR` stepped per optimizer update, optional autocast, GradScaler and gradient
accumulation, any batch shape (:mod:`superconv.finder.batches`). It changes the model and the optimizer in
place; :mod:`superconv.finder.verify` snapshots and restores them around every probe.

A probe stops early when the training loss becomes NaN/inf (the candidate diverged) or when the GradScaler
skips :data:`MAX_CONSECUTIVE_SKIPS` steps in a row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from superconv.errors import ConfigError
from superconv.finder.batches import LossFn, batch_loss, is_supervised
from superconv.schedule.scheduler import OneCycleLR

#: After this many GradScaler-skipped steps in a row the probe gives up (the scale has collapsed).
MAX_CONSECUTIVE_SKIPS = 50


@dataclass(frozen=True)
class ProbeConfig:
    """How every probe of one verification trains and evaluates.

    Attributes:
        steps: Optimizer updates per probe (the compressed one-cycle run's ``total_steps``).
        schedule: Keyword arguments for :class:`superconv.OneCycleLR` besides ``max_lr`` and ``total_steps``
            (the shape of the run the LR is for: ``div_factor``, ``pct_start``, ``preset``, ...).
        criterion: ``criterion(output, target)`` for ``(inputs, ..., target)`` batches.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` for any other batch.
        accuracy: Also measure accuracy (``argmax(output, -1) == target``) on the validation batches.
        accuracy_if_defined: Measure it where it is defined (class-index targets, one score per class) and
            leave it out (``val_accuracy=None``) elsewhere, instead of raising.
        accumulation_steps: Micro-batches per optimizer update.
        autocast_dtype: ``torch.bfloat16``/``torch.float16`` to run forward passes under autocast, or ``None``.
        grad_scaler: A ``torch.amp.GradScaler`` (its state is restored by the caller), or ``None``.
    """

    steps: int
    schedule: Mapping[str, Any] = field(default_factory=dict)
    criterion: Callable[..., torch.Tensor] | None = None
    loss_fn: LossFn | None = None
    accuracy: bool = False
    accuracy_if_defined: bool = False
    accumulation_steps: int = 1
    autocast_dtype: torch.dtype | None = None
    grad_scaler: Any | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe measured.

    Attributes:
        lr: The candidate: the probe's ``max_lr``.
        val_loss: The mean validation loss (NaN when the probe diverged).
        val_accuracy: The validation accuracy in percent, or ``None`` when not measured (NaN when diverged).
        batch_losses: The loss of each validation batch, in order.
        batch_accuracies: The accuracy (percent) of each validation batch, in order (empty when not measured).
        train_loss: The mean training loss of the last 10% of the updates (NaN when diverged).
        updates: Optimizer updates done.
        diverged: Whether the training loss became NaN/inf (or the scale collapsed) before the end.
        seconds: Wall-clock seconds of the probe, training and validation.
        val_examples: How many predictions the validation accuracy counts (0 when not measured).
        train_seconds: Wall-clock seconds of the probe's training alone (its updates; no validation).
    """

    lr: float
    val_loss: float
    val_accuracy: float | None
    batch_losses: list[float]
    batch_accuracies: list[float]
    train_loss: float
    updates: int
    diverged: bool
    seconds: float
    val_examples: int = 0
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


def cycle_momentum_default(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a one-cycle run would cycle this optimizer's momentum: Adam-style ``betas``, or SGD momentum > 0."""
    if "betas" in optimizer.defaults:
        return True
    return "momentum" in optimizer.defaults and all(g.get("momentum", 0) > 0 for g in optimizer.param_groups)


def run_probe(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: float,
    batches: Iterator[Any],
    val_batches: Sequence[Any],
    config: ProbeConfig,
    move: Callable[[Any], Any],
) -> ProbeOutcome:
    """Train ``model`` for ``config.steps`` updates of a one-cycle run peaking at ``lr``, then validate it.

    Args:
        model: The model, trained in place (the caller restores it).
        optimizer: Its optimizer, stepped in place (the caller restores it).
        lr: The peak LR of the probe.
        batches: Training batches (an endless iterator; see :func:`superconv.finder.batches.cycle`).
        val_batches: The validation batches, already on the device; the same for every probe.
        config: The probe settings.
        move: Puts a training batch on the device.

    Returns:
        A :class:`ProbeOutcome`.
    """
    t0 = time.perf_counter()
    device = _device_of(model)
    autocast = _autocast(config.autocast_dtype, device)
    schedule = {"cycle_momentum": cycle_momentum_default(optimizer), **config.schedule}
    scheduler = OneCycleLR(optimizer, max_lr=lr, total_steps=config.steps, **schedule)
    model.train()
    updates, losses, diverged = _train(model, optimizer, scheduler, batches, config, move, autocast)
    train_seconds = time.perf_counter() - t0
    if diverged:
        accuracy_nan = config.accuracy or (config.accuracy_if_defined and accuracy_defined(model, val_batches, config))
        return ProbeOutcome(lr, math.nan, math.nan if accuracy_nan else None, [], [], math.nan, updates, True,
                            time.perf_counter() - t0, train_seconds=train_seconds)  # fmt: skip
    tail = losses[-max(1, len(losses) // 10) :]
    batch_losses, batch_accs, sizes = evaluate(model, val_batches, config, autocast)
    val_loss = sum(batch_losses) / len(batch_losses)
    # accuracy over examples (the last batch may be smaller); the loss is the batches' mean, as the finder's
    val_acc = sum(a * n for a, n in zip(batch_accs, sizes)) / sum(sizes) if sizes else None
    bad = not math.isfinite(val_loss)
    return ProbeOutcome(
        lr=lr,
        val_loss=math.nan if bad else val_loss,
        val_accuracy=math.nan if bad and val_acc is not None else val_acc,
        batch_losses=batch_losses,
        batch_accuracies=batch_accs,
        train_loss=sum(tail) / len(tail),
        updates=updates,
        diverged=bad,
        seconds=time.perf_counter() - t0,
        val_examples=sum(sizes),
        train_seconds=train_seconds,
    )


def _train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: OneCycleLR,
    batches: Iterator[Any],
    config: ProbeConfig,
    move: Callable[[Any], Any],
    autocast: Callable[[], AbstractContextManager[Any]],
) -> tuple[int, list[float], bool]:
    """The probe's training loop; returns ``(updates, training losses, diverged)``."""
    scaler, accumulate = config.grad_scaler, config.accumulation_steps
    losses: list[float] = []
    updates = skips = 0
    while updates < config.steps:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accumulate):
            batch = move(next(batches))
            with autocast():
                loss = batch_loss(model, batch, config.criterion, config.loss_fn)
            total += loss.detach().float().item()
            scaled = loss / accumulate if accumulate > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if not math.isfinite(total):
            return updates, losses, True
        if scaler is not None:
            scale_before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() < scale_before:  # inf/NaN gradients: the update was skipped
                skips += 1
                if skips >= MAX_CONSECUTIVE_SKIPS:
                    return updates, losses, True
                continue
            skips = 0
        else:
            optimizer.step()
        scheduler.step()
        updates += 1
        losses.append(total / accumulate)
    return updates, losses, False


def evaluate(
    model: nn.Module,
    val_batches: Sequence[Any],
    config: ProbeConfig,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
) -> tuple[list[float], list[float], list[int]]:
    """The loss, and when ``config.accuracy`` (or ``accuracy_if_defined`` and it is defined) the accuracy (percent)
    and the number of predictions, of each validation batch, in eval mode."""
    autocast = autocast if autocast is not None else nullcontext
    losses: list[float] = []
    accuracies: list[float] = []
    sizes: list[int] = []
    wanted = config.accuracy or config.accuracy_if_defined
    model.eval()
    with torch.no_grad():
        for batch in val_batches:
            with autocast():
                output = model(*batch[:-1]) if wanted and is_supervised(batch) else None
                loss = batch_loss(model, batch, config.criterion, config.loss_fn, output)
            losses.append(loss.float().item())
            if config.accuracy or (wanted and _defined(output, batch)):
                accuracies.append(_accuracy(output, batch))
                sizes.append(int(batch[-1].numel()))
            else:
                wanted = False  # undefined on one batch: on none (accuracy_if_defined)
    model.train()
    if len(sizes) != len(losses):
        accuracies, sizes = [], []
    return losses, accuracies, sizes


def accuracy_defined(model: nn.Module, val_batches: Sequence[Any], config: ProbeConfig) -> bool:
    """Whether accuracy is defined on the first validation batch (a forward pass in eval mode, no gradients)."""
    if not val_batches or not is_supervised(val_batches[0]):
        return False
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model(*val_batches[0][:-1])
    model.train(was_training)
    return _defined(output, val_batches[0])


def _defined(output: Any, batch: Any) -> bool:
    """Whether ``argmax(output, -1) == target`` means something: class-index targets, one score per class."""
    target = batch[-1] if is_supervised(batch) else None
    ok = isinstance(output, torch.Tensor) and isinstance(target, torch.Tensor)
    return bool(ok and not target.is_floating_point() and output.shape[:-1] == target.shape)  # type: ignore[union-attr]


def _accuracy(output: torch.Tensor | None, batch: Any) -> float:
    """Percent of ``argmax(output, -1) == target``; a :class:`ConfigError` when that is not defined."""
    if not _defined(output, batch):
        raise ConfigError(
            "metric='accuracy' needs (inputs, ..., target) batches whose target holds class indices and a model "
            "that returns one score per class; use metric='loss' for any other task."
        )
    assert isinstance(output, torch.Tensor)
    return 100.0 * (output.argmax(-1) == batch[-1]).float().mean().item()


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _autocast(dtype: torch.dtype | None, device: torch.device) -> Callable[[], AbstractContextManager[Any]]:
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
