"""``load_data``: a dataset by name as train/val/test loaders on the device.

The built-in datasets (:mod:`superconv.data.datasets`) become :class:`~superconv.data.loaders.TensorLoader`
splits, resident on the GPU when they fit in a quarter of its free memory (sized before anything is copied),
else streamed from pinned host memory. ``imagefolder`` (:mod:`superconv.data.imagefolder`) is sized to the
images, decoded once when it fits the cache budget, and streamed from the files otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from superconv.checks import fraction, non_negative_int, positive_int
from superconv.data.bundle import DataBundle
from superconv.data.datasets import (
    DATASET_STATS,
    DATASETS,
    FASHION_MNIST_CLASSES,
    FLIP_INVARIANT,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
)
from superconv.data.decisions import fits_on_device, human_bytes
from superconv.data.imagefolder import FolderOptions, load_imagefolder
from superconv.data.loaders import TensorLoader
from superconv.data.seeding import seeded_sample, split_indices
from superconv.device import resolve_device
from superconv.errors import ConfigError, DataError

__all__ = ["load_data"]


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


def _to_nchw(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) numpy -> contiguous uint8 (N, C, H, W) tensor."""
    if not images.flags.writeable:  # e.g. a view of the idx file's bytes; torch wants to own writable memory
        images = images.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.dim() == 3:
        return tensor.unsqueeze(1).contiguous()
    return tensor.permute(0, 3, 1, 2).contiguous()


def _dataset_key(name: str) -> str:
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return key


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
    pretrained_size: int | None = None,
    cache_budget: int | None = None,
    flip: bool | None = None,
    skip_bad_images: bool = False,
) -> DataBundle:
    """Load a dataset as train/val/test loaders that deliver batches on ``device``.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the data is (or is downloaded to); see the README for each dataset. A directory that is
            given is used or refused, never replaced by another copy.
        batch_size: training batch size; the last partial training batch is dropped.
        eval_batch_size: batch size of the val/test loaders (default: 2 * batch_size).
        val_fraction: the fraction of the training set carved off (seeded) for validation;
            0 gives no validation loader. The test set is always the official one (digits: a
            seeded 20% split; an image folder: its test/ folder, or a seeded 20% without split folders).
        device: where batches are delivered. On CUDA the in-memory data is kept on the GPU
            when it fits (``resident=True``), else streamed from pinned host memory.
        augment: random crops (and flips where ``flip``) on the training set.
        seed: seeds the splits, the subset, the shuffles and the augmentation.
        subset: use only this many examples of the training set (seeded, drawn before the
            validation carve-out) - for quick tests and benchmarks.
        num_workers: DataLoader workers when an image folder is streamed from its files (default: sized to
            the cores); ignored by data held in memory, which needs none.
        image_size: the square side of the delivered images. The built-in datasets are resized on the
            device per batch; an image folder is decoded at this size. Default: the built-ins' own size; for
            an image folder, :func:`superconv.data.decisions.infer_image_size` (its images' typical size for a
            model trained from scratch, ``pretrained_size`` for pretrained weights).
        pretrained_size: the side the model's pretrained weights were trained at
            (:func:`superconv.models.pretrained_input_size`); an image folder is then decoded at this size
            and normalized with ImageNet's statistics. None: a model trained from scratch.
        cache_budget: bytes an image folder's decoded images may take in memory; over it, the images are
            streamed from the files. Default: a quarter of the available memory. 0 always streams.
        flip: random horizontal flips in the training augmentation. Default: where a flip keeps the labels
            (Fashion-MNIST and CIFAR-10 yes, digits no, an image folder no: it cannot know).
        skip_bad_images: train without the files of an image folder that cannot be read as images (counted
            in ``decisions``) instead of refusing the folder.

    Returns:
        A :class:`DataBundle`; its ``decisions`` say what was decided and why, ``flip_invariant`` whether
        flip test-time augmentation may be used, ``cached`` whether the images were decoded once.

    Raises:
        DataError: an unknown dataset, data that cannot be found or read, or sizes that do not
            work together (e.g. a batch larger than the training set).
        ConfigError: an invalid argument.
    """
    key = _dataset_key(name)
    _check_arguments(locals())
    dev = _resolve_device(device)
    root = Path(data_dir).expanduser() if data_dir is not None else None
    eval_bs = eval_batch_size or 2 * batch_size
    if key == "imagefolder":
        options = FolderOptions(
            batch_size=batch_size, eval_batch_size=eval_bs, val_fraction=val_fraction, device=dev, augment=augment,
            seed=seed, subset=subset, num_workers=num_workers, image_size=image_size, pretrained_size=pretrained_size,
            cache_budget=cache_budget, flip=flip, skip_bad_images=skip_bad_images,
        )  # fmt: skip
        return load_imagefolder(root, options)
    return _load_builtin(key, root, batch_size, eval_bs, val_fraction, dev, augment, seed, subset, image_size, flip)


