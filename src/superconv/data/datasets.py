"""Reading the built-in datasets into uint8 numpy arrays: Fashion-MNIST, CIFAR-10 and digits.

Fashion-MNIST is read from ``--data-dir`` when one is given (or downloaded into it where a network exists),
and never from anywhere else: an explicit path is used or refused. Without one, it is read from Debian's
``dataset-fashion-mnist`` package (:data:`DEFAULT_FASHION_MNIST_DIR`), else from the download cache, else
downloaded by torchvision where a network exists. Every miss ends in one message that says how to get it.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from superconv.data.seeding import epoch_seed
from superconv.errors import DataError

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FLIP_INVARIANT",
    "OFFLINE_ENV",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
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
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "digits": ((0.3053,), (0.3759,)),
}
# Whether a horizontal flip keeps the label: yes for clothes and natural images, not for handwritten digits.
FLIP_INVARIANT = {"fashion-mnist": True, "cifar10": True, "digits": False}
# Digits has no official test split; this much of it (seeded) becomes the test set.
DIGITS_TEST_FRACTION = 0.2


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


def _download(dataset_cls: Any, root: Path) -> tuple[Any, Any] | str:
    """A torchvision dataset's train and test splits, downloaded into ``root``; or why not, as a string."""
    if _downloads_disabled():
        return f"downloads are disabled ({OFFLINE_ENV} is set)"
    try:
        return dataset_cls(str(root), train=True, download=True), dataset_cls(str(root), train=False, download=True)
    except Exception as exc:  # no network, proxy, disk full...: all end in the same advice
        return f"the torchvision download into {root} failed ({type(exc).__name__}: {exc})"


_FASHION_MNIST_FILE_LIST = (
    "train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and "
    "t10k-labels-idx1-ubyte(.gz)"
)


def load_fashion_mnist(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST's train images, train labels, test images and test labels as uint8/int arrays.

    Raises:
        DataError: not found where it was looked for (an explicit ``data_dir`` is the only place looked in).
    """
    from torchvision import datasets

    # Read the module attributes at call time so that they can be re-pointed (tests, packagers).
    candidates = [data_dir] if data_dir is not None else [DEFAULT_FASHION_MNIST_DIR, _download_root(None)]
    for directory in candidates:
        files = _find_idx_files(directory)
        if files is not None:
            arrays = {key: read_idx(path) for key, path in files.items()}
            return _check_mnist_arrays(arrays, files)
    got = _download(datasets.FashionMNIST, _download_root(data_dir))
    if not isinstance(got, str):
        train, test = got
        return (train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy())
    if data_dir is not None:
        raise DataError(
            f"Fashion-MNIST was not found in --data-dir {data_dir}: looked for {_FASHION_MNIST_FILE_LIST} in "
            f"{data_dir} and {data_dir / 'FashionMNIST' / 'raw'}, and {got}. A --data-dir that is given is used "
            "as given, never replaced by another copy: put the four idx files there (Debian's "
            f"dataset-fashion-mnist package has them in {DEFAULT_FASHION_MNIST_DIR}), run once with a network "
            "to download them into it, or leave out --data-dir to use an installed or cached copy"
        )
    where = ", ".join(str(p) for p in candidates)
    raise DataError(
        f"Fashion-MNIST was not found: looked for {_FASHION_MNIST_FILE_LIST} in {where} (and their "
        f"FashionMNIST/raw/), and {got}. To get it: `sudo apt-get install dataset-fashion-mnist` "
        f"(Debian/Ubuntu; installs to {DEFAULT_FASHION_MNIST_DIR}), or pass --data-dir DIR with those four "
        "idx files, or run once with a network so that torchvision can download it"
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


def load_cifar10(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from torchvision import datasets

    root = _download_root(data_dir)
    if root.name == "cifar-10-batches-py":  # accept the extracted folder itself
        root = root.parent
    try:
        train = datasets.CIFAR10(str(root), train=True, download=False)
        test = datasets.CIFAR10(str(root), train=False, download=False)
    except RuntimeError as local_exc:
        got = _download(datasets.CIFAR10, root)
        if isinstance(got, str):
            raise DataError(
                f"CIFAR-10 was not found under {root} ({local_exc}), and {got}. To get it: pass "
                "--data-dir DIR where DIR contains cifar-10-batches-py/ (extracted from "
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or run once with a network"
            ) from local_exc
        train, test = got
    return (
        np.asarray(train.data),
        np.asarray(train.targets),
        np.asarray(test.data),
        np.asarray(test.targets),
        list(train.classes),
    )


def load_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255 uint8, the same storage as the other datasets.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(epoch_seed(seed, 0, 7)).permutation(len(labels))
    n_test = round(len(labels) * DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
