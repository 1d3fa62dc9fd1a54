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
    patience: int | None = 5  # epochs without val improvement before stopping

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Measured on a 2-core AMD EPYC with AVX-512 BF16 (bf16 autocast + channels_last), Fashion-MNIST:
# resnet-small width 16, 8 epochs: 92.6% test accuracy in 106 s, range test included (12 s per epoch);
# cnn width 16, 8 epochs: 90.6% in 55 s. See benchmarks/time_to_accuracy.py and the README.
CPU = Recipe(model="resnet-small", width=16, batch_size=256, epochs=8, tta=True)
# For GPUs: a ResNet-9-style net, data resident on the device (benchmarks/time_to_accuracy.py).
GPU = Recipe(model="resnet-small", width=64, batch_size=512, epochs=10, tta=True)


def default_recipe(device_type: str) -> Recipe:
    """The default recipe for a device type ("cuda", "mps" or "cpu")."""
    return GPU if device_type in ("cuda", "mps") else CPU


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    """The recipe with every override that is not ``None`` applied."""
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
