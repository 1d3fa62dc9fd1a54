"""One epoch's batches as numbers, and the batch transform (crop, flip, normalize) that both loaders share.

:class:`~superconv.data.loaders.TensorLoader` (images in memory) and
:class:`~superconv.data.loaders.StreamLoader` (images decoded from disk per batch) take an epoch's order and
each batch's augmentation from here, and apply the same :class:`BatchTransform` to the same uint8 pixels: the
same data, seed and epoch give the same batches on either path.

All randomness comes from CPU generators seeded from ``(seed, epoch)`` (:mod:`superconv.data.seeding`): the
order from stream :data:`ORDER_STREAM`, the augmentation from stream :data:`AUGMENT_STREAM`, drawn batch by
batch, skipped batches included, so that a run resumed at a batch sees the crops it would have seen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from superconv.data.seeding import epoch_generator
from superconv.device import canonical_device

__all__ = [
    "AUGMENT_STREAM",
    "ORDER_STREAM",
    "Augmentation",
    "BatchTransform",
    "epoch_order",
    "num_batches",
    "shard_bounds",
]

ORDER_STREAM = 0
AUGMENT_STREAM = 1


def num_batches(n: int, batch_size: int, drop_last: bool, world_size: int = 1) -> int:
    """Batches per epoch over ``n`` examples; split over ``world_size`` processes, a last partial batch too small
    to give every process an example is left out (every process must train on every batch)."""
    full, rest = divmod(n, batch_size)
    if drop_last or rest == 0:
        return full
    return full + (1 if rest >= world_size else 0)


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """The part ``[start, stop)`` of a batch of ``count`` examples that process ``rank`` of ``world_size`` takes.

    The global batch is cut into consecutive parts of ``ceil(count / world_size)`` examples: ``world_size``
    processes together see exactly the batch one process would (and equal parts when it divides evenly).
    """
    part = math.ceil(count / world_size)
    return min(rank * part, count), min((rank + 1) * part, count)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> Tensor:
    """The example indices of epoch ``epoch`` in the order they are batched: a seeded permutation, or in order."""
    if shuffle:
        return torch.randperm(n, generator=epoch_generator(seed, epoch, ORDER_STREAM))
    return torch.arange(n)


@contextlib.contextmanager
def single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed CPU tensor ops on one intra-op thread.

    A batch is ~10^5 elements: too small to gain from threads, yet big enough that torch splits
    each op across them. On a busy machine (more runnable threads than cores) every split op
    then waits a scheduler tick for its second thread - measured here on 2 shared cores: 8 ms
    per op, 1-8 s per Fashion-MNIST epoch instead of 0.1 s. Switching is cheap (~0.2 us).
    """
    previous = torch.get_num_threads()
    if not enabled or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _reflect(index: Tensor, size: int) -> Tensor:
    """Map out-of-range pixel indices back into ``[0, size)`` by mirroring at the borders.

    Equivalent to reflect padding followed by a crop, but without materialising the padded batch.
    Valid for offsets up to ``size - 1``.
    """
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


@dataclass(frozen=True)
class Augmentation:
    """One batch's random crop offsets (pixels, per image) and horizontal flips, drawn on the CPU."""

    dy: Tensor
    dx: Tensor
    flips: Tensor

    def part(self, start: int, stop: int) -> Augmentation:
        """The augmentation of the images ``start:stop`` of the batch (a process's share of it)."""
        return Augmentation(self.dy[start:stop], self.dx[start:stop], self.flips[start:stop])


class BatchTransform:
    """uint8 ``(B, C, H, W)`` batch on the device -> augmented, normalized float batch.

    Args:
        mean, std: per-channel statistics in [0, 1] units used to normalize the inputs.
        device: where the batches are delivered (and the transform runs).
        augment: random crop with reflect padding ``pad`` (and a flip when ``flip``).
        pad: the crop padding in pixels.
        flip: random horizontal flips when augmenting.
        output_size: resize batches to this square side (bilinear); None keeps the stored size.
    """

    def __init__(
        self,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device,
        augment: bool,
        pad: int,
        flip: bool,
        output_size: int | None,
    ) -> None:
        self.device = canonical_device(device)
        self.augment = augment
        self.pad = pad
        self.flip = flip
        self.output_size = output_size
        # Normalization folded into one multiply-add in uint8 units: x * scale + shift.
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=self.device).view(1, -1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=self.device).view(1, -1, 1, 1)

    def draws(self, seed: int, epoch: int, n: int, batch_size: int, batches: int) -> Iterator[Augmentation | None]:
        """The augmentation of every batch of epoch ``epoch`` in turn (None when not augmenting)."""
        gen = epoch_generator(seed, epoch, AUGMENT_STREAM)
        for b in range(batches):
            yield self._draw(gen, min(batch_size, n - b * batch_size)) if self.augment else None

    def _draw(self, gen: torch.Generator, count: int) -> Augmentation:
        span = 2 * self.pad + 1
        dy = torch.randint(0, span, (count,), generator=gen) - self.pad
        dx = torch.randint(0, span, (count,), generator=gen) - self.pad
        flips = torch.rand(count, generator=gen) < 0.5 if self.flip else torch.zeros(count, dtype=torch.bool)
        return Augmentation(dy, dx, flips)

    def __call__(self, x: Tensor, augmentation: Augmentation | None) -> Tensor:
        if augmentation is not None:
            x = self._augment(x, augmentation)
        return self._normalize(x)

    def _augment(self, x: Tensor, aug: Augmentation) -> Tensor:
        """Random crop (reflect padding) and horizontal flip of a whole batch in one gather."""
        b, c, h, w = x.shape
        dev = x.device
        dy, dx, flips = aug.dy.to(dev, non_blocking=True), aug.dx.to(dev, non_blocking=True), aug.flips.to(dev)
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = _reflect(ar_h.unsqueeze(0) + dy.unsqueeze(1), h)  # (B, H)
        # A flipped image reads its columns right to left; fold the flip into the column index.
        cols_src = torch.where(flips.unsqueeze(1), (w - 1 - ar_w).unsqueeze(0), ar_w.unsqueeze(0))
        cols = _reflect(cols_src + dx.unsqueeze(1), w)  # (B, W)
        flat = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
        return torch.gather(x.reshape(b, c, h * w), 2, flat).view(b, c, h, w)

    def _normalize(self, x: Tensor) -> Tensor:
        out = torch.addcmul(self._shift, x.float(), self._scale)
        if self.output_size is not None and self.output_size != out.shape[-1]:
            shrinking = self.output_size < out.shape[-1]
            out = F.interpolate(out, size=(self.output_size, self.output_size), mode="bilinear", antialias=shrinking)
        return out
