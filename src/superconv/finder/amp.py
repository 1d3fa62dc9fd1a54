"""Mixed precision in the range test: torch-lr-finder's ``amp_backend`` / ``amp_config`` / ``grad_scaler``, plus
superconv's ``autocast_dtype``, as one object the sweep asks for a context, a backward pass and an update.

* ``amp_backend=None``: no autocast (unless ``autocast_dtype`` is given); a ``grad_scaler``, if given, still scales.
* ``amp_backend="torch"``: the forward pass runs under ``torch.autocast(**amp_config)`` (``device_type`` defaults to
  the test's device) and a ``grad_scaler`` is required, as in torch-lr-finder.
* ``amp_backend="apex"``: NVIDIA apex's ``amp.scale_loss`` when the optimizer went through ``amp.initialize``;
  refused with a clear message when apex is not installed.

A step the GradScaler skips (inf/NaN gradients) is reported, so the sweep can retry it at the same LR.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from superconv.errors import ConfigError

AMP_BACKENDS = (None, "torch", "apex")
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def check_scaler(scaler: Any) -> None:
    """Refuse anything that is not a GradScaler (``None`` is fine)."""
    if scaler is not None and not all(
        hasattr(scaler, a) for a in ("scale", "step", "update", "get_scale", "state_dict")
    ):
        raise ConfigError(
            f"grad_scaler={type(scaler).__name__} is not a GradScaler; pass torch.amp.GradScaler(...) or None."
        )


def check_amp(backend: Any, config: Any, scaler: Any) -> Any:
    """Validate the constructor's AMP arguments; return apex's ``amp`` module for ``backend="apex"``, else None."""
    if backend not in AMP_BACKENDS:
        raise ConfigError(f"Unknown amp backend: {backend!r}; expected None, 'torch' or 'apex'.")
    check_scaler(scaler)
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(
            f"amp_config={config!r} must be a dict of torch.autocast arguments, e.g. "
            "{'device_type': 'cuda', 'dtype': torch.float16}, or None."
        )
    if backend == "torch" and scaler is None:
        raise ConfigError(
            "`grad_scaler` is required when using `torch.amp` (amp_backend='torch'); pass "
            "grad_scaler=torch.amp.GradScaler('cuda'), or amp_backend=None."
        )
    if backend == "apex":
        try:
            return importlib.import_module("apex.amp")
        except ImportError:
            raise ConfigError(
                "Unknown amp backend: 'apex' (NVIDIA apex is not installed); use amp_backend='torch' with "
                "amp_config={'device_type': 'cuda', 'dtype': torch.float16} and grad_scaler=torch.amp.GradScaler()."
            ) from None
    return None


def check_autocast_dtype(dtype: Any) -> None:
    if dtype is not None and dtype not in AUTOCAST_DTYPES:
        raise ConfigError(f"autocast_dtype={dtype!r} must be torch.bfloat16, torch.float16 or None (no autocast).")


class Precision:
    """How one sweep runs its forward pass, backward pass and update.

    Args:
        device: The device the test runs on (autocast's default ``device_type``).
        backend: ``None``, "torch" or "apex" (checked by :func:`check_amp`).
        config: ``torch.autocast`` keyword arguments for ``backend="torch"``.
        scaler: A GradScaler, or None.
        autocast_dtype: superconv's shortcut: autocast to this dtype on ``device`` (overrides ``config``).
        apex_amp: apex's ``amp`` module (``backend="apex"``).
    """

    def __init__(
        self,
        device: torch.device,
        backend: str | None = None,
        config: Mapping[str, Any] | None = None,
        scaler: Any | None = None,
        autocast_dtype: torch.dtype | None = None,
        apex_amp: Any | None = None,
    ) -> None:
        self.scaler, self.apex_amp = scaler, apex_amp
        self.autocast_kwargs: dict[str, Any] | None = None
        if autocast_dtype is not None:
            self.autocast_kwargs = {"device_type": device.type, "dtype": autocast_dtype}
        elif backend == "torch":
            self.autocast_kwargs = {"device_type": device.type, **(config or {})}

    def autocast(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.autocast_kwargs is None else torch.autocast(**self.autocast_kwargs)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        elif self.apex_amp is not None and hasattr(optimizer, "_amp_stash"):
            with self.apex_amp.scale_loss(loss, optimizer) as scaled:
                scaled.backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Update the weights; False when the GradScaler skipped the update (inf/NaN gradients)."""
        if self.scaler is None:
            optimizer.step()
            return True
        scale_before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return not self.scaler.get_scale() < scale_before
