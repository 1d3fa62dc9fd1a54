"""Fast loaders for in-memory datasets, and a tuned DataLoader for image folders.

Two kinds of loader share one small interface (:class:`Loader`: ``__iter__`` yielding
``(inputs, labels)`` on the target device, ``__len__`` = batches per epoch, ``set_epoch``,
``dataset_size``, ``batch_size``):

* :class:`TensorLoader` - the fast path for datasets that fit in memory (Fashion-MNIST, CIFAR-10,
  digits). The whole split is one uint8 NCHW tensor, resident on the GPU when it fits (as in
  airbench), and every batch is gathered, augmented (random crop with reflect padding, horizontal
  flip) and normalized with batched tensor ops on the device: no per-image Python, no worker
  processes, no float copy of the data set.
* :class:`StreamLoader` - a tuned ``torch.utils.data.DataLoader`` over a torchvision
  ``ImageFolder`` for the user's own images.

All shuffling and augmentation randomness of a :class:`TensorLoader` comes from CPU generators
seeded from ``(seed, epoch)``, so an epoch's batches are a pure function of those two numbers on
any device: a resumed run sees exactly the batches the interrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from superconv.device import canonical_device, same_device
from superconv.errors import ConfigError, DataError

__all__ = ["Loader", "StreamLoader", "TensorLoader"]


class Loader(Protocol):
    """What the training loop needs from a loader."""

    batch_size: int
    dataset_size: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


# --------------------------------------------------------------------------------------------
# Seeding


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed that depends on (seed, epoch, stream) and nothing else.

    SeedSequence mixes the numbers well, so neighbouring epochs and seeds give unrelated streams
    (``seed + epoch`` would make seed 1/epoch 0 replay seed 0/epoch 1).
    """
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, stream]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch, stream))


# --------------------------------------------------------------------------------------------
# The fast path: uint8 tensors, on-device augmentation


@contextlib.contextmanager
def _single_threaded(enabled: bool = True) -> Iterator[None]:
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


