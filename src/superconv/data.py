"""Datasets and fast loaders.

Two kinds of loader share one small interface (``__iter__`` yielding ``(inputs, labels)`` on the
target device, ``__len__`` = batches per epoch, ``set_epoch``, ``dataset_size``, ``batch_size``):

* :class:`TensorLoader` - the fast path for datasets that fit in memory (Fashion-MNIST, CIFAR-10,
  digits). The whole split is one uint8 NCHW tensor, resident on the GPU when it fits (as in
  airbench), and every batch is gathered, augmented (random crop with reflect padding, horizontal
  flip) and normalized with batched tensor ops on the device: no per-image Python, no worker
  processes, no float copy of the data set.
* :class:`StreamLoader` - a tuned ``torch.utils.data.DataLoader`` over a torchvision
  ``ImageFolder`` for the user's own images.

All shuffling and augmentation randomness of a :class:`TensorLoader` comes from CPU generators
seeded from ``(seed, epoch)``, so an epoch's batches are a pure function of those two numbers on
any device: a resumed run sees exactly the batches the interrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import math
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from superconv.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_FASHION_MNIST_DIR",
    "DataBundle",
    "Loader",
    "StreamLoader",
    "TensorLoader",
    "load_data",
    "read_idx",
]

DATASETS = ("fashion-mnist", "cifar10", "digits", "imagefolder")
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Where torchvision downloads go when no --data-dir is given.
DEFAULT_CACHE_DIR = Path("~/.cache/superconv")
# Set to 1 to never try a download (useful on air-gapped machines, where a download attempt
# only waits for a timeout).
OFFLINE_ENV = "SUPERCONV_OFFLINE"

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Per-channel mean/std of each training set, in [0, 1] units.
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "digits": ((0.3053,), (0.3759,)),
}
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Horizontal flips keep the label of clothes and natural images but not of handwritten digits.
_FLIP = {"fashion-mnist": True, "cifar10": True, "digits": False}
# Device-resident data may take at most this fraction of the free GPU memory: the rest is for
# the model, its activations and the optimizer state.
RESIDENT_MAX_FRACTION = 0.25
# Digits has no official test split; this much of it (seeded) becomes the test set.
DIGITS_TEST_FRACTION = 0.2
# An ImageFolder without train/ val/ test/ sub-folders gives this much (seeded) to its test set.
IMAGEFOLDER_TEST_FRACTION = 0.2


class Loader(Protocol):
    """What the training loop needs from a loader."""

    batch_size: int
    dataset_size: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class DataBundle:
    """The splits of one dataset plus what a model needs to know about its inputs."""

    train: Loader  # iterable of (inputs, labels); len() = batches per epoch
    val: Loader | None
    test: Loader | None
    num_classes: int
    in_channels: int
    image_size: int  # square side after transforms
    classes: list[str]
    name: str
    train_size: int  # number of training examples
    resident: bool  # True when the data lives on the target device (fast path)


# --------------------------------------------------------------------------------------------
# Seeding


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed that depends on (seed, epoch, stream) and nothing else.

    SeedSequence mixes the numbers well, so neighbouring epochs and seeds give unrelated streams
    (``seed + epoch`` would make seed 1/epoch 0 replay seed 0/epoch 1).
    """
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, stream]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch, stream))


# --------------------------------------------------------------------------------------------
# The fast path: uint8 tensors, on-device augmentation


