"""The range test's exact restore: a copy, in host memory by default, of everything the test changes.

Parameters, buffers, gradients, train/eval modes, optimizer state and hyperparameters, a GradScaler, an attached
scheduler and the RNG streams (torch, CUDA, ``random``, numpy) are copied before the sweep and put back
afterwards (the finder does it in ``try/finally``). The copies are dropped as soon as they are restored.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superconv import rng


def _copy_to(obj: Any, device: torch.device | None) -> Any:
    """Deep-copy ``obj``, cloning every tensor (to ``device`` if given, keeping dtype and values)."""
    if isinstance(obj, torch.Tensor):
        target = obj.device if device is None else device
        return obj.detach().to(device=target, copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, _copy_to(v, device)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_copy_to(v, device) for v in obj]
    if isinstance(obj, tuple):
        return (
            type(obj)(*(_copy_to(v, device) for v in obj))
            if hasattr(obj, "_fields")
            else tuple(_copy_to(v, device) for v in obj)
        )
    return copy.deepcopy(obj)


_MISSING = object()


class Snapshot:
    """Everything the range test changes, copied to host memory (or a file when asked) and put back.

    Tensors are found again by where they live (module and attribute name), not only by reference: moving a
    model to another device (``LRFinder(device=...)``) replaces its buffer tensors with new ones, so copying the
    saved values into the old objects would leave the module with the swept, moved buffers. The original
    tensor objects are put back in place, on their original devices.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any | None,
        scheduler: Any | None,
        device: torch.device | None,
        cache_dir: Path | None,
    ) -> None:
        self.model, self.optimizer, self.scaler, self.scheduler = model, optimizer, scaler, scheduler
        #: (module, attribute, tensor) for every parameter and buffer, so a replaced one can be put back.
        self.slots = [
            (module, name, tensor)
            for module in model.modules()
            for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
        ]
        # The optimizer may also hold tensors outside the model (e.g. a learned temperature): those too.
        params = {id(p): p for p in model.parameters()}
        for group in optimizer.param_groups:
            params.update((id(p), p) for p in group["params"])
        self.grad_params = list(params.values())
        tensors: dict[int, torch.Tensor] = {id(t): t for t in self.grad_params}
        tensors.update((id(t), t) for _, _, t in self.slots)  # shared (tied) tensors once
        self.tensors = list(tensors.values())
        self.devices = [t.device for t in self.tensors]
        self.modes = [(m, m.training) for m in model.modules()]
        self.opt_called = getattr(optimizer, "_opt_called", _MISSING)
        state: dict[str, Any] = {
            "tensors": [_copy_to(t, device) for t in self.tensors],
            "grads": [None if p.grad is None else _copy_to(p.grad, device) for p in self.grad_params],
            "optimizer": _copy_to(optimizer.state_dict(), device),
            "scaler": _copy_to(scaler.state_dict(), None) if scaler is not None else None,
            "scheduler": _copy_to(scheduler.state_dict(), device) if scheduler is not None else None,
            "rng": rng.capture(),
        }
        self.file: Path | None = None
        self.state: dict[str, Any] | None = state
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            self.file = cache_dir / f"superconv-lr-finder-{uuid.uuid4().hex}.pt"
            torch.save(state, self.file)
            self.state = None

    def restore(self) -> None:
        """Put everything back; the copies are dropped afterwards (a second call does nothing)."""
        state = self.state
        if state is None and self.file is not None:
            state = torch.load(self.file, weights_only=True)
        if state is None:
            return
        with torch.no_grad():
            for module, name, tensor in self.slots:
                if getattr(module, name) is not tensor:  # Module.to replaced it: the original goes back
                    setattr(module, name, tensor)
            for tensor, dev, saved in zip(self.tensors, self.devices, state["tensors"]):
                if tensor.device != dev:  # a parameter moved in place (param.data): back, from the copy
                    tensor.data = saved.to(dev, copy=True)
                else:
                    tensor.copy_(saved)
            for param, grad in zip(self.grad_params, state["grads"]):
                param.grad = None if grad is None else grad.to(param.device, copy=True)
        self._restore_objects(state)
        self.state = None
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None

    def _restore_objects(self, state: dict[str, Any]) -> None:
        for module, mode in self.modes:
            module.training = mode
        self.optimizer.load_state_dict(state["optimizer"])
        if self.opt_called is _MISSING:
            if hasattr(self.optimizer, "_opt_called"):
                delattr(self.optimizer, "_opt_called")
        else:
            self.optimizer._opt_called = self.opt_called  # type: ignore[attr-defined]
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        rng.restore(state["rng"])
