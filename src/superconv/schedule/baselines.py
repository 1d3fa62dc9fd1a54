"""Every LR schedule ``fit`` and ``compare`` can train with, by name, all counted in optimizer updates.

One-cycle variants come from :class:`superconv.OneCycleLR`; the conventional baselines are torch's
own schedulers (their ``state_dict`` is plain data, so checkpoints stay ``weights_only``-loadable).
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, MultiStepLR

from superconv.errors import ConfigError
from superconv.schedule.scheduler import OneCycleLR

SCHEDULES = ("one-cycle", "one-cycle-no-tail", "fastai", "constant", "step", "cosine")
ONE_CYCLE_SCHEDULES = ("one-cycle", "one-cycle-no-tail", "fastai")
#: Piecewise-constant baseline (as in Smith & Topin's comparison): divide by 10 at these fractions.
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1


def build_scheduler(name: str, optimizer: Optimizer, lr: float, total_steps: int, **one_cycle: Any) -> LRScheduler:
    """A scheduler for ``name`` peaking at (one-cycle) or starting from (baselines) ``lr``.

    ``one_cycle`` keyword arguments go to :class:`OneCycleLR` for the one-cycle variants. A param group with an
    ``"lr_scale"`` entry gets ``lr * lr_scale`` (discriminative learning rates: a lower LR for a pretrained body).
    """
    if name not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {name!r}: expected one of {SCHEDULES}")
    scales = [float(group.get("lr_scale", 1.0)) for group in optimizer.param_groups]
    if any(s != 1.0 for s in scales):
        return _scaled(name, optimizer, [lr * s for s in scales], total_steps, one_cycle)
    return _scaled(name, optimizer, lr, total_steps, one_cycle)


def _scaled(
    name: str, optimizer: Optimizer, lr: float | list[float], total_steps: int, one_cycle: dict[str, Any]
) -> LRScheduler:
    if name == "one-cycle":
        return OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, **one_cycle)
    if name == "one-cycle-no-tail":
        # Up and back down to the initial LR, no annihilation: what the tail adds, isolated.
        kwargs = {**one_cycle, "three_phase": False, "final_div_factor": 1.0}
        return OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, **kwargs)
    if name == "fastai":
        keep = {k: v for k, v in one_cycle.items() if k in ("cycle_momentum", "base_momentum", "max_momentum")}
        return OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, preset="fastai", **keep)
    lrs = lr if isinstance(lr, list) else [lr] * len(optimizer.param_groups)
    for group, group_lr in zip(optimizer.param_groups, lrs):
        group["lr"] = group_lr
        group.pop("initial_lr", None)
    if name == "constant":
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "step":
        return MultiStepLR(optimizer, milestones=[int(f * total_steps) for f in STEP_MILESTONES], gamma=STEP_GAMMA)
    return CosineAnnealingLR(optimizer, T_max=total_steps)
