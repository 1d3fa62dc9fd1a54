"""A folder of the user's own images as train/val/test loaders, sized to the images and decoded once if it fits.

``load_imagefolder`` (through :func:`superconv.data.load_data`):

1. finds the splits and classes (``DIR/train/<class>/...`` with optional ``val/`` and ``test/``, or
   ``DIR/<class>/...`` split by seed) and reads every file's header in parallel, so that every bad file is
   reported at once, before any training (or skipped with ``skip_bad_images=True``);
2. picks the image size from the headers (:func:`superconv.data.decisions.infer_image_size`);
3. decodes every image once, in parallel, into uint8 tensors behind a
   :class:`~superconv.data.loaders.TensorLoader` when they fit the cache budget; else streams the files through
   a :class:`~superconv.data.loaders.StreamLoader`. Both give the same batches for the same seed.

Every file's header is read; a file whose header reads but whose pixels do not (a truncated download) is found
when it is decoded: at load time when the images are cached, else when its batch is streamed.

What the folder holds (layout, classes, files, unreadable headers) is :mod:`superconv.data.scan`'s concern.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superconv.data.bundle import DataBundle
from superconv.data.decisions import (
    choose_cache,
    default_cache_budget,
    fits_on_device,
    infer_image_size,
    stream_workers,
)
from superconv.data.images import ImageFiles, channel_stats, decode_images, thread_count
from superconv.data.loaders import StreamLoader, TensorLoader
from superconv.data.scan import LAYOUT, Files, bad_files_error, check_headers, scan_folder
from superconv.data.seeding import seeded_sample, split_indices
from superconv.errors import DataError

__all__ = ["IMAGENET_STATS", "STATS_SAMPLE", "TEST_FRACTION", "FolderOptions", "load_imagefolder"]

# A folder without train/ val/ test/ sub-folders gives this much (seeded) to its test set.
TEST_FRACTION = 0.2
# torchvision's ImageNet weights expect inputs normalized with these.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# A model trained from scratch gets the training images' own mean/std, measured on this many of them.
STATS_SAMPLE = 500


@dataclass(frozen=True)
class FolderOptions:
    """``load_data``'s arguments as they reach the image folder (checked already)."""

    batch_size: int
    eval_batch_size: int
    val_fraction: float
    device: torch.device
    augment: bool
    seed: int
    subset: int | None
    num_workers: int | None
    image_size: int | None
    pretrained_size: int | None
    cache_budget: int | None
    flip: bool | None
    skip_bad_images: bool


# --------------------------------------------------------------------------------------------
# Splits


def _carve(root: Path, has_splits: bool, found: dict[str, Files], opts: FolderOptions) -> tuple[dict[str, Files], str]:
    """The train/val/test files: the split folders, or seeded carve-outs of the training images."""
    train, val, test = found["train"], found.get("val"), found.get("test")
    pool = np.arange(len(train))
    if not has_splits:
        pool, carved_test = split_indices(len(train), TEST_FRACTION, opts.seed, stream=5)
        test = train.take(carved_test) if len(carved_test) else None
    if opts.subset is not None:
        if opts.subset > len(pool):
            raise DataError(
                f"subset={opts.subset} asks for more images than the {len(pool)} training images in {root}; "
                f"use --subset {len(pool)} or fewer"
            )
        pool = pool[seeded_sample(len(pool), opts.subset, opts.seed, stream=3)]
    carved_val = val is None
    if carved_val:
        kept, carved = split_indices(len(pool), opts.val_fraction, opts.seed, stream=4)
        val = train.take(pool[carved]) if len(carved) else None
        pool = pool[kept]
    if len(pool) == 0:
        raise DataError(f"No training images are left in {root} after the validation/test splits; add images")
    parts = {"train": train.take(pool)}
    parts.update({name: files for name, files in (("val", val), ("test", test)) if files is not None and len(files)})
    counts = ", ".join(f"{name} {len(files)}" for name, files in parts.items())
    if has_splits:
        folders = ", ".join(f"{name}/" for name in found)
        how = f"the {folders} folder{'s' if len(found) > 1 else ''}"
        how += ", validation carved (seeded) from train/" if carved_val else ""
    else:
        how = f"no split folders: {TEST_FRACTION:.0%} (seeded) held out for test, then the validation fraction"
    return parts, f"{counts} images ({how})"


