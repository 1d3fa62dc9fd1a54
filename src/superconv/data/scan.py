"""What an image folder holds: its split folders, classes and image files, and which files cannot be read.

The layout is ``DIR/train/<class>/<image>`` (optionally ``DIR/val/`` and ``DIR/test/`` with the same class
folders), or ``DIR/<class>/<image>``. Image files are found by extension (torchvision's ``IMG_EXTENSIONS``);
hidden files and folders (names starting with ``.``, e.g. ``.ipynb_checkpoints`` or macOS ``._photo.jpg``) are
not images of the data set and are ignored. Every file's header is then read, in parallel, so that every bad file
is reported at once, before any training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from superconv.data.images import read_sizes, thread_count
from superconv.errors import DataError

__all__ = ["BAD_FILES_SHOWN", "LAYOUT", "SPLITS", "Files", "bad_files_error", "check_headers", "scan_folder"]

LAYOUT = (
    "DIR/train/<class>/<image> (optionally DIR/val/<class>/... and DIR/test/<class>/...), or "
    "DIR/<class>/<image> with at least 2 class folders"
)
SPLITS = ("train", "val", "test")
# Bad files named in the error message; the rest are counted.
BAD_FILES_SHOWN = 5


@dataclass
class Files:
    """Image files and their class indices."""

    paths: list[str]
    labels: np.ndarray  # int64

    def take(self, index: np.ndarray) -> Files:
        return Files([self.paths[i] for i in index], self.labels[index])

    def __len__(self) -> int:
        return len(self.paths)


def _check_root(root: Path) -> bool:
    """Whether ``root`` has split folders; raises DataError for a folder that cannot be used."""
    if not root.exists():
        raise DataError(f"The image folder {root} does not exist or is not a directory; expected layout: {LAYOUT}")
    if not root.is_dir():
        raise DataError(f"Expected --data-dir to be a folder, but {root} is a file; expected layout: {LAYOUT}")
    for split in SPLITS:
        if (root / split).exists() and not (root / split).is_dir():
            raise DataError(
                f"Expected {root / split} to be a folder of class folders, but it is a file; "
                f"move or rename it (expected layout: {LAYOUT})"
            )
    has_splits = (root / "train").is_dir()
    others = [s for s in ("val", "test") if (root / s).is_dir()]
    if others and not has_splits:
        raise DataError(
            f"{root} has {' and '.join(f'{s}/' for s in others)} but no train/ folder; add {root / 'train'} "
            f"with the training images (expected layout: {LAYOUT})"
        )
    return has_splits


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _list_files(path: Path) -> tuple[list[str], Files]:
    """The class folders of ``path`` and their image files (by extension), sorted."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

    try:
        classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and _visible(e.name))
    except OSError as exc:
        raise DataError(f"Cannot read the folder {path} ({exc}); check its permissions") from exc
    if len(classes) < 2:
        raise DataError(
            f"Expected at least 2 class folders in {path}, but found {len(classes)} "
            f"({', '.join(classes) or 'none'}); expected layout: {LAYOUT}"
        )

    def is_image(file: str) -> bool:
        return _visible(os.path.basename(file)) and has_file_allowed_extension(file, IMG_EXTENSIONS)

    try:
        found = make_dataset(str(path), {c: i for i, c in enumerate(classes)}, is_valid_file=is_image)
    except FileNotFoundError as exc:  # a class folder without any image file
        raise DataError(
            f"Cannot use {path} as an image folder ({exc}); every class folder needs image files "
            f"({', '.join(IMG_EXTENSIONS)}); expected layout: {LAYOUT}"
        ) from exc
    return classes, Files([p for p, _ in found], np.array([c for _, c in found], dtype=np.int64))


def scan_folder(root: Path) -> tuple[bool, list[str], dict[str, Files]]:
    """``(has_splits, classes, files per split folder)``; the split folders must have the same classes."""
    has_splits = _check_root(root)
    if not has_splits:
        classes, files = _list_files(root)
        return False, classes, {"train": files}
    classes, train = _list_files(root / "train")
    found = {"train": train}
    for split in ("val", "test"):
        if (root / split).is_dir():
            split_classes, found[split] = _list_files(root / split)
            if split_classes != classes:
                raise DataError(
                    f"The classes of {root / split} ({', '.join(split_classes)}) differ from those of "
                    f"{root / 'train'} ({', '.join(classes)}); every split needs the same class folders"
                )
    return True, classes, found


def bad_files_error(root: Path, bad: dict[str, str], total: int) -> DataError:
    shown = "; ".join(f"{path} ({reason})" for path, reason in list(bad.items())[:BAD_FILES_SHOWN])
    more = f"; and {len(bad) - BAD_FILES_SHOWN} more" if len(bad) > BAD_FILES_SHOWN else ""
    return DataError(
        f"{len(bad)} of the {total} image files in {root} cannot be read as images: {shown}{more}. "
        "Delete or replace them, or pass --skip-bad-images (skip_bad_images=True) to train without them"
    )


def check_headers(
    root: Path, split_files: dict[str, Files], skip: bool
) -> tuple[dict[str, Files], list[int], dict[str, str]]:
    """Every file's header, read in parallel: ``(good files per split, training images' shorter sides, bad)``."""
    paths = [p for files in split_files.values() for p in files.paths]
    sizes, bad_index = read_sizes(paths, thread_count())
    bad = {paths[i]: reason for i, reason in bad_index.items()}
    if bad and not skip:
        raise bad_files_error(root, bad, len(paths))
    good: dict[str, Files] = {}
    sides: list[int] = []
    offset = 0
    for split, files in split_files.items():
        keep = np.array([i for i in range(len(files)) if offset + i not in bad_index], dtype=np.int64)
        if split == "train":
            sides = [min(sizes[offset + i]) for i in keep]
        good[split] = files.take(keep)
        offset += len(files)
    return good, sides, bad
