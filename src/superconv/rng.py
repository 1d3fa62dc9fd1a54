"""The random number streams a run depends on, captured and restored as plain data (``weights_only``-loadable).

Used by the range test's exact restore and by training checkpoints, so both put back the same streams.
CUDA's streams are read only when CUDA is already in use: querying them would initialise CUDA (slow, and it
takes GPU memory) in a CPU run on a GPU machine.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """torch's CPU stream, CUDA's (when initialised), Python's ``random`` and numpy's global stream."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "random": _random_to_plain(random.getstate()),
        # numpy's key array as a tensor, so a checkpoint holding it loads with weights_only=True.
        "numpy": _numpy_to_plain(np.random.get_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: Mapping[str, Any]) -> None:
    """Put back the streams :func:`capture` returned (those it has: older states may lack some)."""
    torch.set_rng_state(state["torch"])
    if "random" in state:
        version, internal, gauss = state["random"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy(), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        # A run saved on a machine with more GPUs resumes on the ones this machine has.
        torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])


def _random_to_plain(state: Any) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (int(version), list(internal), gauss)


def _numpy_to_plain(state: Any) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = state
    return (str(name), torch.from_numpy(np.array(keys, copy=True)), int(pos), int(has_gauss), float(cached))
