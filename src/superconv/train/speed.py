"""How fast this machine trains this model, measured: seconds per optimizer update and per evaluated example, and
the fastest numeric format on the CPU (bf16 autocast or fp32, channels_last or not) chosen by timing each.

Measurements run on a copy of the model with a fresh optimizer of the same kind, so the caller's model, optimizer
and RNG streams are untouched. The CPU format choice is cached per machine, torch version, thread count and model
shape (``~/.cache/superconv/speed.json``; ``SUPERCONV_CACHE_DIR`` moves it), since it never changes between runs
of the same model on the same machine.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superconv import rng
from superconv.files import write_json
from superconv.train.evaluation import autocast, eval_logits

#: CPU formats tried when precision and channels_last are "auto": (autocast dtype, channels_last).
CPU_CANDIDATES: tuple[tuple[torch.dtype | None, bool], ...] = (
    (None, False),
    (None, True),
    (torch.bfloat16, False),
    (torch.bfloat16, True),
)
WARMUP_UPDATES = 2  # not timed: first-call allocations, kernel selection
MARGIN = 0.1  # another format replaces fp32 (or the first candidate) only when this much faster
PRUNE = 2.0  # a format this many times slower than the fastest timed so far is not timed further: it cannot win
TIMED_UPDATES = 4


@dataclass(frozen=True)
class Format:
    """A numeric format to train in and what one optimizer update costs in it."""

    autocast_dtype: torch.dtype | None
    channels_last: bool
    seconds_per_update: float

    @property
    def name(self) -> str:
        dtype = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]
        return dtype + (" + channels_last" if self.channels_last else "")


def _batches(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


@contextlib.contextmanager
def _same_epoch(loader: Any) -> Iterator[None]:
    """Iterating superconv's loaders moves them to their next epoch; put them back where they were."""
    epoch = getattr(loader, "epoch", None)
    try:
        yield
    finally:
        if isinstance(epoch, int) and hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)


def time_updates(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Any],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    updates: int = TIMED_UPDATES,
    give_up_after: float | None = None,
) -> float:
    """Median seconds of one training update (data, forward, backward, optimizer step) in the given format.

    The loss is the mean of the outputs: the user's criterion (which may count its calls) is not called, and its
    cost is negligible next to the model's. With ``give_up_after``, a format whose last warm-up update already
    takes longer than that many seconds is not timed further, and that update's time is returned (bf16 emulated
    on a CPU without native bf16 is ten times slower: timing it in full would cost a minute for nothing).
    """
    saved_rng = rng.capture()
    probe = copy.deepcopy(model).train()
    if channels_last:
        probe.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        opt = type(optimizer)(probe.parameters(), **optimizer.defaults)
    except TypeError:  # an optimizer whose constructor does not take its own defaults back: time with SGD
        opt = torch.optim.SGD(probe.parameters(), lr=1e-3, momentum=0.9)
    times: list[float] = []
    batches = _batches(loader)
    try:
        with _same_epoch(loader):
            for i in range(WARMUP_UPDATES + updates):
                t0 = time.perf_counter()
                inputs, _labels = next(batches)
                inputs = inputs.to(device)
                if channels_last and inputs.ndim == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with autocast(device, autocast_dtype):
                    loss = probe(inputs).float().mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = time.perf_counter() - t0
                if i >= WARMUP_UPDATES:
                    times.append(elapsed)
                elif i == WARMUP_UPDATES - 1 and give_up_after is not None and elapsed > give_up_after:
                    return elapsed
    finally:
        rng.restore(saved_rng)
    return _median(times)


@torch.no_grad()
def time_eval(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    tta: bool,
    batches: int = 2,
) -> float:
    """Seconds per example of evaluating ``model`` on ``loader``'s batches (after one untimed batch)."""
    was_training = model.training
    model.eval()
    seconds, examples = 0.0, 0
    try:
        with _same_epoch(loader):
            for i, (inputs, _labels) in enumerate(loader):
                t0 = time.perf_counter()
                eval_logits(model, inputs, device, autocast_dtype, channels_last, tta)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i > 0:
                    seconds += time.perf_counter() - t0
                    examples += inputs.shape[0]
                if i >= batches:
                    break
    finally:
        model.train(was_training)
    return seconds / examples if examples else 0.0