# --------------------------------------------------------------------------------------------
# Cached and streamed loaders


def _normalization(opts: FolderOptions, sample: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    if opts.pretrained_size is not None or len(sample) == 0:
        return IMAGENET_STATS
    return channel_stats(sample)


def _normalization_sentence(opts: FolderOptions, mean: tuple[float, ...], count: int) -> str:
    if opts.pretrained_size is not None:
        return "ImageNet's mean/std, which the pretrained weights expect"
    if count == 0:
        return "ImageNet's mean/std: none of the sampled training images could be decoded"
    shown = ", ".join(f"{m:.3f}" for m in mean)
    return f"the training images' own mean/std, measured on {count} of them (mean {shown})"


def _refuse_bad(root: Path, bad: dict[str, str], total: int, skip: bool) -> None:
    if bad and not skip:
        raise bad_files_error(root, bad, total)


def _decode_splits(
    root: Path, parts: dict[str, Files], size: int, skip: bool
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, str]]:
    """Every split decoded once into uint8 tensors; files that fail to decode are reported (or dropped)."""
    decoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    bad: dict[str, str] = {}
    for name, files in parts.items():
        images, failed = decode_images(files.paths, size, thread_count())
        labels = torch.from_numpy(files.labels)
        if failed:
            bad.update({files.paths[i]: reason for i, reason in failed.items()})
            keep = torch.tensor([i for i in range(len(files)) if i not in failed], dtype=torch.int64)
            images, labels = images.index_select(0, keep), labels.index_select(0, keep)
        decoded[name] = (images, labels)
    _refuse_bad(root, bad, sum(len(f) for f in parts.values()), skip)
    return decoded, bad


