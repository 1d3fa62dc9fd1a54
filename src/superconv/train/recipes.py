"""Default hyperparameters in one place, with their units, and the rules that adapt them to the data.

``superconv train`` with no options starts from :func:`default_recipe` (per device type) and :func:`adapt`-s it to
the dataset: the batch size and the run's length follow the number of training examples, so a small dataset still
gets enough updates for a whole cycle; flips (augmentation and test-time) only where they keep the labels; the
range test at most about one pass over the data. The weight average's decay follows the number of updates
(:func:`ema_decay_for`, applied by ``fit``). Every adapted value comes with the reason, and an explicit option
always wins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    model: str = "resnet-small"
    width: int = 16  # channels of the first stage; later stages double it
    batch_size: int = 256  # examples per optimizer update (no accumulation)
    epochs: int | None = None  # None: adapted to the data (see adapt)
    optimizer: str = "adamw"
    weight_decay: float = 5e-4  # decoupled, on weights only
    label_smoothing: float = 0.1
    preset: str = "torch"  # one-cycle shape (superconv.PRESETS)
    range_test_iters: int | None = None  # optimizer updates in the LR range test; None: adapted
    tta: bool | None = None  # flip test-time augmentation; None: where a flip keeps the labels
    ema: float | str | None = "auto"  # weight average's decay per update; "auto": from the run's length
    compile: bool = False  # torch.compile the model (its compile time is paid in the range test's first steps)
    patience: int | None = 5  # epochs without val improvement before the cycle is finished early
    time_cap: float = 600.0  # seconds: the default run trains fewer updates rather than take longer than this

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# CPU: resnet-small width 16, AdamW, the range test's LR, bf16 + channels_last where measured faster.
CPU = Recipe(model="resnet-small", width=16, batch_size=256)
# For GPUs: a ResNet-9-style net, data resident on the device. NOT YET MEASURED on a GPU: to be chosen by
# `bash benchmarks/device/run.sh sweep` when a GPU is lent.
GPU = Recipe(model="resnet-small", width=64, batch_size=512)

#: A default run gets at least this many optimizer updates: enough for warm-up, anneal and tail.
TARGET_UPDATES = 600
#: ... in this many epochs at least and at most.
EPOCH_RANGE = (3, 40)
#: The default batch: about 1/40 of the training set, a power of two within these bounds (per device kind).
BATCH_RANGE = {"cpu": (16, 256), "gpu": (32, 512)}
#: Range test length: about one pass over the training data, within these bounds.
RANGE_TEST_ITERS = (30, 100)
#: The weight average: off below this many updates; above, a time constant of this many updates.
EMA_MIN_UPDATES, EMA_SPAN = 300, 35


def default_recipe(device_type: str) -> Recipe:
    """The default recipe for a device type ("cuda", "mps" or "cpu")."""
    return GPU if device_type in ("cuda", "mps") else CPU


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    """The recipe with every override that is not ``None`` applied."""
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def auto_batch_size(train_size: int, device_type: str) -> int:
    """About 1/40 of the training set as a power of two, within :data:`BATCH_RANGE`.

    Example:
        >>> auto_batch_size(54000, "cpu"), auto_batch_size(1294, "cpu"), auto_batch_size(2250, "cpu")
        (256, 32, 32)
    """
    low, high = BATCH_RANGE["cpu" if device_type == "cpu" else "gpu"]
    target = max(1, train_size // 40)
    return max(low, min(high, 1 << (target.bit_length() - 1)))


def auto_epochs(updates_per_epoch: int) -> int:
    """Enough epochs for :data:`TARGET_UPDATES` updates, within :data:`EPOCH_RANGE`.

    Example:
        >>> auto_epochs(211), auto_epochs(40), auto_epochs(5)
        (3, 15, 40)
    """
    low, high = EPOCH_RANGE
    return max(low, min(high, math.ceil(TARGET_UPDATES / updates_per_epoch)))


def auto_range_test_iters(updates_per_epoch: int) -> int:
    """About one pass over the training data, within :data:`RANGE_TEST_ITERS`."""
    low, high = RANGE_TEST_ITERS
    return max(low, min(high, updates_per_epoch))


def ema_decay_for(updates: int) -> float | None:
    """The weight average for a run of ``updates``: off when short, else a time constant of ~35 updates.

    The warm-up of :class:`~superconv.train.ema.WeightEMA` needs a few hundred updates to matter; the time
    constant 35 gives 0.98 for the 1,700 updates of an 8-epoch Fashion-MNIST run (the decay measured best there).

    Example:
        >>> ema_decay_for(100), ema_decay_for(1688), ema_decay_for(600)
        (None, 0.979, 0.942)
    """
    if updates < EMA_MIN_UPDATES:
        return None
    return round(min(0.999, 1.0 - EMA_SPAN / updates), 3)


def adapt(
    recipe: Recipe, *, train_size: int, flip_invariant: bool, device_type: str, given: dict[str, Any]
) -> tuple[Recipe, dict[str, str]]:
    """The recipe adapted to the data, and a sentence for each adapted value. ``given`` holds explicit options
    (``None`` for those not given), which are never changed."""
    decisions: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if given.get("batch_size") is None:
        changes["batch_size"] = auto_batch_size(train_size, device_type)
        decisions["batch_size"] = (
            f"{changes['batch_size']}: about 1/40 of the {train_size} training examples, a power of two in "
            f"{BATCH_RANGE['cpu' if device_type == 'cpu' else 'gpu']}"
        )
    batch = changes.get("batch_size", recipe.batch_size)
    per_epoch = max(1, train_size // batch)
    if given.get("epochs") is None and given.get("time_budget") is None and recipe.epochs is None:
        changes["epochs"] = auto_epochs(per_epoch)
        decisions["epochs"] = (
            f"{changes['epochs']}: at least {TARGET_UPDATES} updates for one cycle ({per_epoch} per epoch), "
            f"{EPOCH_RANGE[0]} to {EPOCH_RANGE[1]} epochs; fewer if they would take over {recipe.time_cap:.0f} s here"
        )
    if given.get("range_test_iters") is None and recipe.range_test_iters is None:
        changes["range_test_iters"] = auto_range_test_iters(per_epoch)
        decisions["range_test_iters"] = f"{changes['range_test_iters']}: about one pass over the training data"
    if given.get("tta") is None and recipe.tta is None:
        changes["tta"] = bool(flip_invariant)
        decisions["tta"] = (
            "flip TTA: a horizontal flip keeps this dataset's labels"
            if flip_invariant
            else "no flip TTA: a horizontal flip may change this dataset's labels (digits, text, unknown folders)"
        )
    return replace(recipe, **changes), decisions
