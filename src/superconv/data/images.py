"""Image files: headers checked in parallel, images decoded at one square size, once or per batch.

Every image, cached or streamed, goes through :func:`decode_image`: EXIF orientation applied, converted to RGB,
the shorter side resized to the target and the centre cropped (PIL's antialiasing resize; JPEGs decoded at a
reduced DCT scale first when they are much larger than the target). The cached and the streamed paths therefore
hold the same pixels.

PIL releases the GIL while it decodes and resizes, so a thread pool decodes on every core without the start-up
and copying costs of worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from superconv.errors import DataError

__all__ = ["ImageFiles", "channel_stats", "decode_image", "decode_images", "read_sizes", "thread_count"]

T = TypeVar("T")


def thread_count() -> int:
    """Threads for decoding and header checks: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _reason(exc: BaseException) -> str:
    """Why a file is not a usable image, in a few words (without its path: the message names it once)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image format PIL can read, or an empty file"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parallel(count: int, work: Callable[[int], T], threads: int) -> list[T | BaseException]:
    """``work(i)`` for ``i in range(count)`` on ``threads`` threads, in chunks; an exception is returned, not raised."""

    def run(chunk: range) -> list[T | BaseException]:
        out: list[T | BaseException] = []
        for i in chunk:
            try:
                out.append(work(i))
            except Exception as exc:  # PIL raises many types; the caller decides what a failure means
                out.append(exc)
        return out

    threads = max(1, min(threads, count))
    step = max(1, -(-count // (threads * 4)))  # a few chunks per thread evens out slow files
    chunks = [range(i, min(i + step, count)) for i in range(0, count, step)]
    if threads == 1:
        return [r for chunk in chunks for r in run(chunk)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [r for part in pool.map(run, chunks) for r in part]


def _size_of(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:  # reads the header only
        width, height = image.size
    if width < 1 or height < 1:
        raise DataError(f"the header gives a size of {width}x{height}")
    return width, height


def read_sizes(paths: Sequence[str], threads: int | None = None) -> tuple[list[tuple[int, int]], dict[int, str]]:
    """Every file's ``(width, height)`` from its header, without decoding; and why each unreadable one is not.

    Returns ``(sizes, bad)``: ``sizes[i]`` is ``(0, 0)`` where ``i`` is in ``bad`` (index -> reason).
    """
    results = _parallel(len(paths), lambda i: _size_of(paths[i]), threads or thread_count())
    sizes: list[tuple[int, int]] = []
    bad: dict[int, str] = {}
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            bad[i] = _reason(result)
            sizes.append((0, 0))
        else:
            sizes.append(result)
    return sizes, bad


def decode_image(path: str, size: int) -> np.ndarray:
    """The image at ``path`` as a ``(size, size, 3)`` uint8 array: shorter side resized to ``size``, centre crop.

    Raises:
        DataError: the file cannot be read or decoded (named in the message).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when still >= size
            ImageOps.exif_transpose(image, in_place=True)  # decodes; turns a phone photo upright
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if rgb.size != (size, size):
                rgb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:  # PIL raises many types; all mean "this file is not a usable image"
        raise DataError(f"Cannot read the image {path} ({_reason(exc)}); delete or replace the file") from exc


def decode_images(paths: Sequence[str], size: int, threads: int | None = None) -> tuple[Tensor, dict[int, str]]:
    """Decode every file once, in parallel, into one uint8 ``(N, 3, size, size)`` tensor.

    Returns ``(images, bad)``: the rows of the files in ``bad`` (index -> reason) are left black.
    """
    images = torch.zeros((len(paths), 3, size, size), dtype=torch.uint8)
    rows = images.numpy()  # shares the tensor's memory: each thread writes its own rows, no copy at the end

    def work(i: int) -> None:
        rows[i] = decode_image(paths[i], size).transpose(2, 0, 1)

    results = _parallel(len(paths), work, threads or thread_count())
    bad = {i: str(r.args[0]) if isinstance(r, DataError) else _reason(r) for i, r in enumerate(results) if r}
    return images, bad


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``(N, C, H, W)`` images, in [0, 1] units."""
    # From a histogram of the 256 levels per channel: exact, and no float copy of the images.
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        var = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var**0.5, 1e-3))  # a constant channel must not divide by zero
    return tuple(means), tuple(stds)


class ImageFiles(Dataset[Any]):
    """Image files and their labels as ``(uint8 (3, size, size) tensor, label, problem)``, decoded on access.

    What a :class:`~superconv.data.loaders.StreamLoader`'s workers decode; plain data, so it pickles for any
    multiprocessing start method. ``problem`` is ``""``, or, for a file that cannot be decoded, the
    :class:`~superconv.errors.DataError` message naming it (the image is then black): the loader decides, in the
    main process, whether that stops the run or the image is skipped - an exception raised in a worker would
    reach the user wrapped in a worker traceback.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: int) -> None:
        if len(paths) != len(labels):
            raise DataError(f"Expected one label per image file ({len(paths)}), but got {len(labels)}")
        self.paths = list(paths)
        self.labels = [int(label) for label in labels]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        try:
            pixels = decode_image(self.paths[index], self.size)
        except DataError as exc:
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), self.labels[index], str(exc)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), self.labels[index], ""
