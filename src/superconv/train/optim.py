"""The optimizers ``fit`` builds by name: AdamW or SGD with Nesterov momentum, weight decay on weights only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from superconv import checks
from superconv.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")


def decay_groups(
    parameters: nn.Module | Iterable[nn.Parameter], weight_decay: float, lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on weights only: decaying BatchNorm scales and biases only hurts.

    ``lr_scale`` (kept in each group) is the group's share of the run's peak LR: 1 for all but a fine-tuned body.
    """
    params = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    extra = {"lr_scale": lr_scale} if lr_scale != 1.0 else {}
    groups = [{"params": decay, "weight_decay": weight_decay, **extra}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, **extra})
    return groups


def make_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    device: torch.device,
    parts: Sequence[tuple[Iterable[nn.Parameter], float]] | None = None,
) -> torch.optim.Optimizer:
    """AdamW (``"adamw"``) or SGD with Nesterov momentum (``"sgd"``), fused on CUDA.

    ``parts``: ``(parameters, lr_scale)`` pairs for discriminative learning rates (default: the whole model at 1).
    """
    checks.one_of("optimizer", name, OPTIMIZERS)
    groups = [
        g for params, scale in (parts or [(model.parameters(), 1.0)]) for g in decay_groups(params, weight_decay, scale)
    ]
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no parameters to train (all frozen?): unfreeze some")
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **fused)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **fused)


def first_group_momentum(optimizer: torch.optim.Optimizer) -> float | None:
    """The momentum (SGD) or beta1 (Adam family) of the first param group; ``None`` if it has neither."""
    group = optimizer.param_groups[0]
    return float(group["betas"][0]) if "betas" in group else group.get("momentum")
