"""Writing files atomically: a temporary file in the same folder, fsync, then a rename over the target.

A crash, a kill or a full disk mid-write never leaves a half-written file at the target path: a reader sees the
previous file or the new one. Checkpoints, metrics and every other file a run writes go through here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, then move it over ``path``.

    Parent folders are created. On any failure (also Ctrl-C) the temporary file is removed and the previous
    file at ``path``, if any, is untouched; ``OSError`` propagates for the caller to explain.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            # fsync before the rename: otherwise a power loss can leave the *renamed* file empty.
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # Persist the rename itself (the directory entry); not possible on every platform.
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def load_plain(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: plain data only, pickled code is refused without running it.

    torch's own warnings about the file (an old pickle protocol, say) are silenced: the callers turn any problem
    into one message of their own.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically, with NaN and infinities as ``null``."""
    return write_text(path, json.dumps(_finite(data), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