class TensorLoader:
    """Batches from in-memory uint8 NCHW images; augmentation and normalization on the device.

    Args:
        images: uint8 tensor ``(N, C, H, W)``; on ``device`` (resident) or on the host.
        labels: int64 tensor ``(N,)`` on the same device as ``images``.
        batch_size: examples per batch.
        mean, std: per-channel statistics in [0, 1] units used to normalize the inputs.
        device: where the batches are delivered.
        shuffle: draw batches from a seeded permutation (training) or in order (evaluation).
        drop_last: drop the last partial batch so that every step has a full batch.
        augment: random crop with reflect padding ``pad`` (and a flip when ``flip``) per batch.
        pad: the crop padding in pixels (2 for 28 px, 4 for 32 px images is standard).
        flip: random horizontal flips when augmenting.
        seed: the shuffle and the augmentation are functions of ``(seed, epoch)`` only.
        output_size: resize batches to this square side on the device (bilinear); None keeps
            the stored size. Storing at the native size keeps memory small.

    Iterating without calling :meth:`set_epoch` uses epochs 0, 1, 2, ... in turn; calling
    ``set_epoch(e)`` makes the next iteration epoch ``e`` (what a resumed run does).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        augment: bool = False,
        pad: int = 0,
        flip: bool = False,
        seed: int = 0,
        output_size: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"Expected images as a uint8 tensor of shape (N, C, H, W), but got {images.dtype} "
                f"with shape {tuple(images.shape)}; convert with (x * 255).round().to(torch.uint8)"
            )
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"Expected one label per image ({images.shape[0]}), but got labels of shape {tuple(labels.shape)}"
            )
        _check_positive_int("batch_size", batch_size, DataError)
        n = int(images.shape[0])
        if drop_last and batch_size > n:
            raise DataError(
                f"The batch size {batch_size} is larger than the {n} training examples, so an epoch "
                f"would have no full batch; use --batch-size {_pow2_at_most(n)} or smaller (or more data)"
            )
        if n == 0:
            raise DataError("Expected at least one example in the split, but it is empty")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"Expected {channels} per-channel mean/std values, but got {len(mean)} and {len(std)}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.dataset_size = n
        self.device = canonical_device(device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.pad = pad
        self.flip = flip
        self.seed = seed
        self.output_size = output_size
        self.epoch = 0
        self._start_batch = 0
        self.resident = same_device(images.device, self.device)
        if not self.resident and images.device.type != "cpu":
            raise DataError(
                f"The images are on {images.device} but the loader delivers to {self.device}: keep them in host "
                f"memory (streamed to the device per batch) or move them to {self.device} (resident)"
            )
        # Normalization folded into one multiply-add in uint8 units: x * scale + shift.
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=self.device).view(1, -1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=self.device).view(1, -1, 1, 1)
        # Pinned staging buffers for host-resident data on CUDA (created on first use).
        self._staging: list[Tensor] = []
        self._staging_events: list[Any] = []
        self._slot = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.dataset_size // self.batch_size
        return math.ceil(self.dataset_size / self.batch_size)

    @property
    def image_size(self) -> int:
        """The square side of the delivered batches."""
        return self.output_size or int(self.images.shape[-1])

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``.

        ``start_batch`` lets a run resumed mid-epoch skip the batches it has already trained on;
        the skipped batches are not computed.
        """
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ConfigError(
                f"Expected epoch >= 0 and 0 <= start_batch <= {len(self)}, but got epoch={epoch}, "
                f"start_batch={start_batch}"
            )
        self.epoch = epoch
        self._start_batch = start_batch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self._start_batch
        # The next plain iteration is the next epoch, so a loop without set_epoch still reshuffles.
        self.epoch, self._start_batch = epoch + 1, 0
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs = self.dataset_size, self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=_generator(self.seed, epoch, 0))
        else:
            order = torch.arange(n)
        num_batches = len(self)
        # One generator for the augmentation stream; per-batch draws happen for every batch
        # (including skipped ones) so that resuming at start_batch reproduces the same crops.
        aug_gen = _generator(self.seed, epoch, 1)
        order_dev = order.to(self.images.device)
        host_work = self.images.device.type == "cpu"
        for b in range(num_batches):
            aug_params = self._draw_augmentation(aug_gen, min(bs, n - b * bs)) if self.augment else None
            if b < start:
                continue
            with _single_threaded(host_work):
                idx = order_dev[b * bs : min((b + 1) * bs, n)]
                x = self._gather(idx)
                y = self.labels.index_select(0, idx)
                if not self.resident:
                    y = y.to(self.device, non_blocking=True)
                if aug_params is not None:
                    x = self._augment(x, *aug_params)
                x = self._normalize(x)
            yield x, y  # outside the context: the model's compute gets all the threads again

    def _gather(self, idx: Tensor) -> Tensor:
        """Select a batch of uint8 images and bring it to the device."""
        if self.resident:
            return self.images.index_select(0, idx)
        if self.device.type != "cuda":
            return self.images.index_select(0, idx).to(self.device)
        # Host-resident data streamed to the GPU: gather into a pinned staging buffer and copy
        # asynchronously. Two buffers alternate; an event per buffer guarantees the previous
        # copy out of a buffer has finished before it is overwritten.
        if not self._staging:
            shape = (self.batch_size, *self.images.shape[1:])
            self._staging = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._staging_events = [None, None]
        slot = self._slot
        self._slot = 1 - slot
        event = self._staging_events[slot]
        if event is not None:
            event.synchronize()
        buffer = self._staging[slot][: idx.numel()]
        torch.index_select(self.images, 0, idx, out=buffer)
        x = buffer.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))  # the stream the copy went to
        self._staging_events[slot] = event
        return x

    def _draw_augmentation(self, gen: torch.Generator, count: int) -> tuple[Tensor, Tensor, Tensor]:
        span = 2 * self.pad + 1
        dy = torch.randint(0, span, (count,), generator=gen) - self.pad
        dx = torch.randint(0, span, (count,), generator=gen) - self.pad
        flips = torch.rand(count, generator=gen) < 0.5 if self.flip else torch.zeros(count, dtype=torch.bool)
        return dy, dx, flips

    def _augment(self, x: Tensor, dy: Tensor, dx: Tensor, flips: Tensor) -> Tensor:
        """Random crop (reflect padding) and horizontal flip of a whole batch in one gather."""
        b, c, h, w = x.shape
        dev = x.device
        dy, dx, flips = dy.to(dev, non_blocking=True), dx.to(dev, non_blocking=True), flips.to(dev)
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


# --------------------------------------------------------------------------------------------
# The streaming path: torchvision ImageFolder + DataLoader


class StreamLoader:
    """A tuned ``DataLoader`` behind the same interface as :class:`TensorLoader`.

    The batch order of epoch ``e`` is a function of ``(seed, e)``; the random transforms run in
    worker processes and are reproducible only without persistent workers.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        _check_positive_int("batch_size", batch_size, DataError)
        n = len(dataset)
        if drop_last and batch_size > n:
            raise DataError(
                f"The batch size {batch_size} is larger than the {n} training images, so an epoch "
                f"would have no full batch; use --batch-size {_pow2_at_most(n)} or smaller (or more images)"
            )
        self.device = canonical_device(device)
        self.batch_size = batch_size
        self.dataset_size = n
        self.seed = seed
        self.epoch = 0
        self._generator = torch.Generator()
        pin = self.device.type == "cuda"
        self._loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin,
            persistent_workers=num_workers > 0,
            generator=self._generator,
        )

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffle depends on (seed, epoch) only)."""
        if epoch < 0:
            raise ConfigError(f"Expected epoch >= 0, but got {epoch}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Seed now, not lazily at the first batch, so that set_epoch -> iter behaves like the
        # TensorLoader (the next plain iteration is the next epoch).
        self._generator.manual_seed(_epoch_seed(self.seed, self.epoch, 0))
        self.epoch += 1
        return self._batches(iter(self._loader))

    def _batches(self, batches: Iterator[Any]) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# --------------------------------------------------------------------------------------------
# Validation helpers


def _check_positive_int(name: str, value: Any, error: type[ConfigError] = ConfigError) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise error(f"Expected {name} to be a positive integer, but got {value!r}")


def _pow2_at_most(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1)
