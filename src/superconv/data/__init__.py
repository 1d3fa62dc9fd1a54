"""Data: the built-in datasets read as uint8 arrays (``datasets``), loaders that deliver batches on the device
(``loaders``), and ``load_data``, which turns a dataset name or an image folder into train/val/test loaders."""

from superconv.data.datasets import DATASETS, DEFAULT_CACHE_DIR, DEFAULT_FASHION_MNIST_DIR, read_idx
from superconv.data.load import DataBundle, load_data
from superconv.data.loaders import Loader, StreamLoader, TensorLoader

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