def _pad(size: int) -> int:
    return max(1, size // 8)  # crops shift by up to 1/8 of the side: 4 px at 32, as for CIFAR


def _cached_loaders(
    root: Path, parts: dict[str, Files], size: int, opts: FolderOptions, decisions: dict[str, str]
) -> tuple[dict[str, TensorLoader], bool, dict[str, str]]:
    """TensorLoaders over images decoded once; ``(loaders, resident on the device, files that failed)``."""
    started = time.perf_counter()
    decoded, bad = _decode_splits(root, parts, size, opts.skip_bad_images)
    seconds = time.perf_counter() - started
    train_images = decoded["train"][0]
    sample = train_images[torch.from_numpy(seeded_sample(len(train_images), STATS_SAMPLE, opts.seed, stream=6))]
    mean, std = _normalization(opts, sample)
    decisions["normalization"] = _normalization_sentence(opts, mean, len(sample))
    nbytes = sum(x.numel() + y.numel() * 8 for x, y in decoded.values())
    resident = opts.device.type == "cuda" and fits_on_device(nbytes, opts.device)
    storage = opts.device if resident else torch.device("cpu")
    count = sum(len(x) for x, _ in decoded.values())
    decisions["storage"] += (
        f"; decoded once into memory ({count} images in {seconds:.1f} s on {thread_count()} threads)"
        + (f", resident on {opts.device}" if resident else "")
    )
    loaders = {}
    for name, (images, labels) in decoded.items():
        train = name == "train"
        loaders[name] = TensorLoader(
            images.to(storage), labels.to(storage), **_loader_options(opts, size, mean, std, train)
        )
    return loaders, resident, bad


def _loader_options(
    opts: FolderOptions, size: int, mean: Sequence[float], std: Sequence[float], train: bool
) -> dict[str, Any]:
    """What a split's loader gets, cached or streamed alike (so both give the same batches)."""
    return {
        "batch_size": opts.batch_size if train else opts.eval_batch_size, "mean": mean, "std": std,
        "device": opts.device, "shuffle": train, "drop_last": train, "augment": opts.augment and train,
        "pad": _pad(size), "flip": bool(opts.flip), "seed": opts.seed,
    }  # fmt: skip


def _stream_loaders(
    root: Path, parts: dict[str, Files], size: int, opts: FolderOptions, decisions: dict[str, str]
) -> tuple[dict[str, StreamLoader], dict[str, str]]:
    """StreamLoaders decoding the files per batch in worker processes; ``(loaders, files that failed)``."""
    train = parts["train"]
    chosen = seeded_sample(len(train), STATS_SAMPLE, opts.seed, stream=6)
    sample, failed = decode_images([train.paths[i] for i in chosen], size, thread_count())
    bad = {train.paths[chosen[i]]: reason for i, reason in failed.items()}
    _refuse_bad(root, bad, sum(len(f) for f in parts.values()), opts.skip_bad_images)
    if bad:  # skipped: out of the sample's statistics and out of the training files
        sample = sample[[i for i in range(len(chosen)) if i not in failed]]
        parts["train"] = train.take(np.array([i for i, p in enumerate(train.paths) if p not in bad], dtype=np.int64))
    mean, std = _normalization(opts, sample)
    decisions["normalization"] = _normalization_sentence(opts, mean, len(sample))
    cpus = thread_count()
    workers = opts.num_workers if opts.num_workers is not None else stream_workers(opts.device.type, cpus)
    given = " (given)" if opts.num_workers is not None else f" ({cpus} cores)"
    decisions["storage"] += f"; streamed from the files, decoded per batch by {workers} worker process(es){given}"
    loaders = {}
    for name, files in parts.items():
        is_train = name == "train"
        loaders[name] = StreamLoader(
            ImageFiles(files.paths, files.labels.tolist(), size),
            **_loader_options(opts, size, mean, std, is_train),
            num_workers=workers,
            skip_bad_images=opts.skip_bad_images,
        )
    return loaders, bad


# --------------------------------------------------------------------------------------------
# The entry point


def _flip_sentence(flip: bool | None) -> str:
    if flip:
        return "random horizontal flips in training (flip=True given); flip test-time augmentation allowed"
    if flip is None:
        return (
            "no horizontal flips: a flip can change what an image shows (text, digits, left/right); "
            "pass flip=True (--flip) when it keeps your labels"
        )
    return "no horizontal flips (flip=False given)"


def load_imagefolder(root: Path | None, opts: FolderOptions) -> DataBundle:
    """The image folder at ``root`` as a :class:`DataBundle` (see the module docstring)."""
    if root is None:
        raise DataError(f"The imagefolder dataset needs --data-dir DIR with the layout {LAYOUT}")
    has_splits, classes, found = scan_folder(root)
    found, sides, bad = check_headers(root, found, opts.skip_bad_images)
    parts, splits_sentence = _carve(root, has_splits, found, opts)
    size, size_sentence = infer_image_size(
        sides, device_type=opts.device.type, pretrained_size=opts.pretrained_size, explicit=opts.image_size
    )
    budget, budget_source = (opts.cache_budget, "given") if opts.cache_budget is not None else default_cache_budget()
    nbytes = sum(len(files) for files in parts.values()) * (3 * size * size + 8)
    cached, cache_sentence = choose_cache(nbytes, budget, budget_source)
    decisions = {"image_size": size_sentence, "splits": splits_sentence, "storage": cache_sentence}
    decisions["flip"] = _flip_sentence(opts.flip)
    loaders: dict[str, TensorLoader] | dict[str, StreamLoader]
    if cached:
        loaders, resident, decode_bad = _cached_loaders(root, parts, size, opts, decisions)
    else:
        (loaders, decode_bad), resident = _stream_loaders(root, parts, size, opts, decisions), False
    bad.update(decode_bad)
    if bad:
        decisions["bad_images"] = f"skipped {len(bad)} file(s) that cannot be read as images (skip_bad_images=True)"
    return DataBundle(
        train=loaders["train"],
        val=loaders.get("val"),
        test=loaders.get("test"),
        num_classes=len(classes),
        in_channels=3,
        image_size=size,
        classes=classes,
        name="imagefolder",
        train_size=loaders["train"].dataset_size,
        resident=resident,
        flip_invariant=bool(opts.flip),
        cached=cached,
        decisions=decisions,
    )
