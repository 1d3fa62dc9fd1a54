"""Datasets and loaders on tiny real data: digits, Fashion-MNIST, idx files and PNG folders."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superconv.data import (
    DATASETS,
    DEFAULT_FASHION_MNIST_DIR,
    FLIP_INVARIANT,
    DataBundle,
    TensorLoader,
    load_data,
    read_idx,
)
from superconv.data import datasets as datasets_module
from superconv.data import decisions as decisions_module
from superconv.errors import ConfigError, DataError

HAS_FASHION_MNIST = (DEFAULT_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(
    not HAS_FASHION_MNIST, reason="Debian's dataset-fashion-mnist is not installed"
)


def _all_batches(loader: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]  # type: ignore[attr-defined]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No download, no Debian package, an empty cache: only what a test writes exists."""
    monkeypatch.setenv("SUPERCONV_OFFLINE", "1")
    monkeypatch.setattr(datasets_module, "DEFAULT_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    monkeypatch.setattr(datasets_module, "DEFAULT_CACHE_DIR", tmp_path / "empty-cache")
    return tmp_path


# --------------------------------------------------------------------------------------------
# digits: the in-memory fast path end to end


def test_digits_bundle() -> None:
    bundle = load_data("digits", batch_size=64, val_fraction=0.1, seed=0)
    assert isinstance(bundle, DataBundle)
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.image_size) == ("digits", 10, 1, 8)
    assert bundle.classes == [str(i) for i in range(10)]
    assert bundle.resident is False  # CPU: nothing to make resident on
    n_test = round(1797 * 0.2)
    n_val = round((1797 - n_test) * 0.1)
    assert bundle.train_size == 1797 - n_test - n_val == bundle.train.dataset_size
    assert bundle.val is not None and bundle.val.dataset_size == n_val
    assert bundle.test is not None and bundle.test.dataset_size == n_test
    assert len(bundle.train) == bundle.train_size // 64  # the partial batch is dropped

    batches = _all_batches(bundle.train)
    assert len(batches) == len(bundle.train)
    for x, y in batches:
        assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (64,) and y.dtype == torch.int64
    xs = torch.cat([x for x, _ in batches])
    # normalized with the dataset's mean/std: roughly zero mean, unit variance
    assert abs(xs.mean().item()) < 0.15 and 0.8 < xs.std().item() < 1.2
    # the data is stored as uint8, never as a float copy of the whole set
    assert isinstance(bundle.train, TensorLoader) and bundle.train.images.dtype == torch.uint8


def test_eval_loaders_keep_everything_in_order() -> None:
    bundle = load_data("digits", batch_size=64, eval_batch_size=100, seed=0)
    assert bundle.test is not None and isinstance(bundle.test, TensorLoader)
    batches = _all_batches(bundle.test)
    assert len(batches) == len(bundle.test) == -(-bundle.test.dataset_size // 100)
    assert batches[-1][0].shape[0] == (bundle.test.dataset_size % 100 or 100)
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels, bundle.test.labels)  # no shuffle
    again = _all_batches(bundle.test)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # no augmentation


def test_splits_are_disjoint_and_seeded() -> None:
    a = load_data("digits", batch_size=32, seed=1, augment=False)
    b = load_data("digits", batch_size=32, seed=1, augment=False)
    c = load_data("digits", batch_size=32, seed=2, augment=False)
    assert isinstance(a.train, TensorLoader) and isinstance(a.val, TensorLoader)
    assert isinstance(a.test, TensorLoader) and isinstance(b.train, TensorLoader)
    assert isinstance(c.train, TensorLoader)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)
    # No image is in two splits (the rows are distinct enough to compare as bytes).
    rows = [{bytes(img.numpy().tobytes()) for img in split.images} for split in (a.train, a.val, a.test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def test_no_validation_split() -> None:
    bundle = load_data("digits", batch_size=32, val_fraction=0)
    assert bundle.val is None and bundle.train_size == 1797 - round(1797 * 0.2)


def test_subset_limits_training_examples() -> None:
    bundle = load_data("digits", batch_size=16, subset=200, val_fraction=0.1, seed=3)
    assert bundle.train_size == 180 and bundle.val is not None and bundle.val.dataset_size == 20
    assert len(bundle.train) == 180 // 16


def test_image_size_resizes_on_the_fly() -> None:
    bundle = load_data("digits", batch_size=16, image_size=32)
    x, _ = next(iter(bundle.train))
    assert x.shape == (16, 1, 32, 32) and bundle.image_size == 32
    assert isinstance(bundle.train, TensorLoader) and bundle.train.images.shape[-1] == 8  # stored small


# --------------------------------------------------------------------------------------------
# Reproducibility: the batches are a pure function of (seed, epoch)


def test_set_epoch_makes_batches_reproducible() -> None:
    first = load_data("digits", batch_size=64, seed=5)
    second = load_data("digits", batch_size=64, seed=5)
    first.train.set_epoch(2)
    second.train.set_epoch(2)
    a, b = _all_batches(first.train), _all_batches(second.train)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))

    first.train.set_epoch(3)
    c = _all_batches(first.train)
    assert not torch.equal(a[0][1], c[0][1])  # another epoch, another shuffle

    # Iterating without set_epoch moves on to the next epoch.
    first.train.set_epoch(2)
    assert torch.equal(_all_batches(first.train)[0][0], a[0][0])
    assert torch.equal(_all_batches(first.train)[0][0], c[0][0])


