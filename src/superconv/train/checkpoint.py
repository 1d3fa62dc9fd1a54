"""Atomic, safe checkpoints.

A checkpoint is plain data (tensors, dicts, lists, tuples, numbers, strings, None) so that it
loads with ``torch.load(..., weights_only=True)``, which refuses to run arbitrary pickled code.
Saving writes to a temporary file in the same directory, fsyncs it and then ``os.replace``-s it
over the target, so a crash or a full disk mid-save never leaves a half-written file at the
target path: a resumed run sees either the previous checkpoint or the new one.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superconv.errors import CheckpointError
from superconv.files import atomic_write, load_plain

__all__ = ["load_checkpoint", "save_checkpoint", "state_on_cpu"]

# The leaf types that ``torch.load(weights_only=True)`` accepts without extra allow-listing.
# Compared by exact type for the scalars: numpy's float64 *is* a float subclass, yet it pickles
# as a numpy global that weights_only loading refuses.
_PLAIN_SCALARS = (str, bytes, int, float, bool, complex, type(None))
_PLAIN_OBJECTS = (torch.Tensor, torch.Size, torch.dtype)


class _NotPlainError(Exception):
    """A value that a weights_only load would refuse; the message says where it is."""


def _to_plain(value: Any, where: str) -> Any:
    """Return ``value`` with numpy scalars turned into Python scalars, or raise _NotPlainError.

    Containers are rebuilt only when something inside them changed, so a state dict keeps its
    type and its ``_metadata`` (BatchNorm uses it when loading).
    """
    if type(value) in _PLAIN_SCALARS or isinstance(value, _PLAIN_OBJECTS):
        return value
    if isinstance(value, np.generic) and isinstance(value.item(), _PLAIN_SCALARS):
        return value.item()  # e.g. a metric computed with numpy
    if isinstance(value, dict):
        changed = {}
        for key, item in value.items():
            if type(key) not in _PLAIN_SCALARS:
                raise _NotPlainError(f"key {key!r} of {where} is a {type(key).__qualname__}")
            plain = _to_plain(item, f"{where}[{key!r}]")
            if plain is not item:
                changed[key] = plain
        if not changed:
            return value
        return {key: changed.get(key, item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)) and type(value) in (list, tuple, set):
        items = [_to_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(items)
    raise _NotPlainError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}")


def state_on_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict in host memory (detached; the module keeps training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically.

    The payload must be plain data (see the module docstring); anything else is refused here,
    at save time, rather than when a resumed run can no longer load it. Numpy scalars (a
    ``np.float64`` metric, say) are stored as the equivalent Python numbers. Parent directories are
    created. On any failure the previous file at ``path`` (if any) is untouched and no temporary
    file is left behind.

    Raises:
        CheckpointError: the payload is not a dict of plain data, or the file cannot be written.
    """
    target = Path(path)
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"Expected the checkpoint payload to be a dict, but got a {type(payload).__qualname__}; "
            "wrap it, e.g. {'model': model.state_dict()}"
        )
    try:
        payload = _to_plain(payload, "payload")
    except _NotPlainError as problem:
        raise CheckpointError(
            f"Cannot save a checkpoint to {target}: {problem}. Checkpoints hold plain data only "
            "(tensors, dicts, lists, tuples, numbers, strings, None) so they load with "
            "weights_only=True; convert it first (e.g. .state_dict(), .tolist(), str(...))"
        ) from None
    try:
        atomic_write(target, lambda handle: torch.save(payload, handle))
    except OSError as exc:
        raise CheckpointError(
            f"Could not write the checkpoint {target}: {exc}. The previous checkpoint (if any) is "
            "intact; check free disk space and permissions, then save again"
        ) from exc


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, is not a readable torch checkpoint, holds objects
            other than plain data, or is not a dict.
    """
    source = Path(path)
    if not source.exists():
        raise CheckpointError(
            f"No checkpoint at {source}: the file does not exist. Check the path, or start the run without resuming"
        )
    if not source.is_file():
        raise CheckpointError(f"Expected {source} to be a checkpoint file, but it is a directory or special file")
    try:
        payload = load_plain(source, map_location=map_location)
    except pickle.UnpicklingError as exc:
        # torch reports both a refused class and plain garbage as "Weights only load failed";
        # only the former names the global it refused.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise CheckpointError(
                f"Refusing to load {source}: it contains a pickled {refused.group(1)} object, not only "
                "plain data (tensors, dicts, lists, numbers, strings), and superconv loads checkpoints "
                "with weights_only=True for safety. Re-save it with only plain data, e.g. "
                "{'model': model.state_dict()}"
            ) from exc
        raise CheckpointError(_corrupt_message(source, exc)) from exc
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as exc:
        raise CheckpointError(_corrupt_message(source, exc)) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"Expected the checkpoint {source} to hold a dict, but it holds a {type(payload).__qualname__}; "
            "it was not written by superconv. Save one with superconv.train.checkpoint.save_checkpoint"
        )
    return payload


def _corrupt_message(source: Path, exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch's unpickler puts the actual reason after a long preamble; keep the short part.
    detail = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else type(exc).__name__)
    return (
        f"Cannot read the checkpoint {source}: it is corrupt, truncated, or not a torch checkpoint "
        f"({detail}). Delete it and resume from an earlier checkpoint, or start the run again"
    )
