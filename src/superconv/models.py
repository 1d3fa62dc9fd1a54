"""Models: two small built-in networks for quick super-convergence runs, and torchvision's.

* ``resnet-small`` - a ResNet for small images in the spirit of ResNet-9 (the DAWNBench CIFAR-10
  winner) and airbench: a conv-bn-relu stem, three stages of conv-bn-relu + max-pool + one
  residual block, global max pooling and a linear head. Trains to good accuracy in a few epochs
  on a CPU at width 16-32.
* ``cnn`` - a plain three-layer CNN, the small baseline.
* any torchvision classification model by name (``resnet18``, ``mobilenet_v2``, ...), built
  without downloading anything; ``pretrained`` loads weights from a local file (or, given a
  torchvision weights name such as ``DEFAULT``, downloads them where a network exists).

For fine-tuning, :func:`split_head_body` separates the classifier head's parameters from the body's
(discriminative learning rates, a head-first phase) and :func:`freeze` freezes or unfreezes either;
:func:`pretrained_input_size` is the image side pretrained weights expect, :func:`describe_model` a
one-line name for headers and logs.

All built-ins are plain Conv2d/BatchNorm2d/ReLU/MaxPool2d stacks and therefore run in
``channels_last`` memory format without layout conversions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from superconv.checks import positive_int
from superconv.errors import CheckpointError, ConfigError
from superconv.files import load_plain

__all__ = [
    "BUILTIN_MODELS",
    "CNN",
    "ResNetSmall",
    "available_models",
    "build_model",
    "describe_model",
    "freeze",
    "load_state_dict_file",
    "pretrained_input_size",
    "split_head_body",
]

BUILTIN_MODELS = ("resnet-small", "cnn")
# The smallest input the built-ins accept: three 2x max-pools need at least 8 pixels.
_MIN_BUILTIN_SIZE = 8
# torchvision's ImageNet heads, which a pretrained model is built (and loaded) with.
_IMAGENET_CLASSES = 1000
# The input side of torchvision's ImageNet weights when a model's own weights do not say otherwise.
IMAGENET_INPUT_SIZE = 224


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # No conv bias: the BatchNorm that follows has its own shift.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``x + f(x)`` with ``f`` two conv-bn-relu layers at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNetSmall(nn.Module):
    """ResNet-9-style network for small images.

    Args:
        num_classes: outputs of the linear head.
        in_channels: input channels (1 for Fashion-MNIST/digits, 3 for CIFAR-10).
        width: channels of the stem and first stage; the stages have (w, 2w, 4w).
        pool: global ``"max"`` (as in ResNet-9) or ``"avg"`` pooling before the head.
        logit_scale: the logits are multiplied by this. ResNet-9 uses 0.125: smaller initial
            logits keep the softmax away from saturation at the very high learning rates of
            super-convergence.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 32,
        pool: str = "max",
        logit_scale: float = 0.125,
    ) -> None:
        super().__init__()
        w = width
        self.stem = _conv_bn(in_channels, w)
        self.stages = nn.Sequential(
            *(
                nn.Sequential(_conv_bn(c_in, c_out), nn.MaxPool2d(2), Residual(c_out))
                for c_in, c_out in ((w, w), (w, 2 * w), (2 * w, 4 * w))
            )
        )
        if pool not in ("max", "avg"):
            raise ConfigError(f"Expected pool 'max' or 'avg', but got {pool!r}")
        self.pool = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)
        self.logit_scale = logit_scale

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.head(torch.flatten(x, 1)) * self.logit_scale