def test_resume_mid_epoch_sees_the_same_batches() -> None:
    bundle = load_data("digits", batch_size=64, seed=0)
    loader = bundle.train
    assert isinstance(loader, TensorLoader)
    loader.set_epoch(4)
    full = _all_batches(loader)
    loader.set_epoch(4, start_batch=5)
    rest = _all_batches(loader)
    assert len(rest) == len(full) - 5
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(full[5:], rest))
    with pytest.raises(ConfigError, match=r"0 <= start_batch <= \d+, but got epoch=1, start_batch=999"):
        loader.set_epoch(1, start_batch=999)


def test_each_epoch_is_a_permutation() -> None:
    bundle = load_data("digits", batch_size=50, seed=0, augment=False, val_fraction=0)
    loader = bundle.train
    assert isinstance(loader, TensorLoader)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == len(loader) * 50
    counts = torch.bincount(labels, minlength=10)
    expected = torch.bincount(loader.labels, minlength=10)
    assert (counts <= expected).all() and expected.sum() - counts.sum() < 50


# --------------------------------------------------------------------------------------------
# On-device augmentation


def _candidates(img: torch.Tensor, pad: int, flips: bool) -> list[torch.Tensor]:
    """Every crop (reflect padding) of one image, flipped or not: the reference, one at a time."""
    padded = F.pad(img.float().unsqueeze(0), (pad, pad, pad, pad), mode="reflect").squeeze(0)
    h, w = img.shape[-2:]
    out = []
    for source in [padded, padded.flip(-1)] if flips else [padded]:
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                out.append(source[:, dy : dy + h, dx : dx + w])
    return out


@pytest.mark.parametrize("flip", [True, False])
def test_augmentation_is_a_reflect_crop_and_flip(flip: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 2, 12, 12), dtype=torch.uint8, generator=gen)
    labels = torch.arange(64)
    loader = TensorLoader(
        images, labels, batch_size=64, mean=(0.0, 0.0), std=(1 / 255, 1 / 255), augment=True, pad=2, flip=flip
    )
    ((x, y),) = list(loader)  # mean 0 and std 1/255 undo the normalization: x holds raw pixels
    assert torch.equal(y, labels)
    identical = 0
    for original, augmented in zip(images, x):
        matches = [torch.equal(c, augmented) for c in _candidates(original, 2, flip)]
        assert any(matches), "an augmented image is not a reflect-padded crop of its original"
        identical += torch.equal(augmented, original.float())
    assert identical < 16  # most images were moved or flipped


def test_no_flip_for_digits() -> None:
    bundle = load_data("digits", batch_size=32)
    assert isinstance(bundle.train, TensorLoader)
    assert bundle.train.flip is False and bundle.train.augment is True and bundle.train.pad == 1
    assert bundle.flip_invariant is False and "changes a digits label; flips off" in bundle.decisions["flip"]
    no_aug = load_data("digits", batch_size=32, augment=False)
    assert isinstance(no_aug.train, TensorLoader) and no_aug.train.augment is False
    asked = load_data("digits", batch_size=32, flip=True)  # an explicit flip wins over the declaration
    assert isinstance(asked.train, TensorLoader) and asked.train.flip is True and asked.flip_invariant is True
    assert asked.decisions["flip"].endswith("flips on (flip given)")


