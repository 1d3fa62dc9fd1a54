"""The workloads of ``lr_suggestion.py``: data, models, optimizers and run lengths, split into a DEVELOPMENT set
(methods are designed and their settings chosen on it, by validation accuracy) and a HELD-OUT set (scored once,
on test accuracy, with the choices frozen).

Round 4 of issue 18: rounds 1 to 3's nineteen workloads (all seen by now) are the development set; five NEW
workloads, written before any of them was run, are the held-out set: a BatchNorm CNN at batch 128 (SGD), an MLP with
BatchNorm and dropout on Fashion-MNIST (AdamW), ResNetSmall with average pooling at batch 64 (AdamW), a transformer
counting how often a query token occurs (AdamW) and an LSTM comparing two tokens' counts (SGD). Round 3's held-out
set: a depthwise-separable CNN (AdamW), a tabular MLP with BatchNorm (SGD), ResNetSmall on 20-px images (SGD), a
transformer counting distinct tokens (AdamW), a GRU telling which of two tokens comes first (SGD).

Everything is offline and small: scikit-learn's digits and ``make_classification``, Fashion-MNIST subsets read by
``superconv.data.load_data`` from /usr/share/datasets/fashion-mnist, and synthetic sequence tasks. Each workload
has a train / validation / test split; the data are fixed, the seed changes the initial weights and the batch
order (and the crops).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from _suggestion_models import (
    Conv1dClassifier,
    GRUClassifier,
    LSTMClassifier,
    TinyTransformer,
    mlp,
    separable_cnn,
    softmax_regression,
    tiny_cnn,
    vgg_cnn,
)
from superconv.data import load_data
from superconv.models import CNN, ResNetSmall

Split = tuple[Tensor, Tensor]

# --------------------------------------------------------------------------------------------- data


def _normalized(images: Tensor, mean: float, std: float, size: int | None = None, pad: int = 0) -> Tensor:
    x = (images.float() / 255.0 - mean) / std
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), value=-mean / std)  # black borders
    return x.contiguous()


def _split_of(loader: Any) -> Split:
    """The uint8 images and labels a superconv TensorLoader holds."""
    return loader.images, loader.labels


@functools.lru_cache(maxsize=4)
def fashion_mnist(subset: int, seed: int, size: int = 28, pad: int = 0, test: int = 5000) -> tuple[Split, Split, Split]:
    """``subset`` training images of Fashion-MNIST (1/6 carved off for validation) and ``test`` test images,
    resized to ``size`` and padded by ``pad`` pixels."""
    bundle = load_data("fashion-mnist", subset=subset, val_fraction=1 / 6, augment=False, seed=seed)
    train_x, train_y = _split_of(bundle.train)
    val_x, val_y = _split_of(bundle.val)
    test_x, test_y = _split_of(bundle.test)
    test_x, test_y = test_x[:test], test_y[:test]  # the same images for every LR
    mean, std = float(train_x.float().mean() / 255.0), float(train_x.float().std() / 255.0)
    return (
        (_normalized(train_x, mean, std, size, pad), train_y),
        (_normalized(val_x, mean, std, size, pad), val_y),
        (_normalized(test_x, mean, std, size, pad), test_y),
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


SIZES = (2000, 600, 4000)  # train, validation, test sequences


@functools.lru_cache(maxsize=2)
def mode_task(vocab: int, length: int, sizes: tuple[int, int, int] = SIZES) -> tuple[Split, ...]:
    """``sizes`` (train, validation, test) sequences of ``length`` uniform tokens out of ``vocab``; the label is the
    most frequent token (the lowest of tied ones). A counting task: recurrent and attention models both learn it,
    at a rate that depends on the LR."""
    rng = np.random.default_rng(1000 * vocab + length + (0 if sizes == SIZES else 1))
    out = []
    for n in sizes:
        x = rng.integers(0, vocab, (n, length))
        counts = np.stack([(x == v).sum(1) for v in range(vocab)], 1)
        out.append((torch.tensor(x), torch.tensor(counts.argmax(1))))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def bigram_count_task(vocab: int = 5, length: int = 40, classes: int = 5) -> tuple[Split, ...]:
    """Sequences of ``length`` uniform tokens; the label is how often the bigram (0, 1) occurs, capped at
    ``classes - 1``. Local patterns counted over the whole sequence: a 1-D CNN's task."""
    rng = np.random.default_rng(7)
    out = []
    for n in SIZES:
        x = rng.integers(0, vocab, (n, length))
        count = ((x[:, :-1] == 0) & (x[:, 1:] == 1)).sum(1)
        out.append((torch.tensor(x), torch.tensor(np.minimum(count, classes - 1))))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def recall_task(vocab: int = 10, length: int = 24) -> tuple[Split, ...]:
    """Sequences of ``length`` tokens out of ``vocab`` with one marker token (``vocab``) at a random position;
    the label is the token right after the marker. A memory task: a recurrent model's."""
    rng = np.random.default_rng(11)
    out = []
    for n in SIZES:
        x = rng.integers(0, vocab, (n, length))
        where = rng.integers(0, length - 1, n)
        label = x[np.arange(n), where + 1].copy()
        x[np.arange(n), where] = vocab
        out.append((torch.tensor(x), torch.tensor(label)))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def distinct_task(vocab: int = 12, length: int = 20, low: int = 8, classes: int = 5) -> tuple[Split, ...]:
    """Sequences of ``length`` uniform tokens out of ``vocab``; the label is how many distinct tokens occur,
    ``low`` or fewer as class 0 and capped at ``classes - 1`` above it. A set-counting task (attention's)."""
    rng = np.random.default_rng(13)
    out = []
    for n in SIZES:
        x = rng.integers(0, vocab, (n, length))
        distinct = np.array([len(set(row)) for row in x.tolist()])
        out.append((torch.tensor(x), torch.tensor(np.clip(distinct - low, 0, classes - 1))))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def order_task(vocab: int = 8, length: int = 16) -> tuple[Split, ...]:
    """Sequences of ``length`` tokens; the label says whether token 0 first occurs before token 1 (class 0),
    after it (class 1), or whether either is missing (class 2). An order task: a recurrent model's."""
    rng = np.random.default_rng(17)
    out = []
    for n in SIZES:
        x = rng.integers(0, vocab, (n, length))
        first = [[int(np.argmax(row == t)) if (row == t).any() else -1 for t in (0, 1)] for row in x]
        label = [2 if min(a, b) < 0 else int(b < a) for a, b in first]
        out.append((torch.tensor(x), torch.tensor(label)))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def query_count_task(vocab: int = 10, length: int = 12, classes: int = 4) -> tuple[Split, ...]:
    """A query token, then ``length`` uniform tokens out of ``vocab``; the label is how often the query occurs
    among them, capped at ``classes - 1``. A lookup-and-count task (attention's)."""
    rng = np.random.default_rng(19)
    out = []
    for n in SIZES:
        x = rng.integers(0, vocab, (n, length + 1))
        count = (x[:, 1:] == x[:, :1]).sum(1)
        out.append((torch.tensor(x), torch.tensor(np.minimum(count, classes - 1))))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def compare_task(vocab: int = 6, length: int = 20) -> tuple[Split, ...]:
    """Sequences of ``length`` uniform tokens out of ``vocab``; the label says whether token 0 occurs more often
    than token 1 (class 0), as often (class 1) or less often (class 2). A counting comparison (a recurrent
    model's)."""
    rng = np.random.default_rng(29)
    out = []
    for n in SIZES:
        x = rng.integers(0, vocab, (n, length))
        diff = (x == 0).sum(1) - (x == 1).sum(1)
        out.append((torch.tensor(x), torch.tensor(1 - np.sign(diff))))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def tabular() -> tuple[Split, Split, Split]:
    """scikit-learn's ``make_classification``: 24 features (12 informative), 6 classes, 3% flipped labels;
    6000 train / 2000 validation / 4000 test rows, standardized with the training rows' statistics."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=12000, n_features=24, n_informative=12, n_redundant=4, n_classes=6,
                               n_clusters_per_class=2, flip_y=0.03, class_sep=1.0, random_state=23)  # fmt: skip
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x[:6000].mean(0)) / x[:6000].std(0)
    y = torch.tensor(y)
    return (x[:6000], y[:6000]), (x[6000:8000], y[6000:8000]), (x[8000:], y[8000:])


class CropLoader:
    """Shuffled batches of random ``size`` x ``size`` crops of padded images (the usual pad-and-crop
    augmentation). Every random draw comes from ``generator``, so its state is the loader's position."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size, self.size = images, labels, batch_size, size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def __iter__(self) -> Iterator[Split]:
        order = torch.randperm(len(self.labels), generator=self.generator)
        room = self.images.shape[-1] - self.size + 1
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            offsets = torch.randint(0, room, (len(idx), 2), generator=self.generator).tolist()
            crops = [self.images[i, :, dy : dy + self.size, dx : dx + self.size] for i, (dy, dx) in zip(idx, offsets)]
            yield torch.stack(crops), self.labels[idx]


