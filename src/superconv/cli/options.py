"""Options shared by several commands: the one-cycle shape, and data/model/optimizer/device; and the set-up they
drive (recipe, data, model)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click


def schedule_options(f: Any) -> Any:
    """The one-cycle shape options, shared by `schedule`, `train` and `compare`."""
    options = [
        click.option(
            "--preset",
            type=click.Choice(["torch", "smith", "fastai"]),
            default=None,
            help="Named shape (default: superconv's training default, or torch's for `schedule`).",
        ),
        click.option("--pct-start", type=FiniteFloat(), default=None, help="Fraction of the run warming up."),
        click.option(
            "--pct-down",
            type=FiniteFloat(),
            default=None,
            help="Three-phase: fraction going back down to the initial LR (rest: annihilation).",
        ),
        click.option("--anneal", "anneal_strategy", type=click.Choice(["cos", "linear"]), default=None),
        click.option("--div-factor", type=FiniteFloat(), default=None, help="initial_lr = max_lr / div_factor."),
        click.option("--final-div-factor", type=FiniteFloat(), default=None, help="final_lr = initial_lr / this."),
        click.option("--three-phase/--two-phase", default=None, help="Smith's shape with the tail, or torch's."),
        click.option("--base-momentum", type=FiniteFloat(), default=0.85, show_default=True),
        click.option("--max-momentum", type=FiniteFloat(), default=0.95, show_default=True),
        click.option("--cycle-momentum/--no-cycle-momentum", default=True, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def shape_kwargs(preset: str | None, **opts: Any) -> dict[str, Any]:
    """Schedule keyword arguments: the preset by name, and only the options that were given.

    The preset is not expanded here, so the rule is the library's: an explicit option wins, then the range
    test's recommendation (its ``div_factor``), then the preset.
    """
    shape: dict[str, Any] = {"preset": preset} if preset else {}
    shape.update({k: v for k, v in opts.items() if v is not None})
    return shape


DATASET_CHOICES = ["fashion-mnist", "cifar10", "digits", "imagefolder"]


def data_model_options(f: Any) -> Any:
    """What a practitioner changes: data, model, optimizer, device. Shared by train, find-lr, compare."""
    options = [
        click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist", show_default=True),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Where the data is (imagefolder: class-per-folder images, with or without train/val).",
        ),
        click.option(
            "--subset",
            type=click.IntRange(min=1),
            default=None,
            help="Use only this many training examples (quick runs).",
        ),
        click.option("--val-fraction", type=FiniteFloat(0, 1, max_open=True), default=0.1, show_default=True),
        click.option(
            "--image-size",
            type=click.IntRange(min=8),
            default=None,
            help="Square input side (imagefolder default: from the images; pretrained: the weights' size).",
        ),
        click.option(
            "--flip/--no-flip",
            default=None,
            help="Flip augmentation and flip TTA (default: where the dataset's labels survive a flip; not for "
            "imagefolder).",
        ),
        click.option(
            "--cache-budget",
            type=click.IntRange(min=0),
            default=None,
            metavar="BYTES",
            help="imagefolder: decode into memory when it fits this (default 25% of available memory; 0: stream).",
        ),
        click.option("--skip-bad-images", is_flag=True, help="imagefolder: leave unreadable files out (counted)."),
        click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers (imagefolder)."),
        click.option(
            "--model",
            default=None,
            help="resnet-small, cnn, or a torchvision model name (mobilenet_v2, resnet18, ...).",
        ),
        click.option("--width", type=click.IntRange(min=1), default=None, help="Built-in models' base width."),
        click.option(
            "--pretrained",
            type=click.Path(path_type=Path),
            default=None,
            help="Local weights file for the model; its classifier head is replaced.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(["adamw", "sgd"]),
            default=None,
            help="AdamW (default) or SGD with Nesterov momentum.",
        ),
        click.option("--weight-decay", type=FiniteFloat(min=0), default=None),
        click.option("--batch-size", type=click.IntRange(min=1), default=None),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
            default="auto",
            show_default=True,
            help="auto: bf16 on GPUs that compute it natively; on the CPU the faster of fp32 and bf16, measured "
            "(SUPERCONV_CPU_FORMAT=fp32 pins it).",
        ),
        click.option(
            "--channels-last/--no-channels-last",
            default=None,
            help="Memory format for convolutions (default: on GPUs; on the CPU whichever is faster, measured).",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


class FiniteFloat(click.ParamType):
    """A float within [min, max] (ends open when asked) that is never NaN or infinite, unlike click.FloatRange."""

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
                 max_open: bool = False) -> None:  # fmt: skip
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid float", param, ctx)
        low_ok = self.min is None or (number > self.min if self.min_open else number >= self.min)
        high_ok = self.max is None or (number < self.max if self.max_open else number <= self.max)
        if not math.isfinite(number) or not (low_ok and high_ok):
            self.fail(f"{value!r} is not a finite number {self._describe()}", param, ctx)
        return number

    def _describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        return " and ".join(parts)


def load(opts: dict[str, Any], batch_size: int) -> Any:
    """The dataset the options name, as loaders delivering batches of ``batch_size`` on the device."""
    import torch

    from superconv.data import load_data
    from superconv.device import resolve_device
    from superconv.models import pretrained_input_size

    torch.manual_seed(opts["seed"])
    model = opts["model"] or base_recipe(opts).model
    return load_data(
        opts["dataset"],
        data_dir=opts["data_dir"],
        batch_size=batch_size,
        val_fraction=opts["val_fraction"],
        device=resolve_device(opts["device"]),
        seed=opts["seed"],
        subset=opts["subset"],
        num_workers=opts["workers"],
        image_size=opts["image_size"],
        pretrained_size=pretrained_input_size(model, opts["pretrained"]),
        cache_budget=opts["cache_budget"],
        flip=opts["flip"],
        skip_bad_images=opts["skip_bad_images"],
    )


def build(opts: dict[str, Any], recipe: Any, data: Any, seed: int | None = None) -> Any:
    """The recipe's model for the data (seeded: the same options give the same initial weights)."""
    import torch

    from superconv.models import build_model

    torch.manual_seed(opts["seed"] if seed is None else seed)
    return build_model(
        recipe.model,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        width=recipe.width,
        pretrained=opts["pretrained"],
    )


def base_recipe(opts: dict[str, Any], **overrides: Any) -> Any:
    """The device's default recipe with the options that were given."""
    from superconv.device import resolve_device
    from superconv.train.recipes import default_recipe, with_overrides

    return with_overrides(
        default_recipe(resolve_device(opts["device"]).type),
        model=opts["model"],
        width=opts["width"],
        batch_size=opts["batch_size"],
        optimizer=opts["optimizer"],
        weight_decay=opts["weight_decay"],
        **overrides,
    )


def prepare(opts: dict[str, Any], **recipe_overrides: Any) -> tuple[Any, Any, Any, Any]:
    """Recipe (as given, not adapted), data and model: what find-lr and compare start from."""
    from superconv.device import resolve_device

    recipe = base_recipe(opts, **recipe_overrides)
    data = load(opts, recipe.batch_size)
    return recipe, data, build(opts, recipe, data), resolve_device(opts["device"])


def plain(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}