def fastest_cpu_format(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Any],
    candidates: tuple[tuple[torch.dtype | None, bool], ...] = CPU_CANDIDATES,
    cache_dir: Path | None = None,
    rounds: int = 3,
) -> tuple[Format, bool, str]:
    """The fastest of ``candidates`` on this CPU for this model, whether it came from the cache, and how it was
    chosen (in words).

    The candidates are timed in ``rounds`` interleaved rounds (so a burst of load elsewhere hits all of them) and
    compared by their median. The first candidate (fp32) is the reference: another one is chosen only when it is
    at least :data:`MARGIN` faster, so noise never trades fp32's accuracy for nothing. A candidate more than
    :data:`PRUNE` times slower than the fastest timed so far is dropped at once (it cannot win by the margin), so
    a slow format costs about two updates instead of a dozen; bf16 is not timed at all where one forward pass
    already shows it that much slower (:func:`screen_bf16`). The cached choice is timed again (one format), so
    the returned speed is always this run's.
    """
    device = torch.device("cpu")
    key = _cache_key(model, loader, candidates)
    path = _cache_path(cache_dir)
    cached = _read_cache(path).get(key)
    if cached is not None:
        dtype = torch.bfloat16 if cached["precision"] == "bf16" else None
        seconds = time_updates(model, optimizer, loader, device, dtype, bool(cached["channels_last"]))
        return Format(dtype, bool(cached["channels_last"]), seconds), True, "cached choice, timed again"
    candidates, bf16_ratio = screen_bf16(model, loader, candidates)  # the cache key keeps the candidates asked for
    samples: dict[int, list[float]] = {i: [] for i in range(len(candidates))}
    for _ in range(rounds):
        for i, (dtype, layout) in enumerate(candidates):
            fastest = min((_median(s) for s in samples.values() if s), default=None)
            limit = None if fastest is None else PRUNE * fastest
            if limit is not None and samples[i] and _median(samples[i]) > limit:
                continue  # already far slower than another format: timing it again cannot change the choice
            samples[i].append(time_updates(model, optimizer, loader, device, dtype, layout, 2, give_up_after=limit))
    timed = [Format(d, cl, _median(samples[i])) for i, (d, cl) in enumerate(candidates)]
    best = timed[0]
    for other in timed[1:]:
        if other.seconds_per_update < (1.0 - MARGIN) * best.seconds_per_update:
            best = other
    entry: dict[str, Any] = {
        "precision": "bf16" if best.autocast_dtype is torch.bfloat16 else "fp32",
        "channels_last": best.channels_last,
        "seconds_per_update": {f.name: f.seconds_per_update for f in timed},
    }
    how = f"fastest of {len(timed)} timed on this CPU"
    if bf16_ratio is not None:
        entry["bf16_forward_ratio"] = bf16_ratio  # bf16's forward time over fp32's; above PRUNE: bf16 not timed
        if bf16_ratio > PRUNE:
            how += f"; bf16 not timed: a forward pass in bf16 took {bf16_ratio:.1f} times fp32's"
    _write_cache(path, key, entry)
    return best, False, how


@torch.no_grad()
def screen_bf16(
    model: nn.Module, loader: Iterable[Any], candidates: tuple[tuple[torch.dtype | None, bool], ...]
) -> tuple[tuple[tuple[torch.dtype | None, bool], ...], float | None]:
    """``candidates`` without the bf16 ones when a forward pass in bf16 is more than :data:`PRUNE` times slower
    than in fp32 (a CPU that emulates bf16: ten times slower), and that ratio (``None`` when nothing was screened).

    One forward pass of a batch in each, timed the second time (the first creates the kernels), costs far less
    than the warm-up updates each bf16 format would otherwise take before being dropped.
    """
    if not any(dtype is torch.bfloat16 for dtype, _ in candidates) or not any(d is None for d, _ in candidates):
        return candidates, None
    device = torch.device("cpu")
    saved_rng = rng.capture()
    probe = copy.deepcopy(model).eval()
    seconds: dict[torch.dtype | None, float] = {}
    try:
        with _same_epoch(loader):
            inputs = next(iter(loader))[0].to(device)
        for dtype in (None, torch.bfloat16):
            for _ in range(2):
                t0 = time.perf_counter()
                with autocast(device, dtype):
                    probe(inputs)
                seconds[dtype] = time.perf_counter() - t0
    finally:
        rng.restore(saved_rng)
    ratio = seconds[torch.bfloat16] / max(seconds[None], 1e-9)
    if ratio > PRUNE:
        return tuple(c for c in candidates if c[0] is not torch.bfloat16), ratio
    return candidates, ratio


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _cache_path(cache_dir: Path | None) -> Path:
    root = cache_dir or Path(os.environ.get("SUPERCONV_CACHE_DIR", "~/.cache/superconv")).expanduser()
    return root / "speed.json"


def _cache_key(model: nn.Module, loader: Iterable[Any], candidates: tuple[Any, ...]) -> str:
    inputs, _ = next(iter(loader))
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    described = json.dumps(
        {
            "cpu": _cpu_signature(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "model": [type(model).__name__, shapes],
            "input": list(inputs.shape),
            "candidates": [(str(d), cl) for d, cl in candidates],
        },
        sort_keys=True,
    )
    return hashlib.sha256(described.encode()).hexdigest()[:24]


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return hashlib.sha256("\n".join(sorted(set(lines))).encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or an unreadable one: measure again (and rewrite it)
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    data = _read_cache(path)
    data[key] = entry
    with contextlib.suppress(OSError):  # a read-only home: the choice is simply measured again next time
        write_json(path, data)