def centre(split: Split, size: int) -> Split:
    """The centre ``size`` x ``size`` crop of padded images (validation and test)."""
    x, y = split
    margin = (x.shape[-1] - size) // 2
    return x[..., margin : margin + size, margin : margin + size].contiguous(), y


@functools.lru_cache(maxsize=1)
def fashion_mnist_32_crops() -> tuple[Split, Split, Split]:
    """Fashion-MNIST padded to 32 px for evaluation; the training images keep 3 more pixels on each side for
    random crops (``Workload.crop``)."""
    train, val, test = fashion_mnist(3600, 2, 28, pad=5)
    return train, centre(val, 32), centre(test, 32)


# --------------------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One (data, model, optimizer, run length) combination.

    ``epochs * (train size // batch_size)`` optimizer updates make the one-cycle run that every LR is scored
    with; the grid is 7 LRs half a decade apart.
    """

    name: str
    role: str  # "dev", "held-out", or "larger" (only suggestion_noise_floor.py: does the noise shrink with the data?)
    family: str  # the model family, for the report
    data: Callable[[], tuple[Split, ...]]
    model: Callable[[], nn.Module]
    optimizer: str  # "sgd" (Nesterov momentum 0.9, weight decay 5e-4) or "adamw" (weight decay 1e-2)
    batch_size: int
    epochs: int
    grid: tuple[float, ...]
    label_smoothing: float = 0.0
    crop: int | None = None  # random crops of this size from the (padded) training images

    def make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)

    def criterion(self) -> nn.Module:
        """The training loss (also the range test's and the probes')."""
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def train_loader(self, train: Split, seed: int) -> DataLoader | CropLoader:
        """Shuffled full batches whose order depends only on ``seed`` (its generator is the loader's state)."""
        if self.crop is not None:
            return CropLoader(*train, self.batch_size, self.crop, seed)
        gen = torch.Generator().manual_seed(seed)
        dataset = TensorDataset(*train)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=gen, drop_last=True)

    def run_steps(self, train: Split) -> int:
        return self.epochs * (len(train[1]) // self.batch_size)


def grid(low_exponent: float) -> tuple[float, ...]:
    """7 LRs half a decade apart from ``10**low_exponent``."""
    return tuple(float(f"{10 ** (low_exponent + k / 2):.3g}") for k in range(7))


#: The grids' convention for every workload: SGD from 10**-2.5, AdamW from 10**-3.5 (round 1's choice, kept).
SGD_GRID, ADAMW_GRID = grid(-2.5), grid(-3.5)

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        # development: round 1's development set ...
        Workload("digits-mlp-sgd", "dev", "MLP", lambda: digits(True), lambda: mlp((64, 128, 64, 10)),
                 "sgd", 32, 12, SGD_GRID),
        Workload("fmnist-cnn-adamw", "dev", "CNN", lambda: fashion_mnist(3600, 0), lambda: tiny_cnn(False),
                 "adamw", 32, 5, ADAMW_GRID),
        Workload("fmnist-bncnn-sgd", "dev", "CNN", lambda: fashion_mnist(3600, 0), lambda: tiny_cnn(True),
                 "sgd", 32, 5, SGD_GRID),
        Workload("mode-gru-adamw", "dev", "RNN", lambda: mode_task(8, 24), lambda: GRUClassifier(8, 8),
                 "adamw", 32, 8, grid(-3.0)),
        # ... and round 1's held-out set, seen in round 1's report
        Workload("fmnist-cnn-gap-adamw", "dev", "CNN", lambda: fashion_mnist(3600, 1),
                 lambda: CNN(10, in_channels=1, width=8), "adamw", 32, 5, ADAMW_GRID),
        Workload("fmnist-mlp-sgd", "dev", "MLP", lambda: fashion_mnist(3600, 1), lambda: mlp((784, 256, 128, 10)),
                 "sgd", 32, 5, SGD_GRID),
        Workload("fmnist16-resnet-sgd", "dev", "ResNet", lambda: fashion_mnist(3600, 1, 16),
                 lambda: ResNetSmall(10, in_channels=1, width=8), "sgd", 32, 5, SGD_GRID),
        Workload("mode-transformer-adamw", "dev", "Transformer", lambda: mode_task(16, 32),
                 lambda: TinyTransformer(16, 16, 32), "adamw", 32, 8, ADAMW_GRID),
        # ... and round 2's held-out set, seen in round 2's report
        Workload("fmnist32-vgg-crops-sgd", "dev", "deeper CNN + crops", fashion_mnist_32_crops,
                 lambda: vgg_cnn(8), "sgd", 32, 5, SGD_GRID, crop=32),
        Workload("digits-mlp-dropout-adamw", "dev", "MLP + dropout", lambda: digits(True),
                 lambda: mlp((64, 256, 256, 10), dropout=0.2), "adamw", 32, 12, ADAMW_GRID),
        Workload("bigram-cnn1d-sgd", "dev", "1-D CNN", bigram_count_task, lambda: Conv1dClassifier(5, 5),
                 "sgd", 32, 8, SGD_GRID),
        Workload("recall-lstm-adamw", "dev", "LSTM", recall_task, lambda: LSTMClassifier(11, 10),
                 "adamw", 32, 8, ADAMW_GRID),
        Workload("fmnist16-resnet-ls-adamw", "dev", "ResNet + label smoothing",
                 lambda: fashion_mnist(3600, 2, 16), lambda: ResNetSmall(10, in_channels=1, width=8), "adamw",
                 32, 5, ADAMW_GRID, label_smoothing=0.1),
        Workload("fmnist-softmax-sgd", "dev", "softmax regression", lambda: fashion_mnist(3600, 2),
                 lambda: softmax_regression(784, 10), "sgd", 32, 5, SGD_GRID),
        # ... and round 3's held-out set, seen in round 3's report
        Workload("fmnist-separable-cnn-adamw", "dev", "depthwise-separable CNN",
                 lambda: fashion_mnist(3600, 3), separable_cnn, "adamw", 32, 4, ADAMW_GRID),
        Workload("tabular-mlp-bn-sgd", "dev", "MLP + BatchNorm (tabular)", tabular,
                 lambda: mlp((24, 128, 128, 6), batchnorm=True), "sgd", 64, 10, SGD_GRID),
        Workload("fmnist20-resnet-avg-sgd", "dev", "ResNet (avg pool, batch 64)",
                 lambda: fashion_mnist(4200, 3, 20), lambda: ResNetSmall(10, in_channels=1, width=8, pool="avg"),
                 "sgd", 64, 6, SGD_GRID),
        Workload("distinct-transformer-adamw", "dev", "Transformer", distinct_task,
                 lambda: TinyTransformer(12, 5, 20), "adamw", 32, 8, ADAMW_GRID),
        Workload("order-gru-sgd", "dev", "GRU", order_task, lambda: GRUClassifier(8, 3), "sgd", 32, 8,
                 SGD_GRID),
        # ... and round 4's held-out set, seen in round 4's report
        Workload("fmnist-bncnn16-bs128-sgd", "dev", "CNN + BatchNorm, batch 128", lambda: fashion_mnist(6000, 4),
                 lambda: tiny_cnn(True, width=16), "sgd", 128, 8, SGD_GRID),
        Workload("fmnist-mlp-bn-dropout-adamw", "dev", "MLP + BatchNorm + dropout",
                 lambda: fashion_mnist(4800, 4), lambda: mlp((784, 256, 256, 10), dropout=0.1, batchnorm=True),
                 "adamw", 64, 5, ADAMW_GRID),
        Workload("fmnist16-resnet-avg-adamw", "dev", "ResNet (avg pool, batch 64)",
                 lambda: fashion_mnist(4200, 5, 16), lambda: ResNetSmall(10, in_channels=1, width=12, pool="avg"),
                 "adamw", 64, 5, ADAMW_GRID),
        Workload("query-count-transformer-adamw", "dev", "Transformer", query_count_task,
                 lambda: TinyTransformer(10, 4, 13), "adamw", 32, 8, ADAMW_GRID),
        Workload("compare-lstm-sgd", "dev", "LSTM", compare_task, lambda: LSTMClassifier(6, 3), "sgd", 32, 8,
                 SGD_GRID),
        # larger versions of two families whose oracles missed the target, for suggestion_noise_floor.py only:
        # 5x the training data, 2-2.5x the test examples (never used to design or score a method)
        Workload("fmnist-resnet-large-adamw", "larger", "ResNet (avg pool), 16.7k images, 10k test",
                 lambda: fashion_mnist(20000, 6, test=10000),
                 lambda: ResNetSmall(10, in_channels=1, width=8, pool="avg"), "adamw", 64, 4, ADAMW_GRID),
        Workload("mode-transformer-large-adamw", "larger", "Transformer, 10k sequences, 10k test",
                 lambda: mode_task(16, 32, (10000, 2000, 10000)), lambda: TinyTransformer(16, 16, 32), "adamw",
                 32, 8, ADAMW_GRID),
    )
}  # fmt: skip
