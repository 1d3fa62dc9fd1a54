"""Data: the built-in datasets read as uint8 arrays (``datasets``), image folders sized, checked and decoded
once when they fit (``imagefolder``, ``images``, ``decisions``), loaders that deliver batches on the device
(``loaders``, ``batching``), and ``load_data``, which turns a dataset name or an image folder into
train/val/test loaders."""

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