class CNN(nn.Module):
    """Three conv-bn-relu-maxpool blocks (widths w, 2w, 4w), global average pooling, linear head."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *(
                nn.Sequential(_conv_bn(c_in, c_out), nn.MaxPool2d(2))
                for c_in, c_out in ((in_channels, w), (w, 2 * w), (2 * w, 4 * w))
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _builtin_key(name: Any) -> str:
    return name.strip().lower().replace("_", "-") if isinstance(name, str) else ""


def available_models() -> list[str]:
    """The built-in names followed by torchvision's classification models (sorted)."""
    return [*BUILTIN_MODELS, *_torchvision_names()]


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    width: int = 32,
    pretrained: str | Path | None = None,
) -> nn.Module:
    """Build a model by name for ``num_classes`` classes and ``in_channels``-channel inputs.

    Args:
        name: ``resnet-small``, ``cnn`` or a torchvision classification model name
            (see :func:`available_models`).
        num_classes: outputs of the classifier head.
        in_channels: input channels. A torchvision model's first convolution is replaced by one
            with this many input channels; with pretrained weights its kernels are summed over
            RGB (1 channel: exact for a grey image fed as R=G=B) or tiled and rescaled.
        image_size: the input side; checked for the built-ins, passed to ViT models.
        width: the built-ins' base width (ignored by torchvision models).
        pretrained: a local state-dict file (a raw state dict or a dict with a ``"model"`` or
            ``"state_dict"`` entry) for the model's original architecture (a torchvision model
            with its 1000-class ImageNet head, a built-in with any head); or a torchvision weights
            name such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"``, downloaded where a network
            exists. The classifier head is replaced by a fresh one for ``num_classes`` after
            loading.

    Raises:
        ConfigError: an unknown name or an invalid size.
        CheckpointError: a missing or corrupt weights file, or one that does not fit the model.
    """
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        positive_int(arg, value)
    positive_int("width", width)
    key = _builtin_key(name)
    if key in BUILTIN_MODELS:
        if image_size < _MIN_BUILTIN_SIZE:
            raise ConfigError(
                f"The model {key!r} halves the image three times and needs images of at least "
                f"{_MIN_BUILTIN_SIZE} pixels, but got image_size={image_size}; use a larger --image-size"
            )
        model: nn.Module
        if key == "resnet-small":
            model = ResNetSmall(num_classes, in_channels=in_channels, width=width)
        else:
            model = CNN(num_classes, in_channels=in_channels, width=width)
        if pretrained is not None:
            _load_builtin(model, _read_weights(pretrained, name), pretrained)
        return model

    tv_names = _torchvision_names()
    tv_name = name.strip() if isinstance(name, str) else ""
    if tv_name not in tv_names and tv_name.lower() in tv_names:
        tv_name = tv_name.lower()
    if tv_name not in tv_names:
        raise ConfigError(
            f"Unknown model {name!r}: expected one of the built-ins ({', '.join(BUILTIN_MODELS)}) or a "
            "torchvision classification model name such as resnet18 or mobilenet_v2 "
            "(superconv.models.available_models() lists them all)"
        )
    return _build_torchvision(tv_name, num_classes, in_channels, image_size, pretrained)


def _build_torchvision(
    name: str, num_classes: int, in_channels: int, image_size: int, pretrained: str | Path | None
) -> nn.Module:
    import torchvision

    extra: dict[str, Any] = {}
    if name.startswith("vit_") and image_size != 224:
        if pretrained is not None:
            raise ConfigError(
                f"Pretrained {name} weights are for 224-pixel inputs, but got image_size={image_size}; "
                "use --image-size 224"
            )
        extra["image_size"] = image_size
    if pretrained is None:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
        if in_channels != 3:
            _adapt_first_conv(model, in_channels, keep_weights=False)
        return model

    # Load into the original (ImageNet, 1000-class, RGB) architecture first, so that every key
    # and shape must match; only then adapt the input and the head.
    state = _read_weights(pretrained, name)
    model = torchvision.models.get_model(name, weights=None, **extra)
    _load_strict(model, state, pretrained)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, keep_weights=True)
    _replace_heads(model, num_classes)
    return model