def test_builtins_declare_flip_invariance() -> None:
    assert FLIP_INVARIANT == {"fashion-mnist": True, "cifar10": True, "digits": False}


# --------------------------------------------------------------------------------------------
# Fashion-MNIST: idx files written by the test, and Debian's package


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def _write_fashion(directory: Path, n_train: int = 40, n_test: int = 20, compress: bool = True) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(directory / f"train-images-idx3-ubyte{suffix}", train, compress)
    _write_idx(directory / f"train-labels-idx1-ubyte{suffix}", np.arange(n_train) % 10, compress)
    _write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    _write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n_test) % 10, compress)
    return train


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx(tmp_path: Path, compress: bool) -> None:
    array = np.random.default_rng(1).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    path = tmp_path / ("a.gz" if compress else "a")
    _write_idx(path, array, compress)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x03rest")
    with pytest.raises(DataError, match=r"Expected .*bad to be an idx file of uint8.*starts with 00 00 0d 03"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((4, 4), dtype=np.uint8), compress=False)
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"declares shape \(4, 4\) \(16 bytes of data\) but holds 13 bytes"):
        read_idx(short)
    with pytest.raises(DataError, match=r"Cannot read the idx file .*missing.*download it again"):
        read_idx(tmp_path / "missing")


@pytest.mark.parametrize(("layout", "compress"), [("flat", True), ("torchvision", False)])
def test_fashion_mnist_from_written_idx_files(offline: Path, layout: str, compress: bool) -> None:
    root = offline / "fm"
    train = _write_fashion(root if layout == "flat" else root / "FashionMNIST" / "raw", compress=compress)
    bundle = load_data("fashion-mnist", data_dir=root, batch_size=8, val_fraction=0.25, augment=False)
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.image_size) == (
        "fashion-mnist",
        10,
        1,
        28,
    )
    assert bundle.classes[0] == "T-shirt/top" and bundle.train_size == 30
    assert bundle.test is not None and bundle.test.dataset_size == 20
    assert isinstance(bundle.train, TensorLoader)
    stored = bundle.train.images[:, 0].numpy()
    assert all(any(np.array_equal(s, t) for t in train) for s in stored)
    assert bundle.train.flip is True and bundle.train.pad == 2
    assert bundle.flip_invariant is True and bundle.cached is True


def test_fashion_mnist_mismatched_files(offline: Path) -> None:
    root = offline / "fm"
    _write_fashion(root)
    _write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(7) % 10, compress=True)
    with pytest.raises(DataError, match=r"\(N, H, W\) images .* N labels, but got shapes \(40, 28, 28\) and \(7,\)"):
        load_data("fashion-mnist", data_dir=root)


def test_fashion_mnist_missing_says_how_to_get_it(offline: Path) -> None:
    with pytest.raises(DataError) as info:
        load_data("fashion-mnist")
    message = str(info.value)
    assert "Fashion-MNIST was not found" in message
    assert str(offline / "no-debian-package") in message and str(offline / "empty-cache") in message
    assert "downloads are disabled (SUPERCONV_OFFLINE is set)" in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "--data-dir DIR" in message and "with a network" in message


