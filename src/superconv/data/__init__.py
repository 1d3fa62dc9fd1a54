"""Data: a dataset name or an image folder as train/val/test loaders on the device (``load_data``).

Modules: ``datasets`` (the built-in datasets read as uint8 arrays), ``scan`` (what an image folder holds, bad
files found up front), ``images`` (headers read and images decoded in parallel), ``decisions`` (image size, cache
or stream, workers - pure functions with a sentence each), ``imagefolder`` (a folder as loaders), ``loaders`` and
``batching`` (batches on the device, the same on both paths), ``seeding`` (every random choice from
``(seed, epoch)``), ``bundle`` (``DataBundle``) and ``load`` (``load_data``)."""

from superconv.data.bundle import DataBundle
from superconv.data.datasets import DATASETS, DEFAULT_CACHE_DIR, DEFAULT_FASHION_MNIST_DIR, FLIP_INVARIANT, read_idx
from superconv.data.load import load_data
from superconv.data.loaders import Loader, StreamLoader, TensorLoader

__all__ = [
    "DATASETS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_FASHION_MNIST_DIR",
    "FLIP_INVARIANT",
    "DataBundle",
    "Loader",
    "StreamLoader",
    "TensorLoader",
    "load_data",
    "read_idx",
]