def _read_weights(pretrained: str | Path, model_name: str) -> dict[str, Tensor]:
    """A state dict from a local file, or from torchvision's weights by name."""
    path = Path(pretrained).expanduser()
    text = str(pretrained)
    looks_like_path = path.suffix != "" or os.sep in text or "/" in text or path.exists()
    if looks_like_path:
        return load_state_dict_file(path)
    return _download_weights(model_name, text)


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save`` (``weights_only=True``).

    Accepts a raw state dict or a dict holding one under ``"model"`` or ``"state_dict"``, and
    strips a ``"module."`` prefix left by ``DataParallel``/``DistributedDataParallel``.

    Raises:
        CheckpointError: the file is missing, corrupt, or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"The weights file {path} does not exist; pass --pretrained with the path of a state dict "
            "saved by torch.save(model.state_dict(), path)"
        )
    try:
        loaded = load_plain(path)
    except Exception as exc:  # unpickling raises many types; all mean "not a usable weights file"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"Cannot read the weights file {path}: it is corrupt, truncated, or not a plain torch state "
            f"dict ({detail}). Re-save it with torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(loaded, dict):
        for key in ("model", "state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(
            f"Expected {path} to hold a state dict (parameter name -> tensor), or a dict with one under "
            f"'model' or 'state_dict', but it holds a {type(loaded).__qualname__} of other values"
        )
    state: dict[str, Tensor] = loaded
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _download_weights(model_name: str, weights_name: str) -> dict[str, Tensor]:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(model_name)
    except ValueError as exc:
        raise CheckpointError(f"torchvision has no pretrained weights for {model_name}") from exc
    choices = ["DEFAULT", *enum.__members__]
    if weights_name not in choices:
        raise CheckpointError(
            f"Expected --pretrained to be a weights file path or one of {', '.join(choices)} for "
            f"{model_name}, but got {weights_name!r} (no such file either)"
        )
    weights = enum.DEFAULT if weights_name == "DEFAULT" else enum[weights_name]
    if os.environ.get("SUPERCONV_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        raise CheckpointError(
            f"Cannot download the {model_name} weights {weights_name}: downloads are disabled "
            "(SUPERCONV_OFFLINE is set); pass --pretrained with a local state-dict file instead"
        )
    try:
        return dict(weights.get_state_dict(progress=False))
    except Exception as exc:
        raise CheckpointError(
            f"Could not download the {model_name} weights {weights_name} ({type(exc).__name__}: {exc}); "
            "run with a network, or pass --pretrained with a local state-dict file"
        ) from exc


def _mismatches(model: nn.Module, state: dict[str, Tensor], skip: set[str] | None = None) -> str:
    expected = model.state_dict()
    skip = skip or set()
    missing = sorted(set(expected) - set(state) - skip)
    unexpected = sorted(set(state) - set(expected) - skip)
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and k not in skip and state[k].shape != expected[k].shape
    ]
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape (file vs model)", wrong),
    ):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            parts.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts)


