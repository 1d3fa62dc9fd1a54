"""superconv: super-convergence made practical in PyTorch.

Find a trustworthy learning rate with an LR range test, train with the one-cycle policy
(warm-up, anneal, and a final annihilation phase far below the initial LR), and reach a good
model in a fraction of the usual time.

Public names are imported lazily, so ``import superconv`` stays light: matplotlib, torchvision
and the training loop are only imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "OneCycleSchedule": "superconv.schedule.one_cycle",
    "PRESETS": "superconv.schedule.one_cycle",
    "OneCycleLR": "superconv.schedule.scheduler",
    "total_steps": "superconv.schedule.steps",
    "UpdateCounter": "superconv.schedule.steps",
    "LRFinder": "superconv.finder.lr_finder",
    "RangeTestResult": "superconv.finder.lr_finder",
    "verify": "superconv.finder.verify",
    "Verification": "superconv.finder.verify",
    "fit": "superconv.train.trainer",
    "FitResult": "superconv.train.state",
    "Callback": "superconv.train.events",
    "EarlyStopping": "superconv.train.early_stopping",
    "compare": "superconv.comparison.runner",
    "fine_tune": "superconv.train.finetune",
    "WeightEMA": "superconv.train.ema",
    "TimeBudget": "superconv.train.budget",
}

__all__ = [
    "PRESETS",
    "Callback",
    "EarlyStopping",
    "FitResult",
    "LRFinder",
    "OneCycleLR",
    "OneCycleSchedule",
    "RangeTestResult",
    "TimeBudget",
    "UpdateCounter",
    "Verification",
    "WeightEMA",
    "__version__",
    "compare",
    "fine_tune",
    "fit",
    "total_steps",
    "verify",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from superconv.comparison.runner import compare
    from superconv.finder.lr_finder import LRFinder, RangeTestResult
    from superconv.finder.verify import Verification, verify
    from superconv.schedule.one_cycle import PRESETS, OneCycleSchedule
    from superconv.schedule.scheduler import OneCycleLR
    from superconv.schedule.steps import UpdateCounter, total_steps
    from superconv.train.budget import TimeBudget
    from superconv.train.early_stopping import EarlyStopping
    from superconv.train.ema import WeightEMA
    from superconv.train.events import Callback
    from superconv.train.finetune import fine_tune
    from superconv.train.state import FitResult
    from superconv.train.trainer import fit


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'superconv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
