"""What the range test accepts as data, and how a batch becomes a loss.

Three kinds of loader, and one batch rule each:

* a ``torch.utils.data.DataLoader`` (torch-lr-finder's contract): a batch ``(inputs, labels, *extras)`` gives
  ``criterion(model(inputs), labels)``; the extras are ignored;
* a subclass of torch-lr-finder's ``TrainDataLoaderIter`` / ``ValDataLoaderIter``: its own
  ``inputs_labels_from_batch`` turns each batch into ``(inputs, labels)``, used as above (a train adapter is
  advanced with ``next()``, which cycles it; a validation adapter is iterated once per step);
* any other re-iterable collection with a length (a list of batches, superconv's own loaders): superconv's rule,
  ``(x1, ..., xn, target)`` gives ``criterion(model(x1, ..., xn), target)``.

For every kind, a dict batch goes to a Hugging Face-style model as keyword arguments (its ``.loss`` is used), and
``loss_fn(model, batch)`` replaces all of the above. Anything else (an iterator without a length, which could be
read only once) is refused with torch-lr-finder's ``ValueError`` ("`train_loader` has unsupported type").
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from superconv.errors import ConfigError

LossFn = Callable[[nn.Module, Any], torch.Tensor]
LoaderKind = Literal["dataloader", "adapter", "collection"]
#: The loader's role: its name in messages, and the torch-lr-finder adapter class accepted for it.
ADAPTERS = {"train_loader": "TrainDataLoaderIter", "val_loader": "ValDataLoaderIter"}


def loader_kind(loader: Any, name: Literal["train_loader", "val_loader"]) -> LoaderKind:
    """Which of the three kinds ``loader`` is; refuse what cannot be read once per step or cycled.

    Raises:
        ConfigError: (a ``ValueError``, as torch-lr-finder raises) for an unsupported type or an empty loader.
    """
    if isinstance(loader, DataLoader):
        kind: LoaderKind = "dataloader"
    elif _is_adapter(loader, ADAPTERS[name]):
        return "adapter"
    elif isinstance(loader, Iterable) and isinstance(loader, Sized):
        kind = "collection"
    else:
        raise ConfigError(
            f"`{name}` has unsupported type: {type(loader).__name__}. Expected a torch.utils.data.DataLoader, a "
            f"subclass of torch_lr_finder's {ADAPTERS[name]}, or a collection of batches with a length (e.g. a "
            "list); wrap an iterator in list(...) or a DataLoader."
        )
    try:
        size = len(loader)
    except TypeError:  # a DataLoader over an IterableDataset: emptiness shows on the first pass
        return kind
    if size == 0:
        raise ConfigError(
            f"{name} is empty (len 0); pass a loader with at least one batch (check the dataset size and drop_last)."
        )
    return kind


def _is_adapter(loader: Any, class_name: str) -> bool:
    # An adapter's class comes from torch_lr_finder, so the module is loaded whenever one is passed: no import here.
    module = sys.modules.get("torch_lr_finder.lr_finder")
    adapter = getattr(module, class_name, None)
    return adapter is not None and isinstance(loader, adapter)


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other values (strings, numbers) pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    if callable(getattr(batch, "to", None)) and not isinstance(batch, (str, bytes)):
        return batch.to(device, non_blocking=non_blocking)  # e.g. a custom batch object, as torch-lr-finder moves it
    return batch


def leading_size(batch: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor (1 when it has none)."""
    tensor = _first_tensor(batch)
    return int(tensor.shape[0]) if tensor is not None else 1


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch if batch.ndim > 0 else None
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


class TrainBatches:
    """The sweep's endless supply of training batches: a loader restarted when it runs out, or an adapter's next()."""

    def __init__(self, loader: Any, kind: LoaderKind) -> None:
        self.loader, self.kind = loader, kind
        self._batches: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self.kind == "adapter":
            try:
                return next(self.loader)  # calls its inputs_labels_from_batch; auto_reset restarts it
            except StopIteration:
                raise ConfigError(
                    "train_loader (a TrainDataLoaderIter with auto_reset=False) ran out of batches before the sweep "
                    "ended; create it with auto_reset=True (the default), or lower num_iter."
                ) from None
        if self._batches is None:  # created on first use, so the loader's shuffle draws where torch-lr-finder's do
            self._batches = cycle(self.loader)
        return next(self._batches)


def cycle(loader: Iterable[Any], name: str = "train_loader") -> Iterator[Any]:
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


def check_loader(loader: Any, name: Literal["train_loader", "val_loader"]) -> None:
    """Raise :class:`ConfigError` unless ``loader`` is a kind the range test and its probes can read."""
    loader_kind(loader, name)


def is_supervised(batch: Any) -> bool:
    """Whether ``batch`` is ``(inputs, ..., target)``: a list or tuple of at least two items, not a namedtuple."""
    return isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields") and len(batch) >= 2


def batch_loss(
    model: nn.Module,
    batch: Any,
    criterion: Callable[..., torch.Tensor] | None,
    loss_fn: LossFn | None,
    output: torch.Tensor | None = None,
    *,
    pairs: bool = False,
) -> torch.Tensor:
    """The scalar loss of one batch (the rules in the module docstring).

    ``pairs`` is torch-lr-finder's ``(inputs, labels, *extras)`` rule, else superconv's ``(x1, ..., xn, target)``;
    ``output``, when given, is the model's output for the batch (a forward pass that is reused).
    """
    if loss_fn is not None:
        loss: Any = loss_fn(model, batch)
    elif isinstance(batch, Mapping):
        loss = _dict_loss(model, batch)
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        if criterion is None:
            raise ConfigError(
                "criterion=None and no loss_fn: pass a criterion (e.g. torch.nn.CrossEntropyLoss()) for "
                "(inputs, target) batches, or loss_fn=lambda model, batch: ... for any other batch."
            )
        if output is None:
            output = model(batch[0]) if pairs else model(*batch[:-1])
        loss = criterion(output, batch[1] if pairs else batch[-1])
    else:
        shape = "(inputs, labels, *extras)" if pairs else "(inputs, ..., target)"
        raise ConfigError(
            f"a batch of type {type(batch).__name__} is not {shape}; pass loss_fn=lambda model, batch: ... "
            "to say how to compute its loss."
        )
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else repr(loss)
        raise ConfigError(
            f"the loss must be a scalar tensor, got {what}; reduce it (e.g. .mean()) in the criterion or loss_fn."
        )
    return loss


def _dict_loss(model: nn.Module, batch: Mapping[str, Any]) -> Any:
    # A Hugging Face-style model takes the dict as keyword arguments and returns its loss.
    out = model(**batch)
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if loss is None:
        raise ConfigError(
            f"the model returned {type(out).__name__} without a 'loss' for a dict batch; pass "
            "loss_fn=lambda model, batch: ... to compute the loss."
        )
    return loss


class BatchLoss:
    """The scalar loss of one batch under the rule of its loader's kind (see the module docstring)."""

    def __init__(
        self, model: nn.Module, criterion: Callable[..., torch.Tensor] | None, loss_fn: LossFn | None, kind: LoaderKind
    ) -> None:
        self.model, self.criterion, self.loss_fn = model, criterion, loss_fn
        self.pairs = kind != "collection"  # torch-lr-finder's (inputs, labels, *extras)

    def __call__(self, batch: Any) -> torch.Tensor:
        return batch_loss(self.model, batch, self.criterion, self.loss_fn, pairs=self.pairs)
