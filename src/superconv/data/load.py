"""``load_data``: a dataset by name as train/val/test loaders on the device.

The built-in datasets (:mod:`superconv.data.datasets`) become :class:`~superconv.data.loaders.TensorLoader`
splits, resident on the GPU when they fit in a quarter of its free memory (sized before anything
is copied), else streamed from pinned host memory; ``imagefolder`` becomes
:class:`~superconv.data.loaders.StreamLoader` splits over the user's own images.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from superconv.data.datasets import (
    _FLIP,
    _STATS,
    DATASETS,
    DEFAULT_CACHE_DIR,
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    _load_cifar10,
    _load_digits,
    _load_fashion_mnist,
    read_idx,
)
from superconv.data.loaders import (
    Loader,
    StreamLoader,
    TensorLoader,
    _check_positive_int,
    _epoch_seed,
)
from superconv.device import resolve_device
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

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Device-resident data may take at most this fraction of the free GPU memory: the rest is for
# the model, its activations and the optimizer state.
RESIDENT_MAX_FRACTION = 0.25
# An ImageFolder without train/ val/ test/ sub-folders gives this much (seeded) to its test set.
IMAGEFOLDER_TEST_FRACTION = 0.2


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


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Expected a device such as 'cpu', 'cuda' or 'cuda:1', but got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"The device {str(device)!r} was asked for, but CUDA is not available on this machine; use --device cpu"
        )
    return resolve_device(dev)  # checks the GPU index, and names it (cuda -> cuda:0) as tensors do


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