@contextlib.contextmanager
def _single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed CPU tensor ops on one intra-op thread.

    A batch is ~10^5 elements: too small to gain from threads, yet big enough that torch splits
    each op across them. On a busy machine (more runnable threads than cores) every split op
    then waits a scheduler tick for its second thread - measured here on 2 shared cores: 8 ms
    per op, 1-8 s per Fashion-MNIST epoch instead of 0.1 s. Switching is cheap (~0.2 us).
    """
    previous = torch.get_num_threads()
    if not enabled or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _reflect(index: Tensor, size: int) -> Tensor:
    """Map out-of-range pixel indices back into ``[0, size)`` by mirroring at the borders.

    Equivalent to reflect padding followed by a crop, but without materialising the padded batch.
    Valid for offsets up to ``size - 1``.
    """
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


class TensorLoader:
    """Batches from in-memory uint8 NCHW images; augmentation and normalization on the device.

    Args:
        images: uint8 tensor ``(N, C, H, W)``; on ``device`` (resident) or on the host.
        labels: int64 tensor ``(N,)`` on the same device as ``images``.
        batch_size: examples per batch.
        mean, std: per-channel statistics in [0, 1] units used to normalize the inputs.
        device: where the batches are delivered.
        shuffle: draw batches from a seeded permutation (training) or in order (evaluation).
        drop_last: drop the last partial batch so that every step has a full batch.
        augment: random crop with reflect padding ``pad`` (and a flip when ``flip``) per batch.
        pad: the crop padding in pixels (2 for 28 px, 4 for 32 px images is standard).
        flip: random horizontal flips when augmenting.
        seed: the shuffle and the augmentation are functions of ``(seed, epoch)`` only.
        output_size: resize batches to this square side on the device (bilinear); None keeps
            the stored size. Storing at the native size keeps memory small.

    Iterating without calling :meth:`set_epoch` uses epochs 0, 1, 2, ... in turn; calling
    ``set_epoch(e)`` makes the next iteration epoch ``e`` (what a resumed run does).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        augment: bool = False,
        pad: int = 0,
        flip: bool = False,
        seed: int = 0,
        output_size: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"Expected images as a uint8 tensor of shape (N, C, H, W), but got {images.dtype} "
                f"with shape {tuple(images.shape)}; convert with (x * 255).round().to(torch.uint8)"
            )
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"Expected one label per image ({images.shape[0]}), but got labels of shape {tuple(labels.shape)}"
            )
        _check_positive_int("batch_size", batch_size, DataError)
        n = int(images.shape[0])
        if drop_last and batch_size > n:
            raise DataError(
                f"The batch size {batch_size} is larger than the {n} training examples, so an epoch "
                f"would have no full batch; use --batch-size {_pow2_at_most(n)} or smaller (or more data)"
            )
        if n == 0:
            raise DataError("Expected at least one example in the split, but it is empty")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"Expected {channels} per-channel mean/std values, but got {len(mean)} and {len(std)}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.dataset_size = n
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.pad = pad
        self.flip = flip
        self.seed = seed
        self.output_size = output_size
        self.epoch = 0
        self._start_batch = 0
        self.resident = images.device == self.device
        # Normalization folded into one multiply-add in uint8 units: x * scale + shift.
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=self.device).view(1, -1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=self.device).view(1, -1, 1, 1)
        # Pinned staging buffers for host-resident data on CUDA (created on first use).
        self._staging: list[Tensor] = []
        self._staging_events: list[Any] = []
        self._slot = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.dataset_size // self.batch_size
        return math.ceil(self.dataset_size / self.batch_size)

    @property
    def image_size(self) -> int:
        """The square side of the delivered batches."""
        return self.output_size or int(self.images.shape[-1])

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``.

        ``start_batch`` lets a run resumed mid-epoch skip the batches it has already trained on;
        the skipped batches are not computed.
        """
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ConfigError(
                f"Expected epoch >= 0 and 0 <= start_batch <= {len(self)}, but got epoch={epoch}, "
                f"start_batch={start_batch}"
            )
        self.epoch = epoch
        self._start_batch = start_batch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self._start_batch
        # The next plain iteration is the next epoch, so a loop without set_epoch still reshuffles.
        self.epoch, self._start_batch = epoch + 1, 0
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs = self.dataset_size, self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=_generator(self.seed, epoch, 0))
        else:
            order = torch.arange(n)
        num_batches = len(self)
        # One generator for the augmentation stream; per-batch draws happen for every batch
        # (including skipped ones) so that resuming at start_batch reproduces the same crops.
        aug_gen = _generator(self.seed, epoch, 1)
        order_dev = order.to(self.images.device)
        host_work = self.images.device.type == "cpu"
        for b in range(num_batches):
            aug_params = self._draw_augmentation(aug_gen, min(bs, n - b * bs)) if self.augment else None
            if b < start:
                continue
            with _single_threaded(host_work):
                idx = order_dev[b * bs : min((b + 1) * bs, n)]
                x = self._gather(idx)
                y = self.labels.index_select(0, idx)
                if not self.resident:
                    y = y.to(self.device, non_blocking=True)
                if aug_params is not None:
                    x = self._augment(x, *aug_params)
                x = self._normalize(x)
            yield x, y  # outside the context: the model's compute gets all the threads again

    def _gather(self, idx: Tensor) -> Tensor:
        """Select a batch of uint8 images and bring it to the device."""
        if self.resident:
            return self.images.index_select(0, idx)
        if self.device.type != "cuda":
            return self.images.index_select(0, idx).to(self.device)
        # Host-resident data streamed to the GPU: gather into a pinned staging buffer and copy
        # asynchronously. Two buffers alternate; an event per buffer guarantees the previous
        # copy out of a buffer has finished before it is overwritten.
        if not self._staging:
            shape = (self.batch_size, *self.images.shape[1:])
            self._staging = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._staging_events = [None, None]
        slot = self._slot
        self._slot = 1 - slot
        event = self._staging_events[slot]
        if event is not None:
            event.synchronize()
        buffer = self._staging[slot][: idx.numel()]
        torch.index_select(self.images, 0, idx, out=buffer)
        x = buffer.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._staging_events[slot] = event
        return x

    def _draw_augmentation(self, gen: torch.Generator, count: int) -> tuple[Tensor, Tensor, Tensor]:
        span = 2 * self.pad + 1
        dy = torch.randint(0, span, (count,), generator=gen) - self.pad
        dx = torch.randint(0, span, (count,), generator=gen) - self.pad
        flips = torch.rand(count, generator=gen) < 0.5 if self.flip else torch.zeros(count, dtype=torch.bool)
        return dy, dx, flips

    def _augment(self, x: Tensor, dy: Tensor, dx: Tensor, flips: Tensor) -> Tensor:
        """Random crop (reflect padding) and horizontal flip of a whole batch in one gather."""
        b, c, h, w = x.shape
        dev = x.device
        dy, dx, flips = dy.to(dev, non_blocking=True), dx.to(dev, non_blocking=True), flips.to(dev)
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = _reflect(ar_h.unsqueeze(0) + dy.unsqueeze(1), h)  # (B, H)
        # A flipped image reads its columns right to left; fold the flip into the column index.
        cols_src = torch.where(flips.unsqueeze(1), (w - 1 - ar_w).unsqueeze(0), ar_w.unsqueeze(0))
        cols = _reflect(cols_src + dx.unsqueeze(1), w)  # (B, W)
        flat = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
        return torch.gather(x.reshape(b, c, h * w), 2, flat).view(b, c, h, w)

    def _normalize(self, x: Tensor) -> Tensor:
        out = torch.addcmul(self._shift, x.float(), self._scale)
        if self.output_size is not None and self.output_size != out.shape[-1]:
            shrinking = self.output_size < out.shape[-1]
            out = F.interpolate(out, size=(self.output_size, self.output_size), mode="bilinear", antialias=shrinking)
        return out


# --------------------------------------------------------------------------------------------
# The streaming path: torchvision ImageFolder + DataLoader


class StreamLoader:
    """A tuned ``DataLoader`` behind the same interface as :class:`TensorLoader`.

    The batch order of epoch ``e`` is a function of ``(seed, e)``; the random transforms run in
    worker processes and are reproducible only without persistent workers.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        _check_positive_int("batch_size", batch_size, DataError)
        n = len(dataset)
        if drop_last and batch_size > n:
            raise DataError(
                f"The batch size {batch_size} is larger than the {n} training images, so an epoch "
                f"would have no full batch; use --batch-size {_pow2_at_most(n)} or smaller (or more images)"
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dataset_size = n
        self.seed = seed
        self.epoch = 0
        self._generator = torch.Generator()
        pin = self.device.type == "cuda"
        self._loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin,
            persistent_workers=num_workers > 0,
            generator=self._generator,
        )

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffle depends on (seed, epoch) only)."""
        if epoch < 0:
            raise ConfigError(f"Expected epoch >= 0, but got {epoch}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Seed now, not lazily at the first batch, so that set_epoch -> iter behaves like the
        # TensorLoader (the next plain iteration is the next epoch).
        self._generator.manual_seed(_epoch_seed(self.seed, self.epoch, 0))
        self.epoch += 1
        return self._batches(iter(self._loader))

    def _batches(self, batches: Iterator[Any]) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# --------------------------------------------------------------------------------------------
# Reading the data


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST/Fashion-MNIST format), gzip-compressed or not.

    The format: two zero bytes, a type code (0x08 = uint8), the number of dimensions, one
    big-endian int32 per dimension, then the data in C order.

    Raises:
        DataError: the file is missing, truncated, or not an idx file of uint8.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # the gzip magic: decide by content, not by the file name
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read the idx file {path}: {exc}. Check the file, or download it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataError(
            f"Expected {path} to be an idx file of uint8 (header 00 00 08 <ndim>), but it starts with "
            f"{raw[:4].hex(' ') or 'nothing'}; use the original Fashion-MNIST files"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"The idx file {path} is truncated inside its header; download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"The idx file {path} declares shape {dims} ({expected} bytes of data) but holds "
            f"{len(raw) - header} bytes; it is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST idx files in ``directory`` or its ``FashionMNIST/raw``, if all exist."""
    for folder in (directory, directory / "FashionMNIST" / "raw"):
        found: dict[str, Path] = {}
        for key, stem in FASHION_MNIST_FILES.items():
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FASHION_MNIST_FILES):
            return found
    return None


