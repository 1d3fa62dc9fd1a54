"""What an image folder is trained from, decided from the data and the machine: pure functions.

Each returns its value and one sentence that says why, for ``DataBundle.decisions`` (the CLI prints them and
records them in config.json). An explicit argument always wins over a decision.

Image size, for a model trained from scratch: the images' typical (median) shorter side, rounded to a multiple
of :data:`SIZE_STEP`, at least :data:`MIN_IMAGE_SIZE` and at most :data:`MAX_SCRATCH_SIZE` for the device:

* at least 32 px: torchvision's classifiers downsample 32x, and the built-ins' three poolings leave a 4x4 map
  at 32 px (they run down to 8 px, but nothing is gained below 32 for a photo);
* at most 32 px on a CPU: a step's cost grows with the pixels - resnet-small width 16, batch 256, bf16 on a
  2-core AVX-512 CPU: 0.27 s at 32 px, 0.58 s at 48 px, 1.04 s at 64 px (3.8x) - and a small network trained
  from scratch in minutes gains less from the extra pixels than from the extra updates the time buys;
* at most 128 px on a GPU (not measured yet: a guess that a GPU step stays cheap up to there).

With pretrained weights the images are used at the size the weights were trained at (224 px for torchvision's
ImageNet weights), whatever their own size: the features were learnt at that scale.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "CACHE_FRACTION",
    "MAX_SCRATCH_SIZE",
    "MIN_IMAGE_SIZE",
    "RESIDENT_MAX_FRACTION",
    "SIZE_STEP",
    "available_memory",
    "choose_cache",
    "default_cache_budget",
    "fits_on_device",
    "human_bytes",
    "infer_image_size",
    "stream_workers",
]

SIZE_STEP = 8  # px; sizes are rounded to a multiple of this
MIN_IMAGE_SIZE = 32  # px
MAX_SCRATCH_SIZE = {"cpu": 32, "accelerator": 128}  # px, for a model trained from scratch
# The decoded images may take this fraction of the available memory by default: the rest is for the model,
# its activations, the optimizer and the other programs on the machine.
CACHE_FRACTION = 0.25
# DataLoader workers when streaming to a GPU: enough to decode ahead of a fast device, not one per core.
MAX_GPU_WORKERS = 8


def _scratch_cap(device_type: str) -> int:
    return MAX_SCRATCH_SIZE["cpu" if device_type == "cpu" else "accelerator"]


def infer_image_size(
    shorter_sides: Sequence[int],
    *,
    device_type: str,
    pretrained_size: int | None = None,
    explicit: int | None = None,
) -> tuple[int, str]:
    """The square side to train at, and why.

    Args:
        shorter_sides: the shorter side of every (or a sample of the) training image(s), from their headers.
        device_type: ``"cpu"``, ``"cuda"``, ``"mps"``...: sets the from-scratch cap.
        pretrained_size: the side the model's pretrained weights were trained at (None: from scratch).
        explicit: the side the user asked for; it wins.
    """
    typical = round(statistics.median(shorter_sides)) if shorter_sides else None
    seen = f"the images' typical (median) shorter side is {typical} px" if typical else "no image sizes were read"
    if explicit is not None:
        return explicit, f"{explicit} px, as given ({seen})"
    if pretrained_size is not None:
        return pretrained_size, f"{pretrained_size} px, the size the pretrained weights were trained at ({seen})"
    if typical is None:
        return MIN_IMAGE_SIZE, f"{MIN_IMAGE_SIZE} px ({seen})"
    rounded = max(SIZE_STEP, SIZE_STEP * math.floor(typical / SIZE_STEP + 0.5))
    cap = _scratch_cap(device_type)
    size = min(max(rounded, MIN_IMAGE_SIZE), cap)
    why = f"{size} px: {seen}"
    if rounded > cap:
        device = "a CPU" if device_type == "cpu" else "a GPU"
        why += f", capped at {cap} px for a model trained from scratch on {device} (cost grows with the pixels)"
    elif rounded < MIN_IMAGE_SIZE:
        why += f", raised to {MIN_IMAGE_SIZE} px, the smallest size every model takes"
    elif size != typical:
        why += f", rounded to a multiple of {SIZE_STEP}"
    return size, f"{why}; pass image_size (--image-size) to choose"


def available_memory() -> int | None:
    """Bytes of memory this process can still use without swapping (Linux: MemAvailable, within a cgroup limit)."""
    available: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        available = None
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # a container's limit (cgroup v2) can be far below the machine's memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def default_cache_budget() -> tuple[int, str]:
    """:data:`CACHE_FRACTION` of the available memory, and how it was found."""
    available = available_memory()
    if available is None:
        return 0, "the available memory is unknown, so no cache"
    budget = int(available * CACHE_FRACTION)
    return budget, f"{CACHE_FRACTION:.0%} of the {human_bytes(available)} of memory available"


def choose_cache(nbytes: int, budget: int, budget_source: str) -> tuple[bool, str]:
    """Whether ``nbytes`` of decoded images fit the cache ``budget``, and a sentence saying so."""
    fits = nbytes <= budget
    verb = "fit" if fits else "do not fit"
    return fits, (
        f"the decoded images take {human_bytes(nbytes)} and {verb} the cache budget of {human_bytes(budget)} "
        f"({budget_source})"
    )


def stream_workers(device_type: str, cpus: int) -> int:
    """DataLoader workers for streaming: most cores for a GPU; half of them on a CPU, which trains on the rest."""
    if device_type == "cpu":
        return max(1, cpus // 2)
    return max(1, min(MAX_GPU_WORKERS, cpus - 1))


def human_bytes(nbytes: float) -> str:
    """``nbytes`` as ``950 B``, ``12.3 MB`` or ``4.1 GB`` (decimal units)."""
    if nbytes < 1000:
        return f"{nbytes:.0f} B"
    for unit in ("KB", "MB"):
        nbytes /= 1000
        if nbytes < 1000:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1000:.1f} GB"


# Device-resident data may take at most this fraction of the free GPU memory: the rest is for the model, its
# activations and the optimizer state.
RESIDENT_MAX_FRACTION = 0.25


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of data may live on ``device`` (sized against its free memory before any copy)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_MAX_FRACTION * free
