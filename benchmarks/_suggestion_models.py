"""The small models of the suggestion benchmark's workloads (``_suggestion_workloads.py``), one per family.

Round 1's development and held-out workloads use :func:`mlp`, :func:`tiny_cnn`, :class:`GRUClassifier`,
:class:`TinyTransformer` and superconv's ``CNN`` / ``ResNetSmall``; round 2's new held-out workloads add a
deeper VGG-style CNN (:func:`vgg_cnn`), an MLP with dropout, a 1-D CNN (:class:`Conv1dClassifier`), an LSTM
(:class:`LSTMClassifier`) and a linear softmax regression (:func:`softmax_regression`); round 3's held-out
workloads add a depthwise-separable CNN (:func:`separable_cnn`) and an MLP with BatchNorm for tabular data
(``mlp(..., batchnorm=True)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(sizes: tuple[int, ...], dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    """Flatten, then Linear(-BatchNorm)-ReLU(-Dropout) layers of ``sizes``, a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        norm: list[nn.Module] = [nn.BatchNorm1d(b)] if batchnorm else []
        layers += [nn.Linear(a, b, bias=not batchnorm), *norm, nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def softmax_regression(inputs: int, classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))


def tiny_cnn(batchnorm: bool, width: int = 8) -> nn.Module:
    """Two conv(-BN)-ReLU-maxpool blocks on 28x28 images, a linear head."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm2d(cout)] if batchnorm else []
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, width), *block(width, 2 * width), nn.Flatten(), nn.Linear(2 * width * 49, 10))


def vgg_cnn(width: int = 12) -> nn.Module:
    """A deeper, wider VGG-style CNN for 32x32 single-channel images: (conv-BN-ReLU x2, maxpool) at widths w, 2w,
    then conv-BN-ReLU at 4w, global average pooling, a linear head."""

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    w = width
    return nn.Sequential(
        *conv(1, w), *conv(w, w), nn.MaxPool2d(2),
        *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
        *conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10),
    )  # fmt: skip


def separable_cnn(widths: tuple[int, ...] = (16, 32, 64, 64)) -> nn.Module:
    """A MobileNet-style CNN: a 3x3 conv-BN-ReLU stem, then per width a depthwise 3x3 conv of stride 2 and a
    pointwise 1x1 conv (each BN-ReLU), global average pooling, a linear head."""

    def bn_relu(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c), nn.ReLU()]

    layers: list[nn.Module] = [nn.Conv2d(1, widths[0], 3, padding=1, bias=False), *bn_relu(widths[0])]
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False), *bn_relu(cin),
                   nn.Conv2d(cin, cout, 1, bias=False), *bn_relu(cout)]  # fmt: skip
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


class GRUClassifier(nn.Module):
    """Embedding, one GRU layer, a linear head on the last hidden state."""

    def __init__(self, vocab: int, classes: int, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(self.embed(x))
        return self.head(out[:, -1])


class LSTMClassifier(nn.Module):
    """Embedding, one LSTM layer, a linear head on the last hidden state."""

    def __init__(self, vocab: int, classes: int, width: int = 48) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


class Conv1dClassifier(nn.Module):
    """Embedding, two 1-D convolutions (kernel 3, ReLU), global average pooling over time, a linear head."""

    def __init__(self, vocab: int, classes: int, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.convs = nn.Sequential(
            nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, width, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.convs(self.embed(x).transpose(1, 2))
        return self.head(h.mean(-1))


class TinyTransformer(nn.Module):
    """Token and learned position embeddings, pre-norm encoder layers, a linear head on the mean token."""

    def __init__(self, vocab: int, classes: int, length: int, width: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x) + self.position).mean(1))
