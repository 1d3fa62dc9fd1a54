"""Batches of any shape, as the range test and the verification probes take them.

A batch is ``(inputs, ..., target)`` for a ``criterion(output, target)``, a dict for a Hugging Face-style
model that returns ``.loss``, or anything a ``loss_fn(model, batch) -> scalar tensor`` understands. These
helpers move one to a device, compute its loss, and cycle a loader that is shorter than the steps asked of it.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 3)
    >>> batch = (torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))
    >>> batch_loss(model, batch, torch.nn.CrossEntropyLoss(), None).ndim
    0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from superconv.errors import ConfigError

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


def cycle(loader: Iterable[Any], name: str) -> Iterator[Any]:
    """Yield batches forever, restarting ``loader`` when it runs out; an empty loader is an error."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError(
                f"{name} yielded no batches; pass a loader with at least one batch (check the dataset size "
                "and drop_last)."
            )


def check_loader(loader: Any, name: str) -> None:
    """Raise :class:`ConfigError` unless ``loader`` is an iterable that is not known to be empty."""
    if not isinstance(loader, Iterable):
        raise ConfigError(
            f"{name}={type(loader).__name__} is not iterable; pass a DataLoader or any iterable of batches."
        )
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return  # an iterable without a length: emptiness is found on the first pass
    if n == 0:
        raise ConfigError(
            f"{name} is empty (len 0); pass a loader with at least one batch (check the dataset size and drop_last)."
        )


def is_supervised(batch: Any) -> bool:
    """Whether ``batch`` is ``(inputs, ..., target)``: a list or tuple of at least two items, not a namedtuple."""
    return isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields") and len(batch) >= 2


def batch_loss(
    model: nn.Module,
    batch: Any,
    criterion: Callable[..., torch.Tensor] | None,
    loss_fn: LossFn | None,
    output: torch.Tensor | None = None,
) -> torch.Tensor:
    """The scalar loss of one batch: ``loss_fn(model, batch)``, ``model(**batch).loss`` for a dict, or
    ``criterion(model(*inputs), target)`` (``output`` given: that forward pass is reused)."""
    if loss_fn is not None:
        loss: Any = loss_fn(model, batch)
    elif isinstance(batch, Mapping):
        out = model(**batch)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is None:
            raise ConfigError(
                f"the model returned {type(out).__name__} without a 'loss' for a dict batch; pass "
                "loss_fn=lambda model, batch: ... to compute the loss."
            )
    elif is_supervised(batch):
        if criterion is None:
            raise ConfigError(
                "criterion=None and no loss_fn: pass a criterion (e.g. torch.nn.CrossEntropyLoss()) for "
                "(inputs, target) batches, or loss_fn=lambda model, batch: ... for any other batch."
            )
        loss = criterion(model(*batch[:-1]) if output is None else output, batch[-1])
    else:
        raise ConfigError(
            f"a batch of type {type(batch).__name__} is not (inputs, ..., target); pass "
            "loss_fn=lambda model, batch: ... to say how to compute its loss."
        )
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else repr(loss)
        raise ConfigError(
            f"the loss must be a scalar tensor, got {what}; reduce it (e.g. .mean()) in the criterion or loss_fn."
        )
    return loss
