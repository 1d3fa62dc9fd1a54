"""Image folders: layout and bad files checked at load time, size inferred, decoded once or streamed, same batches."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from superconv.data import StreamLoader, TensorLoader, load_data
from superconv.data import scan as scan_module
from superconv.data.images import ImageFiles, decode_image
from superconv.errors import DataError


def _write_images(
    directory: Path, classes: dict[str, int], size: tuple[int, int] = (20, 24), suffix: str = "png", seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(directory / name / f"{i}.{suffix}")


def _batches(loader: Iterable[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    for split, count in (("train", 8), ("val", 2), ("test", 3)):
        _write_images(tmp_path / split, {"a": count, "b": count, "c": count}, size=(24, 20), seed=len(split))
    return tmp_path


# --------------------------------------------------------------------------------------------
# Layout and splits


def test_flat_layout_is_split(tmp_path: Path) -> None:
    _write_images(tmp_path, {"cat": 10, "dog": 10})
    bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=4, image_size=16, val_fraction=0.25)
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.image_size) == ("imagefolder", 2, 3, 16)
    assert bundle.classes == ["cat", "dog"] and bundle.resident is False
    assert bundle.test is not None and bundle.test.dataset_size == 4  # 20% of 20
    assert bundle.val is not None and bundle.val.dataset_size == 4  # 25% of the other 16
    assert bundle.train_size == 12 and len(bundle.train) == 3
    assert bundle.decisions["splits"].startswith("train 12, val 4, test 4 images (no split folders: 20% (seeded)")
    for x, y in bundle.train:
        assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, _ = next(iter(bundle.test))
    assert xs.shape[-2:] == (16, 16)


def test_split_folders_and_seeded_order(split_folder: Path) -> None:
    bundle = load_data("imagefolder", data_dir=split_folder, batch_size=5, image_size=8, augment=False)
    assert bundle.train_size == 24 and bundle.classes == ["a", "b", "c"]
    assert bundle.val is not None and bundle.val.dataset_size == 6
    assert bundle.test is not None and bundle.test.dataset_size == 9
    assert bundle.decisions["splits"] == "train 24, val 6, test 9 images (the train/, val/, test/ folders)"
    bundle.train.set_epoch(1)
    first = _batches(bundle.train)
    bundle.train.set_epoch(1)
    assert _same(first, _batches(bundle.train))
    bundle.train.set_epoch(2)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, _batches(bundle.train)))


def test_hidden_files_and_folders_are_not_data(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 5, "b": 5})
    (tmp_path / ".ipynb_checkpoints").mkdir()  # Jupyter's, with no images: would be an empty class
    (tmp_path / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=2, image_size=8)
    assert bundle.classes == ["a", "b"] and "bad_images" not in bundle.decisions


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"imagefolder dataset needs --data-dir DIR with the layout DIR/train/"):
        load_data("imagefolder")
    with pytest.raises(DataError, match=r"The image folder .*nope does not exist.*expected layout"):
        load_data("imagefolder", data_dir=tmp_path / "nope")
    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"x")
    with pytest.raises(DataError, match=r"Expected --data-dir to be a folder, but .*photo\.jpg is a file"):
        load_data("imagefolder", data_dir=a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"at least 2 class folders in .*empty, but found 0 \(none\)"):
        load_data("imagefolder", data_dir=empty)
    one = tmp_path / "one"
    _write_images(one, {"only": 3})
    with pytest.raises(DataError, match=r"at least 2 class folders in .*one, but found 1 \(only\)"):
        load_data("imagefolder", data_dir=one)
    no_images = tmp_path / "noimg"
    (no_images / "a").mkdir(parents=True)
    (no_images / "b").mkdir()
    (no_images / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"Cannot use .*noimg as an image folder \(Found no valid file.*a, b.*\.jpg"):
        load_data("imagefolder", data_dir=no_images)


def test_split_folder_errors(tmp_path: Path) -> None:
    mismatch = tmp_path / "mismatch"
    _write_images(mismatch / "train", {"a": 2, "b": 2})
    _write_images(mismatch / "val", {"a": 2, "c": 2})
    with pytest.raises(DataError, match=r"classes of .*val \(a, c\) differ from those of .*train \(a, b\)"):
        load_data("imagefolder", data_dir=mismatch, batch_size=2)
    file_split = tmp_path / "file_split"
    _write_images(file_split / "train", {"a": 2, "b": 2})
    (file_split / "val").write_text("val.txt lost its extension")
    with pytest.raises(DataError, match=r"Expected .*file_split/val to be a folder of class folders, but it is a file"):
        load_data("imagefolder", data_dir=file_split, batch_size=2)
    no_train = tmp_path / "no_train"
    _write_images(no_train / "val", {"a": 2, "b": 2})
    _write_images(no_train / "test", {"a": 2, "b": 2})
    with pytest.raises(DataError, match=r"no_train has val/ and test/ but no train/ folder; add .*no_train/train"):
        load_data("imagefolder", data_dir=no_train, batch_size=2)


def test_unreadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_images(tmp_path, {"a": 2, "b": 2})
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == tmp_path:  # chmod cannot lock out root, who runs some CI: refuse here instead
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan_module.os, "scandir", scandir)
    with pytest.raises(DataError, match=r"Cannot read the folder .* \(\[Errno 13\] Permission denied.*check its perm"):
        load_data("imagefolder", data_dir=tmp_path)


def test_batch_larger_than_the_folder(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 5, "b": 5})
    with pytest.raises(DataError, match=r"batch size 64 is larger than the 7 training examples.*--batch-size 4"):
        load_data("imagefolder", data_dir=tmp_path, batch_size=64, image_size=8)
    with pytest.raises(DataError, match=r"batch size 64 is larger than the 7 training images.*--batch-size 4"):
        load_data("imagefolder", data_dir=tmp_path, batch_size=64, image_size=8, cache_budget=0)


# --------------------------------------------------------------------------------------------
# Bad files: all of them, at load time


def _add_bad_files(directory: Path) -> list[str]:
    names = []
    for i in range(7):
        path = directory / ("a" if i % 2 else "b") / f"bad{i}.jpg"
        path.write_bytes(b"" if i == 0 else b"<html>not found</html>")
        names.append(path.name)
    return names


def test_every_bad_file_is_reported_at_load_time(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 6, "b": 6})
    _add_bad_files(tmp_path)
    with pytest.raises(DataError) as info:
        load_data("imagefolder", data_dir=tmp_path, batch_size=2)  # no batch is drawn: refused before training
    message = str(info.value)
    assert message.startswith(f"7 of the 19 image files in {tmp_path} cannot be read as images: ")
    assert len(re.findall(r"bad\d\.jpg \(not an image format PIL can read, or an empty file\)", message)) == 5
    assert "; and 2 more." in message
    assert message.endswith(
        "Delete or replace them, or pass --skip-bad-images (skip_bad_images=True) to train without them"
    )


@pytest.mark.parametrize("cache_budget", [None, 0])
def test_skip_bad_images(tmp_path: Path, cache_budget: int | None) -> None:
    _write_images(tmp_path, {"a": 10, "b": 10})
    _add_bad_files(tmp_path)
    bundle = load_data(
        "imagefolder", data_dir=tmp_path, batch_size=2, val_fraction=0, skip_bad_images=True, cache_budget=cache_budget
    )
    assert bundle.train_size + (bundle.test.dataset_size if bundle.test else 0) == 20
    assert bundle.decisions["bad_images"] == "skipped 7 file(s) that cannot be read as images (skip_bad_images=True)"
    assert len(_batches(bundle.train)) == len(bundle.train)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still reads; the pixels do not


def test_a_file_that_fails_to_decode_is_reported_when_cached(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 6, "b": 6}, suffix="jpg")
    _truncate(tmp_path / "a" / "3.jpg")
    with pytest.raises(DataError, match=r"1 of the 12 image files .* cannot be read as images: .*a/3\.jpg \("):
        load_data("imagefolder", data_dir=tmp_path, batch_size=2)
    bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=2, val_fraction=0, skip_bad_images=True)
    assert bundle.cached and "skipped 1 file(s)" in bundle.decisions["bad_images"]
    assert bundle.train_size + (bundle.test.dataset_size if bundle.test else 0) == 11


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_file_that_fails_to_decode_while_streaming_names_the_file(tmp_path: Path, num_workers: int) -> None:
    _write_images(tmp_path, {"a": 4, "b": 4}, suffix="jpg")
    _truncate(tmp_path / "b" / "1.jpg")
    paths = sorted(str(p) for p in tmp_path.glob("*/*.jpg"))
    dataset = ImageFiles(paths, [int("/b/" in p) for p in paths], 8)
    common: dict[str, Any] = {"batch_size": 8, "mean": (0.5,) * 3, "std": (0.25,) * 3, "num_workers": num_workers}
    loader = StreamLoader(dataset, **common)
    # One clean message from the main process, not a worker's traceback:
    with pytest.raises(DataError, match=r"^Cannot read the image .*b/1\.jpg \(OSError: .*\); delete or replace"):
        _batches(loader)
    skipping = StreamLoader(dataset, skip_bad_images=True, **common)
    ((x, y),) = _batches(skipping)
    assert x.shape == (7, 3, 8, 8) and y.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert len(skipping.skipped) == 1 and "b/1.jpg" in skipping.skipped[0]


# --------------------------------------------------------------------------------------------
# Decisions: image size, cache or stream, flips


def test_size_inferred_from_a_64px_folder(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 6, "b": 6}, size=(96, 64), suffix="jpg")  # shorter side 64
    bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=4)  # CPU, from scratch
    assert bundle.image_size == 32
    assert bundle.decisions["image_size"] == (
        "32 px: the images' typical (median) shorter side is 64 px, capped at 32 px for a model trained from "
        "scratch on a CPU (cost grows with the pixels); pass image_size (--image-size) to choose"
    )
    x, _ = next(iter(bundle.train))
    assert x.shape == (4, 3, 32, 32)


def test_size_for_pretrained_weights(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 3, "b": 3}, size=(64, 64))
    bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=2, pretrained_size=224)
    assert bundle.image_size == 224
    assert bundle.decisions["image_size"].startswith("224 px, the size the pretrained weights were trained at")
    assert bundle.decisions["normalization"] == "ImageNet's mean/std, which the pretrained weights expect"
    x, _ = next(iter(bundle.train))
    assert x.shape == (2, 3, 224, 224)


def test_explicit_options_win(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 6, "b": 6}, size=(64, 64))
    bundle = load_data(
        "imagefolder",
        data_dir=tmp_path,
        batch_size=2,
        image_size=40,
        pretrained_size=224,
        cache_budget=0,
        num_workers=0,
        flip=True,
    )
    assert bundle.image_size == 40 and bundle.decisions["image_size"].startswith("40 px, as given")
    assert bundle.cached is False and isinstance(bundle.train, StreamLoader)
    assert "(given)" in bundle.decisions["storage"] and "by 0 worker process(es) (given)" in bundle.decisions["storage"]
    assert bundle.train.flip is True and bundle.flip_invariant is True
    assert bundle.decisions["flip"].startswith("random horizontal flips in training (flip=True given)")


def test_no_flips_unless_asked(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 4, "b": 4})
    for budget in (None, 0):
        bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=2, image_size=8, cache_budget=budget)
        assert isinstance(bundle.train, (TensorLoader, StreamLoader))
        assert bundle.train.flip is False and bundle.train.augment is True and bundle.flip_invariant is False
        assert bundle.decisions["flip"].startswith("no horizontal flips: a flip can change what an image shows")


def test_cached_when_it_fits_streamed_over_budget(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 6, "b": 6}, size=(32, 32))
    fits = load_data("imagefolder", data_dir=tmp_path, batch_size=2)
    assert fits.cached is True and isinstance(fits.train, TensorLoader) and fits.train.images.dtype == torch.uint8
    assert "take 37.0 KB and fit the cache budget of" in fits.decisions["storage"]
    assert "of the " in fits.decisions["storage"] and "of memory available" in fits.decisions["storage"]
    assert "decoded once into memory (12 images in" in fits.decisions["storage"]
    nbytes = 12 * (3 * 32 * 32 + 8)
    over = load_data("imagefolder", data_dir=tmp_path, batch_size=2, cache_budget=nbytes - 1, num_workers=0)
    assert over.cached is False and isinstance(over.train, StreamLoader)
    assert over.decisions["storage"].startswith("the decoded images take 37.0 KB and do not fit the cache budget")
    exactly = load_data("imagefolder", data_dir=tmp_path, batch_size=2, cache_budget=nbytes)
    assert exactly.cached is True


def test_own_statistics_from_scratch(tmp_path: Path) -> None:
    _write_images(tmp_path, {"a": 6, "b": 6}, size=(32, 32))
    bundle = load_data("imagefolder", data_dir=tmp_path, batch_size=3, augment=False, val_fraction=0)
    assert bundle.decisions["normalization"].startswith("the training images' own mean/std, measured on 10 of them")
    xs = torch.cat([x for x, _ in bundle.train])
    assert abs(xs.mean().item()) < 0.1 and 0.9 < xs.std().item() < 1.1


# --------------------------------------------------------------------------------------------
# Cached and streamed: the same batches; resume exact with persistent workers


@pytest.mark.parametrize("num_workers", [0, 1])
def test_cached_and_streamed_give_the_same_batches(split_folder: Path, num_workers: int) -> None:
    common: dict[str, Any] = {"data_dir": split_folder, "batch_size": 5, "seed": 3, "flip": True}
    cached = load_data("imagefolder", **common)
    streamed = load_data("imagefolder", cache_budget=0, num_workers=num_workers, **common)
    assert cached.cached and not streamed.cached and cached.image_size == streamed.image_size == 32
    assert cached.decisions["normalization"] == streamed.decisions["normalization"]
    for epoch in (0, 1):
        cached.train.set_epoch(epoch)
        streamed.train.set_epoch(epoch)
        assert _same(_batches(cached.train), _batches(streamed.train))
    assert cached.val is not None and streamed.val is not None
    assert _same(_batches(cached.val), _batches(streamed.val))


def test_streamed_resume_with_persistent_workers(split_folder: Path) -> None:
    # Issue 15, defect 7: with persistent workers, a resumed run's epoch differed from the uninterrupted one's.
    common: dict[str, Any] = {"data_dir": split_folder, "batch_size": 4, "cache_budget": 0, "num_workers": 1}
    uninterrupted = load_data("imagefolder", **common).train
    epochs = [_batches(uninterrupted) for _ in range(3)]  # epochs 0, 1, 2 through the same persistent workers
    resumed = load_data("imagefolder", **common).train  # a new process: new workers, first iterator
    resumed.set_epoch(2)
    assert _same(_batches(resumed), epochs[2])
    resumed.set_epoch(2, start_batch=2)
    assert _same(_batches(resumed), epochs[2][2:])
    assert not _same(epochs[1], epochs[2])


def test_streamed_resume_skips_without_decoding(split_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = load_data("imagefolder", data_dir=split_folder, batch_size=4, cache_budget=0, num_workers=0)
    loader = bundle.train
    assert isinstance(loader, StreamLoader)
    decoded: list[int] = []
    real = ImageFiles.__getitem__
    monkeypatch.setattr(ImageFiles, "__getitem__", lambda self, i: (decoded.append(i), real(self, i))[1])
    loader.set_epoch(1, start_batch=4)
    assert len(_batches(loader)) == len(loader) - 4 == 2
    assert len(decoded) == 2 * 4  # only the two batches delivered were decoded
    with pytest.raises(Exception, match=r"0 <= start_batch <= 6, but got epoch=1, start_batch=7"):
        loader.set_epoch(1, start_batch=7)


def test_streaming_leaves_the_global_random_stream_alone(split_folder: Path) -> None:
    bundle = load_data("imagefolder", data_dir=split_folder, batch_size=4, cache_budget=0, num_workers=1)
    before = torch.get_rng_state()
    _batches(bundle.train)
    assert torch.equal(torch.get_rng_state(), before)  # a resumed run's model sees the same random numbers


def test_decode_is_shorter_side_and_centre_crop(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high
    pixels[:, 10:30] = 255  # a white centre square: what the centre crop keeps
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = decode_image(str(tmp_path / "wide.png"), 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out.min() > 200  # the black sides are cropped off (the edge blends a little: antialiasing)


def test_decode_turns_a_phone_photo_upright(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # stored sideways: white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = decode_image(str(tmp_path / "phone.jpg"), 10)
    assert out[:3].min() > 200 and out[-3:].max() < 60  # upright: white on top, black below