def _downloads_disabled() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _download_root(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else DEFAULT_CACHE_DIR.expanduser()


def _load_fashion_mnist(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    searched: list[Path] = []
    candidates = [data_dir] if data_dir is not None else []
    # Read the module attribute at call time so that it can be re-pointed (tests, packagers).
    candidates += [DEFAULT_FASHION_MNIST_DIR, _download_root(None)]
    for directory in candidates:
        searched.append(directory)
        files = _find_idx_files(directory)
        if files is not None:
            arrays = {key: read_idx(path) for key, path in files.items()}
            return _check_mnist_arrays(arrays, files)

    root = _download_root(data_dir)
    if _downloads_disabled():
        reason = f"downloads are disabled ({OFFLINE_ENV} is set)"
    else:
        try:
            from torchvision import datasets

            train = datasets.FashionMNIST(str(root), train=True, download=True)
            test = datasets.FashionMNIST(str(root), train=False, download=True)
            return (train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy())
        except Exception as exc:  # no network, proxy, disk full...: all end in the same advice
            reason = f"the torchvision download into {root} failed ({type(exc).__name__}: {exc})"
    where = ", ".join(str(p) for p in searched)
    raise DataError(
        "Fashion-MNIST was not found: looked for train-images-idx3-ubyte(.gz), "
        "train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) "
        f"in {where} (and their FashionMNIST/raw/), and {reason}. To get it: "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs to "
        f"{DEFAULT_FASHION_MNIST_DIR}), or pass --data-dir DIR with those four idx files, "
        "or run once with a network so that torchvision can download it"
    )


def _check_mnist_arrays(
    arrays: dict[str, np.ndarray], files: dict[str, Path]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"Expected {files[f'{split}_images']} to hold (N, H, W) images and "
                f"{files[f'{split}_labels']} N labels, but got shapes {images.shape} and {labels.shape}; "
                "the files do not belong together"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f"Expected labels 0-9 in {files[f'{split}_labels']}, but found {int(labels.max())}; "
                "this is not a Fashion-MNIST label file"
            )
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


def _load_cifar10(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from torchvision import datasets

    root = _download_root(data_dir)
    if root.name == "cifar-10-batches-py":  # accept the extracted folder itself
        root = root.parent
    try:
        train = datasets.CIFAR10(str(root), train=True, download=False)
        test = datasets.CIFAR10(str(root), train=False, download=False)
    except RuntimeError as local_exc:
        if _downloads_disabled():
            reason = f"downloads are disabled ({OFFLINE_ENV} is set)"
        else:
            try:
                train = datasets.CIFAR10(str(root), train=True, download=True)
                test = datasets.CIFAR10(str(root), train=False, download=True)
            except Exception as exc:
                reason = f"the torchvision download into {root} failed ({type(exc).__name__}: {exc})"
            else:
                reason = ""
        if reason:
            raise DataError(
                f"CIFAR-10 was not found under {root} ({local_exc}), and {reason}. To get it: pass "
                "--data-dir DIR where DIR contains cifar-10-batches-py/ (extracted from "
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or run once with a network"
            ) from local_exc
    return (
        np.asarray(train.data),
        np.asarray(train.targets),
        np.asarray(test.data),
        np.asarray(test.targets),
        list(train.classes),
    )


def _load_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255 uint8, the same storage as the other datasets.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(_epoch_seed(seed, 0, 7)).permutation(len(labels))
    n_test = round(len(labels) * DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


# --------------------------------------------------------------------------------------------
# Validation helpers


def _check_positive_int(name: str, value: Any, error: type[ConfigError] = ConfigError) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise error(f"Expected {name} to be a positive integer, but got {value!r}")


def _pow2_at_most(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Expected a device such as 'cpu', 'cuda' or 'cuda:1', but got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"The device {str(device)!r} was asked for, but CUDA is not available on this machine; use --device cpu"
        )
    return dev


def _split_indices(n: int, fraction: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``range(n)`` into (kept, carved), ``carved`` holding ``round(n * fraction)``."""
    order = np.random.default_rng(_epoch_seed(seed, 0, stream)).permutation(n)
    n_carved = round(n * fraction)
    return np.sort(order[n_carved:]), np.sort(order[:n_carved])


def _fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of data may live on ``device`` (sized against its free memory)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_MAX_FRACTION * free


def _to_nchw(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) numpy -> contiguous uint8 (N, C, H, W) tensor."""
    if not images.flags.writeable:  # e.g. a view of the idx file's bytes; torch wants to own writable memory
        images = images.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.dim() == 3:
        return tensor.unsqueeze(1).contiguous()
    return tensor.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# The entry point


def load_data(
    name: str,
    *,
    data_dir: str | Path | None = None,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    val_fraction: float = 0.1,
    device: str | torch.device = "cpu",
    augment: bool = True,
    seed: int = 0,
    subset: int | None = None,
    num_workers: int | None = None,
    image_size: int | None = None,
) -> DataBundle:
    """Load a dataset as train/val/test loaders that deliver batches on ``device``.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the data is (or is downloaded to); see the README for each dataset.
        batch_size: training batch size; the last partial training batch is dropped.
        eval_batch_size: batch size of the val/test loaders (default: 2 * batch_size).
        val_fraction: the fraction of the training set carved off (seeded) for validation;
            0 gives no validation loader. The test set is always the official one (digits: a
            seeded 20% split).
        device: where batches are delivered. On CUDA the in-memory datasets are kept on the GPU
            when they fit (``resident=True``), else streamed from pinned host memory.
        augment: random crops (and flips, except for digits) on the training set.
        seed: seeds the splits, the subset, the shuffles and the augmentation.
        subset: use only this many examples of the training set (seeded, drawn before the
            validation carve-out) - for quick tests and benchmarks.
        num_workers: DataLoader workers for ``imagefolder`` (ignored by the in-memory datasets,
            which need none).
        image_size: the square side of the delivered images; the in-memory datasets are
            resized on the device per batch, ``imagefolder`` defaults to 224.

    Raises:
        DataError: an unknown dataset, data that cannot be found or read, or sizes that do not
            work together (e.g. a batch larger than the training set).
        ConfigError: an invalid argument.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    _check_positive_int("batch_size", batch_size)
    if eval_batch_size is not None:
        _check_positive_int("eval_batch_size", eval_batch_size)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(
            f"Expected val_fraction in [0, 1) (e.g. 0.1, or 0 for no validation set), but got {val_fraction!r}"
        )
    if subset is not None:
        _check_positive_int("subset", subset)
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise ConfigError(f"Expected num_workers to be a non-negative integer, but got {num_workers!r}")
    if image_size is not None:
        _check_positive_int("image_size", image_size)
    dev = _resolve_device(device)
    root = Path(data_dir).expanduser() if data_dir is not None else None
    eval_bs = eval_batch_size or 2 * batch_size

    if key == "imagefolder":
        return _load_imagefolder(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_bs,
            val_fraction=val_fraction,
            device=dev,
            augment=augment,
            seed=seed,
            subset=subset,
            num_workers=num_workers,
            image_size=image_size or 224,
        )

    if key == "fashion-mnist":
        train_x, train_y, test_x, test_y = _load_fashion_mnist(root)
        classes = list(FASHION_MNIST_CLASSES)
    elif key == "cifar10":
        train_x, train_y, test_x, test_y, classes = _load_cifar10(root)
    else:
        train_x, train_y, test_x, test_y = _load_digits(seed)
        classes = [str(i) for i in range(10)]

    n_total = len(train_y)
    pool = np.arange(n_total)
    if subset is not None:
        if subset > n_total:
            raise DataError(
                f"subset={subset} asks for more examples than the {n_total} in the {key} training set; "
                f"use --subset {n_total} or fewer"
            )
        pool = np.sort(np.random.default_rng(_epoch_seed(seed, 0, 3)).permutation(n_total)[:subset])
    kept, carved = _split_indices(len(pool), val_fraction, seed, stream=4)
    train_idx, val_idx = pool[kept], pool[carved]
    if val_fraction > 0 and len(val_idx) == 0:
        raise DataError(
            f"val_fraction={val_fraction} of {len(pool)} training examples leaves no validation example; "
            "use a larger --val-fraction or --subset, or 0 for no validation set"
        )
    if len(train_idx) == 0:
        raise DataError(f"val_fraction={val_fraction} of {len(pool)} examples leaves no training example; lower it")

    # Gather the splits with numpy before making tensors, so only the kept rows are copied.
    splits = {
        "train": (_to_nchw(train_x[train_idx]), torch.from_numpy(train_y[train_idx].astype(np.int64))),
        "test": (_to_nchw(test_x), torch.from_numpy(np.asarray(test_y).astype(np.int64))),
    }
    if len(val_idx):
        splits["val"] = (_to_nchw(train_x[val_idx]), torch.from_numpy(train_y[val_idx].astype(np.int64)))
    del train_x, test_x  # the numpy originals (and the decompressed bytes) can go now

    nbytes = sum(x.numel() * x.element_size() + y.numel() * 8 for x, y in splits.values())
    resident = _fits_on_device(nbytes, dev)
    storage = dev if resident else torch.device("cpu")
    splits = {k: (x.to(storage), y.to(storage)) for k, (x, y) in splits.items()}

    mean, std = _STATS[key]
    native = int(splits["train"][0].shape[-1])
    size = image_size or native
    output_size = None if size == native else size
    pad = 4 if native >= 32 else 2 if native >= 16 else 1

    def make(split: str, train: bool) -> TensorLoader:
        x, y = splits[split]
        return TensorLoader(
            x,
            y,
            batch_size=batch_size if train else eval_bs,
            mean=mean,
            std=std,
            device=dev,
            shuffle=train,
            drop_last=train,
            augment=augment and train,
            pad=pad,
            flip=_FLIP[key],
            seed=seed,
            output_size=output_size,
        )

    return DataBundle(
        train=make("train", True),
        val=make("val", False) if "val" in splits else None,
        test=make("test", False),
        num_classes=len(classes),
        in_channels=int(splits["train"][0].shape[1]),
        image_size=size,
        classes=classes,
        name=key,
        train_size=len(train_idx),
        resident=resident and dev.type == "cuda",
    )


# --------------------------------------------------------------------------------------------
# imagefolder


_IMAGEFOLDER_LAYOUT = (
    "DIR/train/<class>/<image> (optionally DIR/val/<class>/... and DIR/test/<class>/...), or "
    "DIR/<class>/<image> with at least 2 class folders"
)


def _read_rgb(path: str) -> Any:
    """ImageFolder's loader, with a message that names the file when an image cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as exc:  # PIL raises many types; all mean "this file is not a usable image"
        raise DataError(f"Cannot read the image {path} ({exc}); delete or replace the file") from exc


def _image_folder(path: Path, transform: Any) -> Any:
    from torchvision import datasets

    if not path.is_dir():
        raise DataError(
            f"Expected an image folder at {path}, but it is missing; expected layout: {_IMAGEFOLDER_LAYOUT}"
        )
    try:
        folder = datasets.ImageFolder(str(path), transform=transform, loader=_read_rgb)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise DataError(
            f"Cannot use {path} as an image folder ({exc}); expected layout: {_IMAGEFOLDER_LAYOUT}"
        ) from exc
    if len(folder.classes) < 2:
        raise DataError(
            f"Expected at least 2 class folders in {path}, but found {len(folder.classes)} "
            f"({', '.join(folder.classes) or 'none'}); expected layout: {_IMAGEFOLDER_LAYOUT}"
        )
    return folder


def _load_imagefolder(
    root: Path | None,
    *,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    device: torch.device,
    augment: bool,
    seed: int,
    subset: int | None,
    num_workers: int | None,
    image_size: int,
) -> DataBundle:
    from torch.utils.data import Subset
    from torchvision import transforms

    if root is None:
        raise DataError(f"The imagefolder dataset needs --data-dir DIR with the layout {_IMAGEFOLDER_LAYOUT}")
    if not root.is_dir():
        raise DataError(
            f"The image folder {root} does not exist or is not a directory; expected layout: {_IMAGEFOLDER_LAYOUT}"
        )
    normalize = transforms.Normalize(*_IMAGENET_STATS)
    if augment:
        train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size, scale=(0.8, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    else:
        train_tf = None  # set below to the eval transform
    eval_tf = transforms.Compose(
        [
            transforms.Resize(int(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize,
        ]
    )
    train_tf = train_tf or eval_tf

    has_splits = (root / "train").is_dir()
    base = _image_folder(root / "train" if has_splits else root, train_tf)
    classes: list[str] = list(base.classes)
    # The same file list under the evaluation transform, for splits carved from it.
    base_eval = copy.copy(base)
    base_eval.transform = eval_tf

    def folder_split(split: str) -> Any:
        folder = _image_folder(root / split, eval_tf)
        if folder.classes != classes:
            raise DataError(
                f"The classes of {root / split} ({', '.join(folder.classes)}) differ from those of "
                f"{root / 'train'} ({', '.join(classes)}); every split needs the same class folders"
            )
        return folder

    n = len(base)
    pool = np.arange(n)
    test_ds: Any = None
    if has_splits:
        if (root / "test").is_dir():
            test_ds = folder_split("test")
    else:
        pool, carved_test = _split_indices(n, IMAGEFOLDER_TEST_FRACTION, seed, stream=5)
        if len(carved_test):
            test_ds = Subset(base_eval, carved_test.tolist())
    if subset is not None:
        if subset > len(pool):
            raise DataError(
                f"subset={subset} asks for more images than the {len(pool)} training images in {root}; "
                f"use --subset {len(pool)} or fewer"
            )
        pool = np.sort(np.random.default_rng(_epoch_seed(seed, 0, 3)).permutation(pool)[:subset])
    val_ds: Any = None
    if has_splits and (root / "val").is_dir():
        val_ds = folder_split("val")
        train_idx = pool
    else:
        kept, carved = _split_indices(len(pool), val_fraction, seed, stream=4)
        train_idx = pool[kept]
        if len(carved):
            val_ds = Subset(base_eval, pool[carved].tolist())
    if len(train_idx) == 0:
        raise DataError(f"No training images are left in {root} after the validation/test splits; add images")
    train_ds = Subset(base, train_idx.tolist()) if len(train_idx) != n else base

    if num_workers is None:
        cpus = os.cpu_count() or 1
        # On a small CPU the workers compete with the training compute itself.
        num_workers = min(4, cpus) if device.type == "cuda" else (0 if cpus <= 2 else 2)

    def make(dataset: Any, train: bool) -> StreamLoader:
        return StreamLoader(
            dataset,
            batch_size=batch_size if train else eval_batch_size,
            device=device,
            shuffle=train,
            drop_last=train,
            seed=seed,
            num_workers=num_workers,
        )

    return DataBundle(
        train=make(train_ds, True),
        val=make(val_ds, False) if val_ds is not None and len(val_ds) else None,
        test=make(test_ds, False) if test_ds is not None and len(test_ds) else None,
        num_classes=len(classes),
        in_channels=3,
        image_size=image_size,
        classes=classes,
        name="imagefolder",
        train_size=len(train_ds),
        resident=False,
    )
