"""The workloads of ``lr_suggestion.py``: data, models, optimizers and run lengths, split into a DEVELOPMENT set
(methods are designed and their hyperparameters chosen on it, by validation accuracy) and a HELD-OUT set (scored
once, on test accuracy, with the choices frozen).

Everything is offline and small: scikit-learn's digits, a Fashion-MNIST subset read by
``superconv.data.load_data`` from /usr/share/datasets/fashion-mnist, and a synthetic sequence task (the most
frequent token of a random sequence). Each workload has a train / validation / test split; the data are fixed,
the seed changes the initial weights and the batch order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from superconv.data import load_data
from superconv.models import CNN, ResNetSmall

Split = tuple[Tensor, Tensor]

# --------------------------------------------------------------------------------------------- data


def _normalized(images: Tensor, mean: float, std: float, size: int | None = None) -> Tensor:
    x = (images.float() / 255.0 - mean) / std
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x.contiguous()


def _split_of(loader: Any) -> Split:
    """The uint8 images and labels a superconv TensorLoader holds."""
    return loader.images, loader.labels


@functools.lru_cache(maxsize=4)
def fashion_mnist(subset: int, seed: int, size: int = 28) -> tuple[Split, Split, Split]:
    """``subset`` training images of Fashion-MNIST (1/6 carved off for validation) and 5000 test images."""
    bundle = load_data("fashion-mnist", subset=subset, val_fraction=1 / 6, augment=False, seed=seed)
    train_x, train_y = _split_of(bundle.train)
    val_x, val_y = _split_of(bundle.val)
    test_x, test_y = _split_of(bundle.test)
    test_x, test_y = test_x[:5000], test_y[:5000]  # half the test set: the same images for every LR
    mean, std = float(train_x.float().mean() / 255.0), float(train_x.float().std() / 255.0)
    return (
        (_normalized(train_x, mean, std, size), train_y),
        (_normalized(val_x, mean, std, size), val_y),
        (_normalized(test_x, mean, std, size), test_y),
    )


@functools.lru_cache(maxsize=1)
def digits(flat: bool) -> tuple[Split, Split, Split]:
    """scikit-learn's 8x8 digits: 1437 train (215 of them carved off for validation) / 360 test."""
    bundle = load_data("digits", val_fraction=0.15, augment=False, seed=0)
    splits = []
    for loader in (bundle.train, bundle.val, bundle.test):
        x, y = _split_of(loader)
        x = x.float() / 255.0
        splits.append((x.flatten(1) if flat else x, y))
    return splits[0], splits[1], splits[2]


@functools.lru_cache(maxsize=2)
def mode_task(vocab: int, length: int, n_train: int = 2000, n_val: int = 600, n_test: int = 4000) -> tuple[Split, ...]:
    """Sequences of ``length`` uniform tokens out of ``vocab``; the label is the most frequent token (the lowest
    of tied ones). A counting task: recurrent and attention models both learn it, at a rate that depends on
    the LR."""
    rng = np.random.default_rng(1000 * vocab + length)
    out = []
    for n in (n_train, n_val, n_test):
        x = rng.integers(0, vocab, (n, length))
        counts = np.stack([(x == v).sum(1) for v in range(vocab)], 1)
        out.append((torch.tensor(x), torch.tensor(counts.argmax(1))))
    return tuple(out)


# --------------------------------------------------------------------------------------------- models


def mlp(sizes: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def tiny_cnn(batchnorm: bool, width: int = 8) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm2d(cout)] if batchnorm else []
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, width), *block(width, 2 * width), nn.Flatten(), nn.Linear(2 * width * 49, 10))


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


# --------------------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One (data, model, optimizer, run length) combination.

    ``epochs * (train size // batch_size)`` optimizer updates make the one-cycle run that every LR is scored
    with; the grid is 7 LRs half a decade apart.
    """

    name: str
    role: str  # "dev" or "held-out"
    family: str  # the model family, for the report
    data: Callable[[], tuple[Split, ...]]
    model: Callable[[], nn.Module]
    optimizer: str  # "sgd" (Nesterov momentum 0.9, weight decay 5e-4) or "adamw" (weight decay 1e-2)
    batch_size: int
    epochs: int
    grid: tuple[float, ...]

    def make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)

    def train_loader(self, train: Split, seed: int) -> DataLoader:
        """Shuffled full batches whose order depends only on ``seed`` (its generator is the loader's state)."""
        gen = torch.Generator().manual_seed(seed)
        dataset = TensorDataset(*train)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=gen, drop_last=True)

    def run_steps(self, train: Split) -> int:
        return self.epochs * (len(train[1]) // self.batch_size)


def grid(low_exponent: float) -> tuple[float, ...]:
    """7 LRs half a decade apart from ``10**low_exponent``."""
    return tuple(float(f"{10 ** (low_exponent + k / 2):.3g}") for k in range(7))


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        # development: the three combinations, plus a recurrent model on a sequence task
        Workload("digits-mlp-sgd", "dev", "MLP", lambda: digits(True), lambda: mlp((64, 128, 64, 10)),
                 "sgd", 32, 12, grid(-2.5)),
        Workload("fmnist-cnn-adamw", "dev", "CNN", lambda: fashion_mnist(3600, 0), lambda: tiny_cnn(False),
                 "adamw", 32, 5, grid(-3.5)),
        Workload("fmnist-bncnn-sgd", "dev", "CNN", lambda: fashion_mnist(3600, 0), lambda: tiny_cnn(True),
                 "sgd", 32, 5, grid(-2.5)),
        Workload("mode-gru-adamw", "dev", "RNN", lambda: mode_task(8, 24), lambda: GRUClassifier(8, 8),
                 "adamw", 32, 8, grid(-3.0)),
        # held-out: other models (and a disjoint Fashion-MNIST subset); never looked at while designing
        Workload("fmnist-cnn-gap-adamw", "held-out", "CNN", lambda: fashion_mnist(3600, 1),
                 lambda: CNN(10, in_channels=1, width=8), "adamw", 32, 5, grid(-3.5)),
        Workload("fmnist-mlp-sgd", "held-out", "MLP", lambda: fashion_mnist(3600, 1), lambda: mlp((784, 256, 128, 10)),
                 "sgd", 32, 5, grid(-2.5)),
        Workload("fmnist16-resnet-sgd", "held-out", "ResNet", lambda: fashion_mnist(3600, 1, 16),
                 lambda: ResNetSmall(10, in_channels=1, width=8), "sgd", 32, 5, grid(-2.5)),
        Workload("mode-transformer-adamw", "held-out", "Transformer", lambda: mode_task(16, 32),
                 lambda: TinyTransformer(16, 16, 32), "adamw", 32, 8, grid(-3.5)),
    )
}  # fmt: skip