def test_explicit_data_dir_is_used_or_refused_never_replaced(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 15, defect 10: a --data-dir without Fashion-MNIST fell back to Debian's copy and trained on it.
    debian = offline / "debian-copy"
    _write_fashion(debian, n_train=40)
    monkeypatch.setattr(datasets_module, "DEFAULT_FASHION_MNIST_DIR", debian)
    assert load_data("fashion-mnist", batch_size=8).train_size == 36  # no --data-dir: the installed copy
    elsewhere = offline / "mine"
    elsewhere.mkdir()
    with pytest.raises(
        DataError,
        match=r"not found in --data-dir .*mine: looked for train-images-idx3-ubyte.* in .*mine and "
        r".*mine/FashionMNIST/raw, and downloads are disabled.*used as given, never replaced by another copy",
    ):
        load_data("fashion-mnist", data_dir=elsewhere, batch_size=8)
    mine = _write_fashion(elsewhere, n_train=30)  # the explicit folder is the one read
    bundle = load_data("fashion-mnist", data_dir=elsewhere, batch_size=8, val_fraction=0, augment=False)
    assert bundle.train_size == 30 and isinstance(bundle.train, TensorLoader)
    assert {img.tobytes() for img in bundle.train.images[:, 0].numpy()} == {img.tobytes() for img in mine}


def test_cifar10_missing_says_how_to_get_it(offline: Path) -> None:
    with pytest.raises(DataError, match=r"CIFAR-10 was not found under .*cifar.*cifar-10-batches-py.*network"):
        load_data("cifar10", data_dir=offline / "cifar")


@needs_fashion_mnist
def test_fashion_mnist_debian_package_subset() -> None:
    bundle = load_data("fashion-mnist", batch_size=128, subset=2000, val_fraction=0.1, seed=0)
    assert bundle.train_size == 1800 and len(bundle.train) == 1800 // 128
    assert bundle.val is not None and bundle.val.dataset_size == 200
    assert bundle.test is not None and bundle.test.dataset_size == 10_000  # the official test set
    x, y = next(iter(bundle.train))
    assert x.shape == (128, 1, 28, 28) and y.max() < 10
    xs = torch.cat([x for x, _ in bundle.val])
    assert abs(xs.mean().item()) < 0.1 and 0.9 < xs.std().item() < 1.1  # the published mean/std fit


# --------------------------------------------------------------------------------------------
# Argument errors


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match=re.escape("Unknown dataset 'mnist'; expected one of " + ", ".join(DATASETS))):
        load_data("mnist")


def test_batch_larger_than_training_set() -> None:
    with pytest.raises(
        DataError, match=r"batch size 4096 is larger than the 1294 training examples.*--batch-size 1024"
    ):
        load_data("digits", batch_size=4096)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"val_fraction": 1.0}, ConfigError, r"val_fraction in \[0, 1\).*but got 1.0"),
        ({"val_fraction": -0.1}, ConfigError, r"val_fraction in \[0, 1\).*but got -0.1"),
        ({"batch_size": 0}, ConfigError, r"batch_size to be a positive integer, but got 0"),
        ({"eval_batch_size": -1}, ConfigError, r"eval_batch_size to be a positive integer, but got -1"),
        ({"subset": 5000}, DataError, r"subset=5000 asks for more examples than the 1438.*--subset 1438"),
        ({"subset": 5, "val_fraction": 0.05}, DataError, r"leaves no validation example"),
        ({"num_workers": -2}, ConfigError, r"num_workers to be a non-negative integer, but got -2"),
        ({"cache_budget": -1}, ConfigError, r"cache_budget to be a non-negative integer, but got -1"),
        ({"pretrained_size": 0}, ConfigError, r"pretrained_size to be a positive integer, but got 0"),
        ({"flip": "yes"}, ConfigError, r"flip to be True or False, but got 'yes'"),
        ({"skip_bad_images": None}, ConfigError, r"skip_bad_images to be True or False, but got None"),
        ({"device": "tpu:x"}, ConfigError, r"Expected a device such as 'cpu', 'cuda'.*but got 'tpu:x'"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        load_data("digits", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda() -> None:
    with pytest.raises(ConfigError, match=r"'cuda' was asked for, but CUDA is not available.*--device cpu"):
        load_data("digits", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resident_and_streamed_give_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    resident = load_data("digits", batch_size=64, device="cuda", seed=0)
    assert resident.resident is True
    assert isinstance(resident.train, TensorLoader) and resident.train.images.device.type == "cuda"
    assert resident.train.resident  # the loader sees its images on its own device (cuda == cuda:0)
    monkeypatch.setattr(decisions_module, "RESIDENT_MAX_FRACTION", 0.0)  # pretend the GPU is full
    streamed = load_data("digits", batch_size=64, device="cuda", seed=0)
    assert streamed.resident is False
    assert isinstance(streamed.train, TensorLoader) and streamed.train.images.device.type == "cpu"
    for (xa, ya), (xb, yb) in zip(resident.train, streamed.train):
        assert xa.device.type == xb.device.type == "cuda"
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_leaves_the_thread_count_alone() -> None:
    # Batches are prepared single-threaded (see loaders._single_threaded); the model's compute
    # between batches must get the caller's thread count back.
    previous = torch.get_num_threads()  # conftest pins 1; use 2 so that there is something to switch
    torch.set_num_threads(2)
    try:
        bundle = load_data("digits", batch_size=32)
        iterator = iter(bundle.train)
        next(iterator)
        assert torch.get_num_threads() == 2
        list(iterator)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
