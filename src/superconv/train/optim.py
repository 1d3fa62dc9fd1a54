"""The optimizers ``fit`` builds by name: AdamW or SGD with Nesterov momentum, weight decay on weights only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from superconv import checks

OPTIMIZERS = ("adamw", "sgd")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on weights only: decaying BatchNorm scales and biases only hurts."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(
    model: nn.Module, name: str, *, lr: float, weight_decay: float, momentum: float, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW (``"adamw"``) or SGD with Nesterov momentum (``"sgd"``), fused on CUDA."""
    checks.one_of("optimizer", name, OPTIMIZERS)
    groups = decay_groups(model, weight_decay)
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **fused)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **fused)


def first_group_momentum(optimizer: torch.optim.Optimizer) -> float | None:
    """The momentum (SGD) or beta1 (Adam family) of the first param group; ``None`` if it has neither."""
    group = optimizer.param_groups[0]
    return float(group["betas"][0]) if "betas" in group else group.get("momentum")
