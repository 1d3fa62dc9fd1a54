"""The built-in models, torchvision models by name, and loading local pretrained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from superconv.errors import CheckpointError, ConfigError
from superconv.models import (
    BUILTIN_MODELS,
    available_models,
    build_model,
    describe_model,
    freeze,
    pretrained_input_size,
    split_head_body,
)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32), (1, 8)])
def test_builtin_forward_backward(name: str, in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model: Any = build_model(name, num_classes=10, in_channels=in_channels, image_size=size, width=8)
    x = torch.randn(4, in_channels, size, size)
    out = model(x)
    assert out.shape == (4, 10)
    loss = nn.functional.cross_entropy(out, torch.arange(4))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_builtin_channels_last_matches_contiguous(name: str) -> None:
    torch.manual_seed(0)
    model: Any = build_model(name, num_classes=5, in_channels=3, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_resnet_small_layout_and_width() -> None:
    model: Any = build_model("resnet-small", num_classes=10, in_channels=1, width=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # stem + 3 stages of (conv + residual of two convs)
    assert len(convs) == 1 + 3 * 3
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3


def test_names_are_normalized() -> None:
    assert isinstance(build_model("ResNet_Small", num_classes=3, width=4), nn.Module)
    assert isinstance(build_model("CNN", num_classes=3, width=4), nn.Module)


def test_available_models() -> None:
    names = available_models()
    assert names[: len(BUILTIN_MODELS)] == list(BUILTIN_MODELS)
    assert {"resnet18", "mobilenet_v2"} <= set(names)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_torchvision_model_one_channel_28px(name: str) -> None:
    torch.manual_seed(0)
    model: Any = build_model(name, num_classes=10, in_channels=1, image_size=28).eval()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_torchvision_model_three_channels() -> None:
    model: Any = build_model("resnet18", num_classes=7, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_pretrained_local_file_loads_backbone_and_replaces_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    model: Any = build_model("resnet18", num_classes=5, pretrained=path)
    assert torch.equal(model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, source.bn1.running_var)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 5
    assert model.fc.in_features == 512
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_pretrained_wrapped_state_dict_and_one_channel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "ckpt.pt"
    # A training checkpoint whose weights were saved from a DataParallel-wrapped model.
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)

    model: Any = build_model("resnet18", num_classes=4, in_channels=1, pretrained=str(path)).eval()
    assert model.conv1.in_channels == 1
    # The summed RGB kernel on a grey image equals the original conv on (g, g, g).
    grey = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.conv1(grey), source.conv1(grey.expand(1, 3, 16, 16)))
        assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 4


def test_pretrained_squeezenet_conv_head(tmp_path: Path) -> None:
    path = tmp_path / "sq.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    model: Any = build_model("squeezenet1_1", num_classes=3, pretrained=path).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_pretrained_builtin_reuses_backbone_with_new_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source: Any = build_model("cnn", num_classes=10, in_channels=1, width=4)
    path = tmp_path / "cnn.pt"
    torch.save(source.state_dict(), path)
    model: Any = build_model("cnn", num_classes=3, in_channels=1, width=4, pretrained=path)
    assert isinstance(model.features[0][0][0], nn.Conv2d)
    assert torch.equal(model.features[0][0][0].weight, source.features[0][0][0].weight)
    assert model.head.out_features == 3
    with pytest.raises(CheckpointError, match=r"do not fit CNN \(.*wrong shape.*same model, width"):
        build_model("cnn", num_classes=3, in_channels=1, width=8, pretrained=path)


def test_unknown_model() -> None:
    with pytest.raises(ConfigError, match=r"Unknown model 'resnet-huge'.*resnet-small, cnn.*torchvision"):
        build_model("resnet-huge", num_classes=10)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_classes": 0}, r"num_classes to be a positive integer, but got 0"),
        ({"num_classes": 10, "width": 2.5}, r"width to be a positive integer, but got 2.5"),
        ({"num_classes": 10, "image_size": 4}, r"at least 8 pixels, but got image_size=4"),
    ],
)
def test_bad_arguments(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_model("cnn", **kwargs)


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.pth"
    with pytest.raises(CheckpointError, match=r"weights file .*missing\.pth does not exist.*state_dict\(\)"):
        build_model("resnet18", num_classes=5, pretrained=path)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"Cannot read the weights file .*bad\.pth.*corrupt.*Re-save"):
        build_model("resnet18", num_classes=5, pretrained=path)


def test_weights_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=r"Expected .*list\.pth to hold a state dict.*holds a list"):
        build_model("resnet18", num_classes=5, pretrained=path)


def test_mismatched_weights(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"do not fit ResNet \(wrong shape .*fc\.weight \(10, 512\) vs"):
        build_model("resnet18", num_classes=10, pretrained=path)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match=r"missing: bn1\.bias.*and \d+ more.*1000-class ImageNet"):
        build_model("resnet18", num_classes=10, pretrained=path)


def test_weights_by_name_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERCONV_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"Cannot download the resnet18 weights DEFAULT.*local"):
        build_model("resnet18", num_classes=5, pretrained="DEFAULT")
    with pytest.raises(CheckpointError, match=r"one of DEFAULT, IMAGENET1K_V1.*but got 'BOGUS'"):
        build_model("resnet18", num_classes=5, pretrained="BOGUS")


# --------------------------------------------------------------------------------------------
# Fine-tuning: head vs body, freezing, the size pretrained weights expect, the description


def _head_names(model: nn.Module, head: list[nn.Parameter]) -> list[str]:
    ids = {id(p) for p in head}
    return [name for name, p in model.named_parameters() if id(p) in ids]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", ["fc.weight", "fc.bias"]),
        ("mobilenet_v2", ["classifier.1.weight", "classifier.1.bias"]),
        ("mobilenet_v3_small", ["classifier.3.weight", "classifier.3.bias"]),
        ("efficientnet_b0", ["classifier.1.weight", "classifier.1.bias"]),
        ("densenet121", ["classifier.weight", "classifier.bias"]),
        ("squeezenet1_1", ["classifier.1.weight", "classifier.1.bias"]),
        ("regnet_x_400mf", ["fc.weight", "fc.bias"]),
        pytest.param("convnext_tiny", ["classifier.2.weight", "classifier.2.bias"], marks=pytest.mark.slow),
        pytest.param("vit_b_16", ["heads.head.weight", "heads.head.bias"], marks=pytest.mark.slow),
        ("resnet-small", ["head.weight", "head.bias"]),
        ("cnn", ["head.weight", "head.bias"]),
    ],
)
def test_split_head_body(name: str, expected: list[str]) -> None:
    model: Any = build_model(name, num_classes=7, image_size=32, width=4)
    head, body = split_head_body(model)
    assert _head_names(model, head) == expected
    assert len(head) + len(body) == len(list(model.parameters()))
    assert {id(p) for p in head}.isdisjoint(id(p) for p in body)
    out_features = head[0].shape[0]
    assert out_features == 7  # the head is the layer that makes the 7 class scores


def test_inception_auxiliary_head_is_head() -> None:
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=4)
    head, _ = split_head_body(model)
    assert _head_names(model, head) == ["AuxLogits.fc.weight", "AuxLogits.fc.bias", "fc.weight", "fc.bias"]


def test_pretrained_mobilenet_v2_file_head_found_and_frozen_body(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(source.state_dict(), path)
    model: Any = build_model("mobilenet_v2", num_classes=3, pretrained=path)
    head, body = split_head_body(model)
    assert [tuple(p.shape) for p in head] == [(3, 1280), (3,)]  # the fresh 3-class layer, not the ImageNet one
    assert torch.equal(body[0], source.features[0][0].weight)  # the body holds the loaded weights

    assert freeze(body) == len(body)
    assert all(not p.requires_grad for p in body) and all(p.requires_grad for p in head)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = [p.detach().clone() for p in body]
    head_before = head[0].detach().clone()
    model.train()
    nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2])).backward()
    optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(body, before)) and not torch.equal(head[0], head_before)

    freeze(model, frozen=False)  # a module works too; the whole net trains in the second phase
    assert all(p.requires_grad for p in model.parameters())
    optimizer = torch.optim.SGD([{"params": body, "lr": 0.01}, {"params": head, "lr": 0.1}])  # a lower LR for the body
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2])).backward()
    optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(body[:3], before[:3]))  # the body moves now
    with pytest.raises(ConfigError, match=r"Expected parameters \(tensors\) to freeze, but got a str"):
        freeze(["conv.weight"])  # type: ignore[list-item]


def test_split_head_body_needs_a_layer() -> None:
    with pytest.raises(ConfigError, match=r"Cannot find the classifier head of ReLU: it has no Linear or Conv2d"):
        split_head_body(nn.ReLU())


@pytest.mark.parametrize(
    ("name", "pretrained", "expected"),
    [
        ("mobilenet_v2", "weights.pth", 224),
        ("mobilenet_v2", "IMAGENET1K_V1", 224),
        ("efficientnet_b3", "weights.pth", 300),
        ("inception_v3", "DEFAULT", 299),
        ("resnet18", None, None),  # from scratch: the data decides
        ("resnet-small", "weights.pth", None),  # the built-ins take any size
    ],
)
def test_pretrained_input_size(name: str, pretrained: str | None, expected: int | None) -> None:
    assert pretrained_input_size(name, pretrained) == expected


def test_describe_model() -> None:
    assert describe_model("resnet_small", 16) == "resnet-small width 16"
    assert describe_model("mobilenet_v2", 16) == "mobilenet_v2 (torchvision)"  # no width: it has none
    assert describe_model("mobilenet_v2", pretrained="w.pth") == "mobilenet_v2 (torchvision), pretrained weights w.pth"
