"""Default hyperparameters, in one place, with their units.

``superconv train`` with no options uses :func:`default_recipe`: a recipe per device type,
chosen by measurement (README "Figures"). Every field is an option of ``superconv train``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    model: str = "resnet-small"
    width: int = 32  # channels of the first stage; later stages double it
    batch_size: int = 256  # examples per optimizer update (no accumulation)
    epochs: int = 8
    optimizer: str = "adamw"
    weight_decay: float = 5e-4  # decoupled, on weights only
    label_smoothing: float = 0.1
    preset: str = "torch"  # one-cycle shape (superconv.PRESETS)
    range_test_iters: int = 100  # optimizer updates in the LR range test
    tta: bool = False  # flip test-time augmentation
    ema: float | None = None  # decay per optimizer update of a weight average used for evaluation (None: off)
    compile: bool = False  # torch.compile the model (its compile time is paid in the range test's first steps)
    patience: int | None = 5  # epochs without val improvement before stopping

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Measured on a 2-core AMD EPYC with AVX-512 BF16 (bf16 autocast + channels_last), Fashion-MNIST, 5 seeds
# (benchmarks/time_to_accuracy.py, README): resnet-small width 16, 8 epochs, EMA 0.98: 93.01% test accuracy,
# 90% after 55 s and 92% after 109 s, range test included. Seeds 0 and 1 with 10 epochs: +0.20 and +0.36
# points (93% reached by both) for 1.25x the epochs; with width 20: -0.08 and +0.35 points for about 1.9x the
# time per epoch. The EMA moved 90% from epoch 6 to epoch 3 (seed 0) at the same final accuracy.
# cnn width 16, 8 epochs (no EMA): 90.6% in 55 s on a faster host.
CPU = Recipe(model="resnet-small", width=16, batch_size=256, epochs=8, tta=True, ema=0.98)
# For GPUs: a ResNet-9-style net, data resident on the device. NOT YET MEASURED on a GPU: to be chosen by
# `bash benchmarks/device/run.sh sweep` when a GPU is lent.
GPU = Recipe(model="resnet-small", width=64, batch_size=512, epochs=10, tta=True, ema=0.98)


def default_recipe(device_type: str) -> Recipe:
    """The default recipe for a device type ("cuda", "mps" or "cpu")."""
    return GPU if device_type in ("cuda", "mps") else CPU


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    """The recipe with every override that is not ``None`` applied."""
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
