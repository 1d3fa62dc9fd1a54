"""The two loaders behind one small interface (:class:`Loader`): ``__iter__`` yields ``(inputs, labels)`` on
the target device, ``__len__`` is batches per epoch, ``set_epoch(epoch, start_batch=0)`` picks the epoch (and
the batch a resumed run starts at), ``dataset_size`` and ``batch_size`` say what they hold.

* :class:`TensorLoader` - the fast path for data that fits in memory (the built-in datasets, and image folders
  decoded once). The whole split is one uint8 NCHW tensor, resident on the GPU when it fits (as in airbench),
  and every batch is gathered, augmented (random crop with reflect padding, optional horizontal flip) and
  normalized with batched tensor ops on the device: no per-image Python, no worker processes, no float copy
  of the data set.
* :class:`StreamLoader` - image files decoded per batch by ``DataLoader`` worker processes (uint8, at the
  final size), then augmented and normalized exactly as a :class:`TensorLoader` does.

On both, an epoch's batches are a function of ``(seed, epoch)`` only (:mod:`superconv.data.batching`): the
workers only decode, so a resumed run sees the batches the interrupted run would have seen, persistent
workers or not.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from superconv.checks import positive_int
from superconv.data.batching import (
    Augmentation,
    BatchTransform,
    epoch_order,
    num_batches,
    shard_bounds,
    single_threaded,
)
from superconv.device import canonical_device, same_device
from superconv.errors import ConfigError, DataError

__all__ = ["Loader", "StreamLoader", "TensorLoader"]


class Loader(Protocol):
    """What the training loop needs from a loader."""

    batch_size: int
    dataset_size: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def with_batch_size(self, batch_size: int) -> Loader: ...

    def shard(self, rank: int, world_size: int) -> Loader: ...


def _pow2_at_most(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1)


def _check_sizes(batch_size: int, n: int, drop_last: bool, what: str) -> None:
    positive_int("batch_size", batch_size, DataError)
    if drop_last and batch_size > n:
        raise DataError(
            f"The batch size {batch_size} is larger than the {n} training {what}, so an epoch "
            f"would have no full batch; use --batch-size {_pow2_at_most(n)} or smaller (or more data)"
        )
    if n == 0:
        raise DataError("Expected at least one example in the split, but it is empty")


def _check_shard(rank: int, world_size: int, batch_size: int, training: bool) -> None:
    if not 0 <= rank < world_size:
        raise ConfigError(f"Expected 0 <= rank < world_size, but got rank={rank}, world_size={world_size}")
    if training and batch_size % world_size:
        raise ConfigError(
            f"The batch size {batch_size} does not split evenly over {world_size} processes: it is the global batch, "
            f"each process takes batch_size / {world_size} of it; use a multiple of {world_size} "
            f"(e.g. --batch-size {max(world_size, batch_size - batch_size % world_size)})"
        )


def _check_epoch(epoch: int, start_batch: int, batches: int) -> None:
    if epoch < 0 or not 0 <= start_batch <= batches:
        raise ConfigError(
            f"Expected epoch >= 0 and 0 <= start_batch <= {batches}, but got epoch={epoch}, start_batch={start_batch}"
        )


class _Augmented:
    """What both loaders say about their :class:`~superconv.data.batching.BatchTransform`."""

    transform: BatchTransform

    @property
    def augment(self) -> bool:
        """Whether batches are augmented (random crop, and flip when :attr:`flip`)."""
        return self.transform.augment

    @property
    def pad(self) -> int:
        """The random crop's padding in pixels."""
        return self.transform.pad

    @property
    def flip(self) -> bool:
        """Whether augmentation flips images horizontally."""
        return self.transform.flip

    @property
    def output_size(self) -> int | None:
        """The side batches are resized to on the device (None: the stored size)."""
        return self.transform.output_size


