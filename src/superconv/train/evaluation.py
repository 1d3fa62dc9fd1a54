"""Evaluation: mean cross-entropy and accuracy of a classifier over a loader, accumulated on the device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import superconv.distributed as distributed
from superconv.errors import ConfigError


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``dtype`` on ``device``'s type; a no-op for fp32 (``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def eval_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    tta: bool,
) -> torch.Tensor:
    """The model's logits for a batch, in the run's format; with ``tta`` plus those of the flipped batch."""
    inputs = inputs.to(device, non_blocking=True)
    if channels_last and inputs.ndim == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with autocast(device, autocast_dtype):
        logits = model(inputs)
        if tta:
            logits = logits + model(inputs.flip(-1))
    return logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    tta: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``loader``, accumulated on the device (one sync at the end).

    ``tta`` averages the logits of each image and its horizontal flip (only for data a flip does not change
    the label of). Under several processes each evaluates its part of the data and the sums are added up: every
    process returns the metrics of the whole loader.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for inputs, labels in loader:
        labels = labels.to(device, non_blocking=True)
        logits = eval_logits(model, inputs, device, autocast_dtype, channels_last, tta).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        count += labels.shape[0]
    model.train(was_training)
    totals = distributed.sum_tensor(
        torch.stack([loss_sum.double(), correct.double(), torch.tensor(count, device=device)])
    )
    loss_total, correct_total, count_total = totals.tolist()
    if count_total == 0:
        raise ConfigError("The evaluation loader yielded no batches: give it at least one example")
    return loss_total / count_total, correct_total / count_total