def _check_arguments(args: dict[str, Any]) -> None:
    """load_data's argument checks (``args``: its locals), each with its own message."""
    positive_int("batch_size", args["batch_size"])
    fraction("val_fraction", args["val_fraction"], hint="e.g. 0.1, or 0 for no validation set")
    for arg in ("eval_batch_size", "subset", "image_size", "pretrained_size"):
        if args[arg] is not None:
            positive_int(arg, args[arg])
    for arg in ("num_workers", "cache_budget"):
        if args[arg] is not None:
            non_negative_int(arg, args[arg])
    for arg in ("augment", "skip_bad_images", "flip"):
        value = args[arg]
        if not isinstance(value, bool) and not (arg == "flip" and value is None):
            raise ConfigError(f"Expected {arg} to be True or False, but got {value!r}")


def _builtin_splits(
    key: str, root: Path | None, seed: int, subset: int | None, val_fraction: float
) -> tuple[dict[str, tuple[Tensor, Tensor]], list[str]]:
    """The built-in dataset's splits as host uint8 NCHW images and int64 labels, and its class names."""
    if key == "fashion-mnist":
        train_x, train_y, test_x, test_y = load_fashion_mnist(root)
        classes = list(FASHION_MNIST_CLASSES)
    elif key == "cifar10":
        train_x, train_y, test_x, test_y, classes = load_cifar10(root)
    else:
        train_x, train_y, test_x, test_y = load_digits(seed)
        classes = [str(i) for i in range(10)]
    n_total = len(train_y)
    pool = np.arange(n_total)
    if subset is not None:
        if subset > n_total:
            raise DataError(
                f"subset={subset} asks for more examples than the {n_total} in the {key} training set; "
                f"use --subset {n_total} or fewer"
            )
        pool = seeded_sample(n_total, subset, seed, stream=3)
    kept, carved = split_indices(len(pool), val_fraction, seed, stream=4)
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
    return splits, classes


def _load_builtin(
    key: str,
    root: Path | None,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    device: torch.device,
    augment: bool,
    seed: int,
    subset: int | None,
    image_size: int | None,
    flip: bool | None,
) -> DataBundle:
    splits, classes = _builtin_splits(key, root, seed, subset, val_fraction)
    nbytes = sum(x.numel() * x.element_size() + y.numel() * 8 for x, y in splits.values())
    resident = device.type == "cuda" and fits_on_device(nbytes, device)
    storage = device if resident else torch.device("cpu")
    splits = {k: (x.to(storage), y.to(storage)) for k, (x, y) in splits.items()}
    mean, std = DATASET_STATS[key]
    native = int(splits["train"][0].shape[-1])
    size = image_size or native
    pad = 4 if native >= 32 else 2 if native >= 16 else 1
    flips = FLIP_INVARIANT[key] if flip is None else flip

    def make(split: str, train: bool) -> TensorLoader:
        x, y = splits[split]
        return TensorLoader(
            x,
            y,
            batch_size=batch_size if train else eval_batch_size,
            mean=mean,
            std=std,
            device=device,
            shuffle=train,
            drop_last=train,
            augment=augment and train,
            pad=pad,
            flip=flips,
            seed=seed,
            output_size=None if size == native else size,
        )

    where = f"resident on {device}" if resident else "in host memory"
    declared = "keeps" if FLIP_INVARIANT[key] else "changes"
    decisions = {
        "storage": f"{human_bytes(nbytes)} of uint8 images {where}",
        "flip": f"a horizontal flip {declared} a {key} label; flips {'on' if flips else 'off'}"
        + (" (flip given)" if flip is not None else ""),
    }
    return DataBundle(
        train=make("train", True),
        val=make("val", False) if "val" in splits else None,
        test=make("test", False),
        num_classes=len(classes),
        in_channels=int(splits["train"][0].shape[1]),
        image_size=size,
        classes=classes,
        name=key,
        train_size=int(splits["train"][1].numel()),
        resident=resident,
        flip_invariant=flips,
        cached=True,
        decisions=decisions,
    )
