"""Several processes, on one machine or several, with PyTorch's own engine: ``torchrun`` and DistributedDataParallel.

Everything superconv does differently under several processes goes through this module:

* :func:`session` starts the process group when the process was launched by ``torchrun`` (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) and none is running yet: ``nccl`` on GPUs, ``gloo`` on CPUs,
  with a timeout (:data:`TIMEOUT_ENV`, default :data:`DEFAULT_TIMEOUT_S` s) so that a peer that stops answering
  surfaces as an error instead of a hang;
* :func:`is_main` says which process prints, plots and writes files (rank 0);
* :func:`mean`, :func:`sum_tensor`, :func:`slowest` reduce numbers across the processes, :func:`broadcast` hands
  rank 0's decision to every process, so that every rank takes the same decision at the same step.

With one process (no ``torchrun``, or ``--nproc-per-node 1``) every helper is the identity and nothing is imported
from ``torch.distributed`` beyond a check.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from superconv.errors import CheckpointError, ConfigError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "active",
    "agree",
    "backend_for",
    "broadcast",
    "is_main",
    "launched",
    "lost_peer",
    "mean",
    "on_main",
    "rank",
    "restarted",
    "session",
    "shard",
    "slowest",
    "sum_tensor",
    "unwrap",
    "world_size",
    "wrap",
]

#: Seconds a collective waits for the other processes before it fails (a dead or stuck peer).
TIMEOUT_ENV = "SUPERCONV_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restarted() -> bool:
    """Whether torchrun's elastic agent restarted this worker group after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def active() -> bool:
    """Whether a process group of more than one process is running."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return torch.distributed.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process prints, plots and writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def backend_for(device_type: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for everything else."""
    return "nccl" if device_type == "cuda" else "gloo"


def timeout_seconds() -> float:
    """How long a collective waits for the other processes (:data:`TIMEOUT_ENV`)."""
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


def local_device(device_type: str) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` on GPUs (one GPU per process), else ``device_type``."""
    if device_type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device_type)


@contextlib.contextmanager
def session(device_type: str | None = None) -> Iterator[bool]:
    """Start the process group for the duration of the block when torchrun launched this process and none runs.

    Yields whether several processes train together. A group this block started is destroyed at its end; one the
    caller started is left alone.
    """
    dist = torch.distributed
    started = False
    if launched() and dist.is_available() and not dist.is_initialized():
        kind = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda":
            torch.cuda.set_device(local_device("cuda"))
        timeout = datetime.timedelta(seconds=timeout_seconds())
        # The rendezvous comes from torchrun's MASTER_ADDR/MASTER_PORT, RANK, WORLD_SIZE. After an elastic restart
        # the store may still hold the dead workers' addresses under the same keys: a prefix per attempt keeps
        # the new workers from connecting to them.
        store, rank_, size = next(dist.rendezvous("env://", timeout=timeout))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            backend=backend_for(kind), store=dist.PrefixStore(f"superconv/attempt_{attempt}", store), rank=rank_,
            world_size=size, timeout=timeout,
        )  # fmt: skip
        started = True
    try:
        yield active()
        if started:
            barrier()  # no process takes the group down while another still finishes its last collective
    finally:
        if started and dist.is_initialized():
            # Objects that still hold the group (DDP wrappers and their reducers sit in reference cycles) are freed
            # now, while it is intact, so the group's C++ side is torn down here and not by the interpreter's
            # shutdown, where gloo's threads could abort the process (std::terminate) after a finished run.
            gc.collect()
            dist.destroy_process_group()
            gc.collect()


def _device() -> torch.device:
    """Where collectives run: the current GPU under nccl, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_tensor(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all processes (float64; the same result on every rank)."""
    if not active():
        return values.double()
    total = values.detach().to(_device(), torch.float64)
    torch.distributed.all_reduce(total)
    return total.to(values.device)


def mean(value: float | torch.Tensor) -> float:
    """The mean of ``value`` over all processes; a NaN on any process makes it NaN on every process."""
    if not active():
        return float(value)
    total = sum_tensor(torch.as_tensor(value).reshape(1))
    return float(total.item()) / world_size()


def slowest(seconds: float) -> float:
    """The largest of a measured duration over all processes: a plan made from it holds for every process."""
    if not active():
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64, device=_device())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return float(value.item())


def agree(flags: list[bool]) -> list[bool]:
    """Each flag OR-ed over all processes: a decision one process took becomes every process's decision."""
    if not active():
        return list(flags)
    value = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int64, device=_device())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in value.tolist()]


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every process."""
    if not active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def shard(loader: Any, *, training: bool) -> Any:
    """``loader`` for this process: superconv's loaders take their part of every global batch (:meth:`shard`); a
    ``DataLoader`` with a ``DistributedSampler`` is used as it is. Any other training loader gets a warning: every
    process would train on the same batches."""
    if not active() or loader is None or getattr(loader, "world_size", 1) > 1:
        return loader
    if callable(getattr(loader, "shard", None)):
        return loader.shard(rank(), world_size())
    sampler = getattr(loader, "sampler", None)
    if training and not callable(getattr(sampler, "set_epoch", None)) and is_main():
        warnings.warn(
            "the training loader is not sharded over the processes: every process trains on the same batches. "
            "Use a DataLoader with torch.utils.data.DistributedSampler (or a superconv loader, sharded by fit)",
            UserWarning,
            stacklevel=3,
        )
    return loader


def on_main(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run by rank 0 alone (a file to write, a folder to claim): its result on every process, and its
    :class:`~superconv.errors.ConfigError` or :class:`~superconv.errors.CheckpointError` raised on every process."""
    if not active():
        return fn(*args)
    outcome: Any = None
    error: Exception | None = None
    if is_main():
        try:
            outcome = fn(*args)
        except (ConfigError, CheckpointError) as exc:
            error = exc
    outcome, error = broadcast((outcome, error))
    if error is not None:
        raise error
    return outcome


def barrier() -> None:
    """Wait until every process gets here."""
    if active():
        torch.distributed.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (which broadcasts rank 0's weights and buffers now)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


#: Words in the errors of a collective whose peer died or stopped answering (gloo, nccl, the TCP store).
_LOST_PEER_HINTS = ("connection closed", "connection reset", "broken pipe", "nccl", "gloo")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective's failure because another process died or stopped answering (also after
    the process group was taken down)."""
    if not launched():
        return False
    dist_error = getattr(torch.distributed, "DistError", ())
    if dist_error and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(hint in text for hint in _LOST_PEER_HINTS)


def launched_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun gave them to this process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