class TensorLoader(_Augmented):
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

    Under several processes, :meth:`shard` gives each process its part of every batch: ``batch_size`` stays the
    global batch, the epoch's order and augmentation stay functions of ``(seed, epoch)``, and process ``rank``
    takes the ``rank``-th of ``world_size`` consecutive parts of each batch.
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
        n = int(images.shape[0])
        _check_sizes(batch_size, n, drop_last, "examples")
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
        self.seed = seed
        self.transform = BatchTransform(
            mean=mean, std=std, device=self.device, augment=augment, pad=pad, flip=flip, output_size=output_size
        )
        self.epoch = 0
        self._start_batch = 0
        self.rank, self.world_size = 0, 1
        self.resident = same_device(images.device, self.device)
        if not self.resident and images.device.type != "cpu":
            raise DataError(
                f"The images are on {images.device} but the loader delivers to {self.device}: keep them in host "
                f"memory (streamed to the device per batch) or move them to {self.device} (resident)"
            )
        # Pinned staging buffers for host-resident data on CUDA (created on first use).
        self._staging: list[Tensor] = []
        self._staging_events: list[Any] = []
        self._slot = 0

    def with_batch_size(self, batch_size: int) -> TensorLoader:
        """The same data, order and augmentation in batches of ``batch_size`` (the tensors are shared, not copied)."""
        _check_sizes(batch_size, self.dataset_size, self.drop_last, "examples")
        _check_shard(self.rank, self.world_size, batch_size, self.drop_last)
        other = copy.copy(self)
        other.batch_size = batch_size
        other._staging, other._staging_events, other._slot = [], [], 0
        return other

    def shard(self, rank: int, world_size: int) -> TensorLoader:
        """This loader for process ``rank`` of ``world_size``: its part of every (global) batch."""
        _check_shard(rank, world_size, self.batch_size, self.drop_last)
        other = self.with_batch_size(self.batch_size)
        other.rank, other.world_size = rank, world_size
        return other

    def __len__(self) -> int:
        return num_batches(self.dataset_size, self.batch_size, self.drop_last, self.world_size)

    @property
    def image_size(self) -> int:
        """The square side of the delivered batches."""
        return self.output_size or int(self.images.shape[-1])

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``.

        ``start_batch`` lets a run resumed mid-epoch skip the batches it has already trained on;
        the skipped batches are not computed.
        """
        _check_epoch(epoch, start_batch, len(self))
        self.epoch = epoch
        self._start_batch = start_batch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self._start_batch
        # The next plain iteration is the next epoch, so a loop without set_epoch still reshuffles.
        self.epoch, self._start_batch = epoch + 1, 0
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs = self.dataset_size, self.batch_size
        order_dev = epoch_order(n, self.seed, epoch, self.shuffle).to(self.images.device)
        host_work = self.images.device.type == "cpu"
        for b, aug in enumerate(self.transform.draws(self.seed, epoch, n, bs, len(self))):
            if b < start:
                continue
            idx = order_dev[b * bs : min((b + 1) * bs, n)]
            if self.world_size > 1:
                lo, hi = shard_bounds(idx.numel(), self.rank, self.world_size)
                if lo == hi:
                    continue  # an evaluation loader's last batch, too small for every process
                idx, aug = idx[lo:hi], aug.part(lo, hi) if aug is not None else None
            with single_threaded(host_work):
                x = self._gather(idx)
                y = self.labels.index_select(0, idx)
                if not self.resident:
                    y = y.to(self.device, non_blocking=True)
                x = self.transform(x, aug)
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


class EpochBatchSampler(Sampler[list[int]]):
    """The index batches of one epoch, from batch ``start_batch`` on: a function of ``(seed, epoch)`` only.

    A ``DataLoader`` iterates its batch sampler in the main process at the start of every epoch, also with
    persistent workers, so setting ``epoch``/``start_batch`` before ``iter(loader)`` fixes what the workers
    decode; the skipped batches are never decoded.
    """

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return num_batches(self.n, self.batch_size, self.drop_last, self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle)
        bs = self.batch_size
        for b in range(self.start_batch, len(self)):
            batch = order[b * bs : (b + 1) * bs]
            lo, hi = shard_bounds(len(batch), self.rank, self.world_size)
            if lo < hi:
                yield batch[lo:hi].tolist()


class StreamLoader(_Augmented):
    """Images decoded per batch by ``DataLoader`` workers, then augmented and normalized like a TensorLoader.

    Args:
        dataset: a map-style dataset of ``(uint8 (C, H, W) tensor, int label, problem)``, every image of one
            size, ``problem`` an error message or ``""`` (:class:`superconv.data.images.ImageFiles`).
        num_workers: decoding processes (0: decode in this process). They are persistent, and draw no random
            numbers: the order and the augmentation come from ``(seed, epoch)`` in this process.
        skip_bad_images: leave out of their batch the images that fail to decode (listed in ``skipped``)
            instead of stopping with a :class:`~superconv.errors.DataError` that names them.

    The other arguments are :class:`TensorLoader`'s.
    """

    def __init__(
        self,
        dataset: Any,
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
        num_workers: int = 0,
        skip_bad_images: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        n = len(dataset)
        _check_sizes(batch_size, n, drop_last, "images")
        _check_shard(rank, world_size, batch_size, drop_last)
        self._options: dict[str, Any] = {
            "batch_size": batch_size, "mean": mean, "std": std, "device": device, "shuffle": shuffle,
            "drop_last": drop_last, "augment": augment, "pad": pad, "flip": flip, "seed": seed,
            "num_workers": num_workers, "skip_bad_images": skip_bad_images, "rank": rank, "world_size": world_size,
        }  # fmt: skip
        self.dataset = dataset
        self.device = canonical_device(device)
        self.batch_size = batch_size
        self.dataset_size = n
        self.seed = seed
        self.epoch = 0
        self._start_batch = 0
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.skip_bad_images = skip_bad_images
        self.skipped: list[str] = []  # messages of the images left out (skip_bad_images)
        self.transform = BatchTransform(
            mean=mean, std=std, device=self.device, augment=augment, pad=pad, flip=flip, output_size=None
        )
        self._sampler = EpochBatchSampler(
            n, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size
        )
        self._loader = DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
            # The loader draws its workers' base seed from this generator, not from torch's global stream:
            # creating an iterator (first epoch, or a resumed one) must not shift the model's random numbers.
            generator=torch.Generator().manual_seed(seed),
        )

    def with_batch_size(self, batch_size: int) -> StreamLoader:
        """The same files, order and augmentation in batches of ``batch_size`` (new workers)."""
        return StreamLoader(self.dataset, **{**self._options, "batch_size": batch_size})

    def shard(self, rank: int, world_size: int) -> StreamLoader:
        """This loader for process ``rank`` of ``world_size``: its part of every (global) batch (new workers)."""
        return StreamLoader(self.dataset, **{**self._options, "rank": rank, "world_size": world_size})

    def __len__(self) -> int:
        return len(self._sampler)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch`` (skipped ones not decoded)."""
        _check_epoch(epoch, start_batch, len(self))
        self.epoch = epoch
        self._start_batch = start_batch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self._start_batch
        self.epoch, self._start_batch = epoch + 1, 0
        self._sampler.epoch, self._sampler.start_batch = epoch, start
        draws = self.transform.draws(self.seed, epoch, self.dataset_size, self.batch_size, len(self))
        return self._batches(draws, start, iter(self._loader))

    def _batches(
        self, draws: Iterator[Augmentation | None], start: int, batches: Iterator[Any]
    ) -> Iterator[tuple[Tensor, Tensor]]:
        host_work = self.device.type == "cpu"
        for b, aug in enumerate(draws):
            if b < start:
                continue  # drawn, so that the later batches get the crops of an uninterrupted epoch
            if self.world_size > 1:
                lo, hi = shard_bounds(min(self.batch_size, self.dataset_size - b * self.batch_size), self.rank,
                                      self.world_size)  # fmt: skip
                if lo == hi:
                    continue  # the sampler left this process's empty part out too
                aug = aug.part(lo, hi) if aug is not None else None
            x, y, problems = next(batches)
            x, y, aug = self._without_bad(x, y, aug, problems)
            with single_threaded(host_work):
                x = self.transform(x.to(self.device, non_blocking=True), aug)
                y = y.to(self.device, non_blocking=True)
            yield x, y

    def _without_bad(
        self, x: Tensor, y: Tensor, aug: Augmentation | None, problems: Sequence[str]
    ) -> tuple[Tensor, Tensor, Augmentation | None]:
        """The batch without the images that failed to decode; or the error that names them."""
        bad = [i for i, problem in enumerate(problems) if problem]
        if not bad:
            return x, y, aug
        if not self.skip_bad_images:
            more = f" (and {len(bad) - 1} more file(s) of this batch)" if len(bad) > 1 else ""
            raise DataError(f"{problems[bad[0]]}{more}; or pass --skip-bad-images (skip_bad_images=True)")
        self.skipped += [problems[i] for i in bad]
        keep = torch.tensor([i for i in range(len(problems)) if not problems[i]], dtype=torch.int64)
        if aug is not None:
            aug = Augmentation(aug.dy[keep], aug.dx[keep], aug.flips[keep])
        return x.index_select(0, keep), y.index_select(0, keep), aug