def _load_strict(model: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    problem = _mismatches(model, state)
    if problem:
        raise CheckpointError(
            f"The weights in {source} do not fit {type(model).__name__} ({problem}). Pass weights saved "
            "from the same architecture (torchvision models: the original 1000-class ImageNet model)"
        )
    model.load_state_dict(state)


def _load_builtin(model: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """Load into a built-in; a head of another size is skipped (left fresh) for fine-tuning."""
    expected = model.state_dict()
    head: set[str] = {k for k in ("head.weight", "head.bias") if k in state and state[k].shape != expected[k].shape}
    problem = _mismatches(model, state, skip=head)
    if problem:
        raise CheckpointError(
            f"The weights in {source} do not fit {type(model).__name__} ({problem}). Pass weights saved "
            "from the same model, width and input channels"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=not head)


def _adapt_first_conv(model: nn.Module, in_channels: int, keep_weights: bool) -> None:
    """Replace the first (RGB) convolution with one that takes ``in_channels`` channels."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels != 3 or first[1].groups != 1:
        raise ConfigError(
            f"Cannot adapt {type(model).__name__} to {in_channels} input channels: its first layer is "
            "not a plain 3-channel convolution; feed 3-channel inputs (--in-channels 3)"
        )
    module_name, old = first
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if keep_weights:
        with torch.no_grad():
            rgb = old.weight
            if in_channels == 1:
                # Summing makes the new conv on a grey image equal the old conv on (g, g, g).
                new.weight.copy_(rgb.sum(dim=1, keepdim=True))
            else:
                # Tile R, G, B, ... and rescale so the activations keep their magnitude.
                reps = -(-in_channels // 3)
                new.weight.copy_(rgb.repeat(1, reps, 1, 1)[:, :in_channels] * (3.0 / in_channels))
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
    model.set_submodule(module_name, new)


def _replace_heads(model: nn.Module, num_classes: int) -> None:
    """Swap every 1000-way ImageNet classifier (main and auxiliary heads) for a fresh one."""
    heads = [
        (n, m)
        for n, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == _IMAGENET_CLASSES)
        or (isinstance(m, nn.Conv2d) and m.out_channels == _IMAGENET_CLASSES)  # squeezenet
    ]
    if not heads:
        raise ConfigError(
            f"Cannot find the 1000-class head of {type(model).__name__} to replace; build it without --pretrained"
        )
    for module_name, old in heads:
        new: nn.Module
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        else:
            assert isinstance(old, nn.Conv2d)
            new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size)  # type: ignore[arg-type]
        model.set_submodule(module_name, new)


# --------------------------------------------------------------------------------------------
# Fine-tuning: the head and the body, freezing, the input size of pretrained weights


def _head_modules(model: nn.Module) -> list[nn.Module]:
    """The layers that produce the class scores: the last ``Linear`` in registration order (torchvision's
    ``fc``, ``classifier[-1]``, ``heads.head``; the built-ins' ``head``), else the last ``Conv2d``
    (squeezenet's 1x1 classifier), plus the last ``Linear`` of every auxiliary head (inception, googlenet)."""
    named = list(model.named_modules())
    linears = [m for _, m in named if isinstance(m, nn.Linear)]
    convs = [m for _, m in named if isinstance(m, nn.Conv2d)]
    if not linears and not convs:
        raise ConfigError(
            f"Cannot find the classifier head of {type(model).__name__}: it has no Linear or Conv2d layer; "
            "pass the head's and the body's parameters yourself"
        )
    heads: list[nn.Module] = [linears[-1] if linears else convs[-1]]
    for child_name, child in model.named_children():
        if "aux" in child_name.lower():
            aux = [m for m in child.modules() if isinstance(m, nn.Linear)]
            heads += aux[-1:]
    return heads


def split_head_body(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(head parameters, body parameters)``: the classifier layer(s) that ``pretrained=`` replaces, and the rest.

    For a head-first phase (``freeze(body)``) and discriminative learning rates (a lower LR for the body).
    Works for the built-ins and torchvision's classifiers (resnet*, mobilenet_v2/v3, efficientnet, convnext,
    vit, swin, densenet, squeezenet, regnet, ...). Every parameter is in exactly one list, in the model's order.

    Example:
        >>> model = build_model("resnet-small", num_classes=3, width=4)
        >>> head, body = split_head_body(model)
        >>> [tuple(p.shape) for p in head]
        [(3, 16), (3,)]
    """
    head_ids = {id(p) for module in _head_modules(model) for p in module.parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return head, body


def freeze(parameters: nn.Module | Iterable[nn.Parameter], frozen: bool = True) -> int:
    """Stop (``frozen=True``) or resume gradient updates of a module's or a list's parameters; returns how many.

    A frozen parameter gets no gradient (``requires_grad=False``), so an optimizer leaves it alone; BatchNorm's
    running statistics still update in ``train()`` mode (put the module in ``eval()`` to fix them too).
    """
    params = list(parameters.parameters() if isinstance(parameters, nn.Module) else parameters)
    for p in params:
        if not isinstance(p, Tensor):
            raise ConfigError(f"Expected parameters (tensors) to freeze, but got a {type(p).__qualname__}")
        p.requires_grad_(not frozen)
    return len(params)


def pretrained_input_size(name: str, pretrained: str | Path | None) -> int | None:
    """The image side ``pretrained`` weights for model ``name`` were trained at; None when there is none to match.

    None for no weights, and for the built-ins (trained from scratch at any size). For a torchvision model: the
    crop size of the named weights (e.g. ``IMAGENET1K_V1``), or, for a weights file, of the model's default
    torchvision weights (224 for most, 299 for inception_v3, 300 for efficientnet_b3...); 224 if unknown.
    """
    if pretrained is None or _builtin_key(name) in BUILTIN_MODELS:
        return None
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name.strip())
    except (ValueError, KeyError):
        return IMAGENET_INPUT_SIZE
    text = str(pretrained)
    weights = enum[text] if text in enum.__members__ else enum.DEFAULT
    crop = getattr(weights.transforms(), "crop_size", None)
    return int(crop[0]) if crop else IMAGENET_INPUT_SIZE


def describe_model(name: str, width: int | None = None, pretrained: str | Path | None = None) -> str:
    """A one-line description for headers and logs: ``resnet-small width 16``, ``mobilenet_v2 (torchvision)``.

    The width is shown for the built-ins only: torchvision models have none.
    """
    key = _builtin_key(name)
    if key in BUILTIN_MODELS:
        text = key if width is None else f"{key} width {width}"
    else:
        text = f"{name.strip()} (torchvision)"
    return text if pretrained is None else f"{text}, pretrained weights {pretrained}"
