"""The LR range test (Smith, "Cyclical Learning Rates", https://arxiv.org/abs/1506.01186).

Train for a short sweep while the learning rate grows from ``start_lr`` to ``end_lr``, record the loss,
and read off the ``max_lr`` of a one-cycle run. :class:`LRFinder` is a drop-in for
``torch_lr_finder.LRFinder`` (same constructor, ``range_test``, ``plot``, ``history`` and ``reset``),
and fixes what users of the existing finders run into:

* everything is put back exactly, automatically, also when the test raises: parameters, buffers
  (BatchNorm running stats), gradients, train/eval modes, optimizer state and hyperparameters, a
  GradScaler, an attached scheduler and the RNG streams (torch, CUDA, ``random``, numpy);
* the sweep stops on divergence (also for negative losses) and at once on NaN/inf, and the curve given
  to the suggestion never contains a non-finite point;
* with gradient accumulation the LR advances per optimizer update and the loss is the mean of the
  micro-batches; with AMP a step that the GradScaler skips does not advance the sweep;
* batches of any shape: ``(inputs, target)``, ``(x1, x2, ..., target)``, dicts for Hugging Face-style
  models that return ``.loss``, or anything with a ``loss_fn(model, batch)``;
* the suggestion is read on the log-LR axis of the bias-corrected smoothed curve, by several
  estimators (:mod:`superconv.suggest`), with a quality flag when the curve does not support one.

Example:
    >>> import torch
    >>> from superconv import LRFinder
    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
    >>> result = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss()).range_test(data, num_iter=20)
    >>> len(result.lrs) <= 20 and result.suggestion > 0
    True
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from superconv import suggest
from superconv.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

LossFn = Callable[[nn.Module, Any], torch.Tensor]
StopReason = Literal["completed", "diverged", "non-finite", "amp-skips"]

#: A sweep shorter than this cannot be smoothed and read reliably.
MIN_NUM_ITER = suggest.MIN_POINTS
#: Default start of the sweep when neither ``start_lr`` nor a lower optimizer LR is given.
DEFAULT_START_LR = 1e-7
#: After this many GradScaler-skipped steps in a row the test gives up (the scale has collapsed).
MAX_CONSECUTIVE_SKIPS = 50


# --------------------------------------------------------------------------------------------- result


@dataclass
class RangeTestResult:
    """The outcome of one LR range test.

    Attributes:
        lrs: The learning rate of each recorded step.
        losses: The raw loss of each recorded step (validation loss in validation mode); finite only.
        smoothed_losses: The bias-corrected EMA of ``losses`` that the test watched for divergence.
        curve: The curve the estimators read: the same EMA over the losses clipped a little above their
            starting level (see :mod:`superconv.suggest`); empty when too short.
        curve_lrs: The LR of each ``curve`` point: moved back by the EMA's lag, so the curve lines up
            with the raw losses.
        suggestion: The ``max_lr`` to hand to OneCycleLR (the ``estimator``'s value).
        estimates: Every estimator's LR by name (:data:`superconv.suggest.ESTIMATORS`).
        estimator: The estimator that gave ``suggestion``.
        quality: "ok", or "flat", "noisy", "no-descent", "too-short", "diverged-immediately"; when not
            "ok", ``suggestion`` is a guess and ``warning`` says why.
        warning: A sentence for the user, "" when ``quality`` is "ok".
        diverged: Whether the sweep stopped early because the loss diverged or became NaN/inf.
        stop_reason: "completed", "diverged", "non-finite" or "amp-skips".
        div_factor: The recommended OneCycleLR ``div_factor``.
        min_lr: The LR at the minimum of the (lag-free) smoothed curve.
        train_losses: In validation mode, the training loss of each step; else ``None``.
        loss_kind: "train" or "val": what ``losses`` holds.
        start_lr: The first LR of the planned sweep.
        end_lr: The last LR of the planned sweep.
        num_iter: The planned number of optimizer updates.
        step_mode: "exp" or "linear".
        smooth_f: The EMA weight of the newest loss.
        accumulation_steps: Micro-batches per optimizer update.
        skipped_steps: Steps the GradScaler skipped (retried at the same LR, not recorded).
        elapsed_s: Wall-clock seconds the test took.

    Example:
        >>> r = RangeTestResult(lrs=[1e-3], losses=[1.0], smoothed_losses=[1.0], suggestion=1e-3)
        >>> r.one_cycle_kwargs()
        {'max_lr': 0.001, 'div_factor': 25.0}
    """

    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float
    curve: list[float] = field(default_factory=list)
    curve_lrs: list[float] = field(default_factory=list)
    estimates: dict[str, float] = field(default_factory=dict)
    estimator: str = suggest.DEFAULT_ESTIMATOR
    quality: suggest.Quality = "ok"
    warning: str = ""
    diverged: bool = False
    stop_reason: StopReason = "completed"
    div_factor: float = suggest.DEFAULT_DIV_FACTOR
    min_lr: float = math.nan
    train_losses: list[float] | None = None
    loss_kind: Literal["train", "val"] = "train"
    start_lr: float = math.nan
    end_lr: float = math.nan
    num_iter: int = 0
    step_mode: Literal["exp", "linear"] = "exp"
    smooth_f: float = 0.05
    accumulation_steps: int = 1
    skipped_steps: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the curve supports a confident suggestion (``quality == "ok"``)."""
        return self.quality == "ok"

    def one_cycle_kwargs(self) -> dict[str, float]:
        """The keyword arguments this test recommends for OneCycleLR.

        Returns:
            ``{"max_lr": ..., "div_factor": ...}``, to be used as
            ``superconv.OneCycleLR(optimizer, **result.one_cycle_kwargs(), total_steps=n)`` (or torch's).

        Example:
            >>> r = RangeTestResult(lrs=[0.1], losses=[1.0], smoothed_losses=[1.0], suggestion=0.1,
            ...                     div_factor=20.0)
            >>> r.one_cycle_kwargs()
            {'max_lr': 0.1, 'div_factor': 20.0}
        """
        return {"max_lr": float(self.suggestion), "div_factor": float(self.div_factor)}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, floats, strings): JSON-serializable, and accepted by :meth:`from_dict`.

        Example:
            >>> r = RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1)
            >>> r.to_dict()["lrs"]
            [1.0]
        """
        data = asdict(self)
        data["suggestion"] = _json_float(self.suggestion)
        data["min_lr"] = _json_float(self.min_lr)
        data["estimates"] = {k: _json_float(v) for k, v in self.estimates.items()}
        data["one_cycle_kwargs"] = self.one_cycle_kwargs()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RangeTestResult:
        """Rebuild a result from :meth:`to_dict`'s output (extra keys are ignored).

        Example:
            >>> r = RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1)
            >>> RangeTestResult.from_dict(r.to_dict()) == r
            True
        """
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("suggestion", "min_lr"):
            if kwargs.get(key) is None:
                kwargs[key] = math.nan
        return cls(**kwargs)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` and return the path.

        Example:
            >>> import tempfile, pathlib
            >>> r = RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1)
            >>> r.to_json(pathlib.Path(tempfile.mkdtemp()) / "lr.json").name
            'lr.json'
        """
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return out

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one row per step (``step, lr, loss, smoothed_loss`` and ``train_loss`` in validation mode).

        Example:
            >>> import tempfile, pathlib
            >>> r = RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1)
            >>> r.to_csv(pathlib.Path(tempfile.mkdtemp()) / "lr.csv").read_text().splitlines()[0]
            'step,lr,loss,smoothed_loss'
        """
        out = Path(path)
        header = ["step", "lr", "loss", "smoothed_loss"]
        if self.train_losses is not None:
            header.append("train_loss")
        with out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for i, (lr, loss, smooth) in enumerate(zip(self.lrs, self.losses, self.smoothed_losses)):
                row: list[Any] = [i, repr(lr), repr(loss), repr(smooth)]
                if self.train_losses is not None:
                    row.append(repr(self.train_losses[i]))
                writer.writerow(row)
        return out

    def summary(self) -> str:
        """One line for humans: the suggestion, the quality and the other estimators.

        Example:
            >>> RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1).summary()
            'suggested max_lr=0.1 (div_factor=25, quality ok)'
        """
        text = f"suggested max_lr={self.suggestion:.3g} (div_factor={self.div_factor:.3g}, quality {self.quality})"
        others = ", ".join(f"{k}={v:.3g}" for k, v in self.estimates.items() if k != self.estimator)
        if others:
            text += f"; {others}"
        if self.warning:
            text += f"; warning: {self.warning}"
        return text

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        ax: Axes | None = None,
        *,
        show_estimates: bool = True,
        skip_start: int = 0,
        skip_end: int = 0,
    ) -> Axes:
        """Plot loss against LR (log axis) with the suggestion marked; write a PNG when ``path`` is given.

        Args:
            path: Where to save the figure (any format matplotlib knows by the suffix; PNG usually).
            ax: Axes to draw into; a new figure when ``None``.
            show_estimates: Also mark the other estimators' LRs (thin lines).
            skip_start: Points to leave out at the start (display only).
            skip_end: Points to leave out at the end (display only).

        Returns:
            The axes drawn into.

        Example:
            >>> r = RangeTestResult(lrs=[1e-3, 1e-2], losses=[2.0, 1.0], smoothed_losses=[2.0, 1.5],
            ...                     suggestion=1e-2)
            >>> ax = r.plot()
        """
        for name, skip in (("skip_start", skip_start), ("skip_end", skip_end)):
            if not _is_int(skip) or skip < 0:
                raise ConfigError(f"{name}={skip!r} must be an integer >= 0 (points left out of the plot).")
        if ax is None:
            # A bare Figure needs no GUI backend, so saving works headless and pyplot is not imported.
            from matplotlib.figure import Figure

            ax = Figure(figsize=(7, 4.5), layout="constrained").add_subplot()
        stop = len(self.lrs) - skip_end
        lrs = np.asarray(self.lrs[skip_start:stop], dtype=float)
        raw = np.asarray(self.losses[skip_start:stop], dtype=float)
        smooth = np.asarray(self.smoothed_losses[skip_start:stop], dtype=float)
        lag_free = np.asarray(self.curve[skip_start:stop], dtype=float)
        label = "validation loss" if self.loss_kind == "val" else "loss"
        if lrs.size:
            ax.plot(lrs, raw, color="0.75", lw=0.8, label=f"{label} (raw)")
            ax.plot(lrs, smooth, color="C0", lw=0.9, alpha=0.6, label=f"{label} (EMA)")
            if lag_free.size == lrs.size:
                ax.plot(lrs, lag_free, color="C0", lw=2.0, label=f"{label} (EMA fwd+bwd, lag-free: read)")
            shown = lag_free if lag_free.size == lrs.size else smooth
            # Keep the end-of-sweep explosion from squashing the interesting part of the curve.
            finite = shown[np.isfinite(shown)]
            if finite.size:
                lo, first = float(finite.min()), float(finite[0])
                top = max(first, lo) + 0.35 * abs(max(first, lo) - lo) + 1e-12
                # the raw losses dip below the smoothed curve; show most of them
                raw_low = float(np.percentile(raw[np.isfinite(raw)], 2)) if np.isfinite(raw).any() else lo
                lo = min(lo, raw_low)
                bottom = lo - 0.05 * abs(top - lo)
                ax.set_ylim(bottom, top)
        if show_estimates:
            for i, (name, value) in enumerate(self.estimates.items()):
                if name != self.estimator and math.isfinite(value) and value > 0:
                    ax.axvline(value, color=f"C{i + 2}", lw=0.9, ls=":", label=f"{name}: {value:.2g}")
        if math.isfinite(self.suggestion) and self.suggestion > 0:
            ax.axvline(self.suggestion, color="C3", lw=1.6, ls="--")
            if self.lrs:
                j = int(np.argmin(np.abs(np.log10(np.asarray(self.lrs)) - math.log10(self.suggestion))))
                ys = self.curve if len(self.curve) == len(self.lrs) else self.smoothed_losses
                ax.plot([self.lrs[j]], [ys[j]], "o", color="C3", ms=7)
            text = f"suggestion ({self.estimator}): {self.suggestion:.2g}"
            ax.plot([], [], color="C3", ls="--", label=text)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(label)
        title = "LR range test"
        if self.quality != "ok":
            title += f" - quality: {self.quality}"
        ax.set_title(title)
        ax.legend(loc="best", fontsize="small")
        if path is not None:
            ax.figure.savefig(os.fspath(path), dpi=120)  # type: ignore[union-attr]
        return ax


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------- snapshot


def _copy_to(obj: Any, device: torch.device | None) -> Any:
    """Deep-copy ``obj``, cloning every tensor (to ``device`` if given, keeping dtype and values)."""
    if isinstance(obj, torch.Tensor):
        target = obj.device if device is None else device
        return obj.detach().to(device=target, copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, _copy_to(v, device)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_copy_to(v, device) for v in obj]
    if isinstance(obj, tuple):
        return (
            type(obj)(*(_copy_to(v, device) for v in obj))
            if hasattr(obj, "_fields")
            else tuple(_copy_to(v, device) for v in obj)
        )
    return copy.deepcopy(obj)


_MISSING = object()


class _Snapshot:
    """Everything the range test changes, copied to host memory (or a file when asked) and put back."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any | None,
        scheduler: Any | None,
        device: torch.device | None,
        cache_dir: Path | None,
    ) -> None:
        self.model, self.optimizer, self.scaler, self.scheduler = model, optimizer, scaler, scheduler
        # The optimizer may also hold tensors outside the model (e.g. a learned temperature): those too.
        params = {id(p): p for p in model.parameters()}
        for group in optimizer.param_groups:
            params.update((id(p), p) for p in group["params"])
        self.grad_params = list(params.values())
        self.tensors = [*self.grad_params, *(b for _, b in model.named_buffers())]
        self.devices = [t.device for t in self.tensors]
        self.modes = [(m, m.training) for m in model.modules()]
        self.opt_called = getattr(optimizer, "_opt_called", _MISSING)
        state: dict[str, Any] = {
            "tensors": [_copy_to(t, device) for t in self.tensors],
            "grads": [None if p.grad is None else _copy_to(p.grad, device) for p in self.grad_params],
            "optimizer": _copy_to(optimizer.state_dict(), device),
            "scaler": _copy_to(scaler.state_dict(), None) if scaler is not None else None,
            "scheduler": _copy_to(scheduler.state_dict(), device) if scheduler is not None else None,
            "rng": _rng_state(),
        }
        self.file: Path | None = None
        self.state: dict[str, Any] | None = state
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            self.file = cache_dir / f"superconv-lr-finder-{uuid.uuid4().hex}.pt"
            torch.save(state, self.file)
            self.state = None

    def restore(self) -> None:
        """Put everything back; the copies are dropped afterwards (a second call does nothing)."""
        state = self.state
        if state is None and self.file is not None:
            state = torch.load(self.file, weights_only=True)
        if state is None:
            return
        with torch.no_grad():
            for tensor, dev, saved in zip(self.tensors, self.devices, state["tensors"]):
                if tensor.device != dev:  # the test moved the model to `device`: move it back
                    tensor.data = tensor.data.to(dev)
                tensor.copy_(saved)
            for param, grad in zip(self.grad_params, state["grads"]):
                param.grad = None if grad is None else grad.to(param.device, copy=True)
        for module, mode in self.modes:
            module.training = mode
        self.optimizer.load_state_dict(state["optimizer"])
        if self.opt_called is _MISSING:
            if hasattr(self.optimizer, "_opt_called"):
                delattr(self.optimizer, "_opt_called")
        else:
            self.optimizer._opt_called = self.opt_called  # type: ignore[attr-defined]
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.state = None
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        # numpy's key array as a tensor: the snapshot file then loads with weights_only=True.
        "numpy": _numpy_state_to_plain(np.random.get_state()),
    }
    # Only touch CUDA if it is already in use: querying it would initialize it (slow, grabs memory).
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state_to_plain(state: Any) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = state
    return (str(name), torch.from_numpy(np.array(keys, copy=True)), int(pos), int(has_gauss), float(cached))


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------- batches


def _to_device(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, non_blocking) for v in batch)
    return batch


def _cycle(loader: Iterable[Any], name: str) -> Iterator[Any]:
    """Yield batches forever, restarting ``loader`` when it runs out; an empty loader is an error."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError(
                f"{name} yielded no batches; pass a loader with at least one batch (check the dataset size "
                "and drop_last)."
            )


def _check_loader(loader: Any, name: str) -> None:
    if not isinstance(loader, Iterable):
        raise ConfigError(
            f"{name}={type(loader).__name__} is not iterable; pass a DataLoader or any iterable of batches."
        )
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return  # an iterable without a length: emptiness is found on the first pass
    if n == 0:
        raise ConfigError(
            f"{name} is empty (len 0); pass a loader with at least one batch (check the dataset size and drop_last)."
        )


# --------------------------------------------------------------------------------------------- finder


class LRFinder:
    """The LR range test, a drop-in for ``torch_lr_finder.LRFinder``.

    Args:
        model: The model to probe; it is left exactly as it was (values, modes, gradients, device).
        optimizer: Its optimizer; its state and hyperparameters are left exactly as they were.
        criterion: ``criterion(output, target)`` for ``(inputs, ..., target)`` batches. May be ``None``
            when ``loss_fn`` is given or batches are dicts for a model that returns ``.loss``.
        device: Where to run the test; the model is moved there and back. ``None``: where it is.
        memory_cache: torch-lr-finder's option: keep the snapshot in memory (the default). With
            ``False`` a ``cache_dir`` must be given and the snapshot is written there (and removed).
        cache_dir: A folder for the snapshot file when ``memory_cache`` is ``False``.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` for any other batch shape.
        grad_scaler: A ``torch.amp.GradScaler`` for mixed precision (its state is restored afterwards).
        scheduler: A scheduler attached to ``optimizer``; it is not stepped, and its state is restored.
        snapshot_device: Where the in-memory snapshot lives: "cpu" (host memory, the default) or e.g.
            "cuda" to keep it on the accelerator (faster, uses its memory).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=1e-7)
        >>> data = [(torch.randn(16, 3), torch.randn(16, 1)) for _ in range(4)]
        >>> finder = LRFinder(model, opt, torch.nn.MSELoss())
        >>> result = finder.range_test(data, end_lr=10, num_iter=30)
        >>> sorted(finder.history) == ["loss", "lr"]
        True
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Callable[..., torch.Tensor] | None = None,
        device: str | torch.device | None = None,
        memory_cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        loss_fn: LossFn | None = None,
        grad_scaler: Any | None = None,
        scheduler: Any | None = None,
        snapshot_device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model={type(model).__name__} is not a torch.nn.Module; pass the model to probe.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(
                f"optimizer={type(optimizer).__name__} is not a torch.optim.Optimizer; pass the optimizer "
                "that trains the model, e.g. torch.optim.SGD(model.parameters(), lr=0.1)."
            )
        if criterion is not None and not callable(criterion):
            raise ConfigError(
                f"criterion={criterion!r} is not callable; pass a loss such as torch.nn.CrossEntropyLoss(), "
                "or None with loss_fn=."
            )
        if loss_fn is not None and not callable(loss_fn):
            raise ConfigError(
                f"loss_fn={loss_fn!r} is not callable; pass a function loss_fn(model, batch) -> scalar tensor."
            )
        if not memory_cache and cache_dir is None:
            raise ConfigError(
                "memory_cache=False needs a cache_dir for the snapshot file; pass cache_dir=<folder>, or "
                "keep memory_cache=True (the default)."
            )
        if grad_scaler is not None:
            _check_scaler(grad_scaler)
        if scheduler is not None and not (hasattr(scheduler, "state_dict") and hasattr(scheduler, "load_state_dict")):
            raise ConfigError(
                f"scheduler={type(scheduler).__name__} has no state_dict/load_state_dict; pass a torch LR "
                "scheduler (or None)."
            )
        self.model = model
        self.optimizer = optimizer
        self.criterion = criterion
        self.device = _as_device(device, "device") if device is not None else None
        self.snapshot_device = _as_device(snapshot_device, "snapshot_device")
        self.cache_dir = None if memory_cache else Path(cache_dir)  # type: ignore[arg-type]
        self.loss_fn = loss_fn
        self.grad_scaler = grad_scaler
        self.scheduler = scheduler
        #: torch-lr-finder's record: ``{"lr": [...], "loss": [...]}`` with the smoothed loss, as there.
        self.history: dict[str, list[float]] = {"lr": [], "loss": []}
        #: The last test's result (``None`` before the first).
        self.result: RangeTestResult | None = None
        self._snapshot: _Snapshot | None = None

    # The positional order of the first ten parameters is torch-lr-finder's, so calls written for it work.
    def range_test(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        start_lr: float | None = None,
        end_lr: float = 10.0,
        num_iter: int = 100,
        step_mode: Literal["exp", "linear"] = "exp",
        smooth_f: float = 0.05,
        diverge_th: float = 5.0,
        accumulation_steps: int = 1,
        non_blocking_transfer: bool = True,
        *,
        val_batches: int | None = None,
        loss_fn: LossFn | None = None,
        autocast_dtype: torch.dtype | None = None,
        grad_scaler: Any | None = None,
        estimator: str = suggest.DEFAULT_ESTIMATOR,
        progress: bool | None = None,
    ) -> RangeTestResult:
        """Sweep the LR from ``start_lr`` to ``end_lr`` over ``num_iter`` updates and suggest a max_lr.

        Everything is restored when the test ends, also when it raises.

        Args:
            train_loader: Batches to train on; cycled when shorter than the sweep.
            val_loader: Validation-loss mode: the recorded loss is the loss on validation batches after
                each update (smoother than a noisy training loss, slower).
            start_lr: The first LR. ``None``: the lower of the optimizer's LR and 1e-7.
            end_lr: The last LR; must be above ``start_lr``.
            num_iter: Optimizer updates in the sweep (at least 10; about 100 is typical).
            step_mode: "exp" (geometric, the usual) or "linear".
            smooth_f: The EMA weight of the newest loss, in (0, 1] (1: no smoothing).
            diverge_th: Stop when the smoothed loss rises above ``best + (diverge_th - 1) * scale``, where
                ``scale = max(|best|, 0.1 * |first - best|)``: for positive losses this is torch-lr-finder's
                ``smoothed > diverge_th * best``, and it stays meaningful for losses near zero or below.
            accumulation_steps: Micro-batches per optimizer update; the LR advances per update and the
                recorded loss is the micro-batches' mean.
            non_blocking_transfer: Copy batches to the device asynchronously.
            val_batches: In validation mode, how many validation batches per step; the first
                ``val_batches`` are kept and reused, so every step is measured on the same data.
                ``None``: all of ``val_loader`` each step (as torch-lr-finder does).
            loss_fn: ``loss_fn(model, batch) -> scalar tensor``; overrides the one given to the constructor.
            autocast_dtype: Run the forward pass under ``torch.autocast`` with this dtype
                (``torch.bfloat16`` or ``torch.float16``) on the model's device type.
            grad_scaler: A ``torch.amp.GradScaler``; overrides the constructor's. A step it skips (inf/NaN
                gradients) is retried at the same LR with the next batch and not recorded.
            estimator: Which estimator gives ``suggestion`` (see :mod:`superconv.suggest`).
            progress: Show a tqdm progress bar; ``None``: only when stderr is a terminal.

        Returns:
            A :class:`RangeTestResult` (also kept as ``self.result``; ``self.history`` is updated).

        Raises:
            ConfigError: For a bad argument or an empty loader (a ``ValueError``).

        Example:
            >>> import torch
            >>> model = torch.nn.Linear(2, 2)
            >>> opt = torch.optim.AdamW(model.parameters())
            >>> data = [(torch.randn(8, 2), torch.randint(0, 2, (8,)))] * 3
            >>> r = LRFinder(model, opt, torch.nn.CrossEntropyLoss()).range_test(data, num_iter=20)
            >>> r.one_cycle_kwargs()["max_lr"] > 0
            True
        """
        loss_fn = loss_fn if loss_fn is not None else self.loss_fn
        scaler = grad_scaler if grad_scaler is not None else self.grad_scaler
        start = self._check_args(
            train_loader, val_loader, start_lr, end_lr, num_iter, step_mode, smooth_f, diverge_th,
            accumulation_steps, val_batches, loss_fn, autocast_dtype, scaler, estimator, progress,
        )  # fmt: skip
        schedule = _schedule(start, float(end_lr), num_iter, step_mode)

        if self._snapshot is not None:  # a previous test's snapshot that reset() never consumed
            self._snapshot.restore()
        snapshot = _Snapshot(self.model, self.optimizer, scaler, self.scheduler, self.snapshot_device, self.cache_dir)
        self._snapshot = snapshot
        t0 = time.perf_counter()
        try:
            record = self._sweep(
                train_loader, val_loader, val_batches, schedule, smooth_f, diverge_th, accumulation_steps,
                non_blocking_transfer, loss_fn, autocast_dtype, scaler, progress,
            )  # fmt: skip
        finally:
            snapshot.restore()
            self._snapshot = None
        lrs, losses, train_losses, stop_reason, skipped = record

        smoothed = suggest.ema(losses, smooth_f).tolist() if losses else []
        stopped_early = stop_reason in ("diverged", "non-finite")
        analysis = suggest.analyze(lrs, losses, smooth_f, estimator=estimator, stopped_early=stopped_early)
        warning = analysis.warning
        if stop_reason == "amp-skips":
            warning = (warning + "; " if warning else "") + (
                f"the GradScaler skipped {MAX_CONSECUTIVE_SKIPS} steps in a row (inf/NaN gradients) and the "
                "test stopped"
            )
        result = RangeTestResult(
            lrs=lrs,
            losses=losses,
            smoothed_losses=smoothed,
            curve=analysis.curve.tolist() if analysis.quality not in ("too-short", "diverged-immediately") else [],
            suggestion=analysis.suggestion,
            estimates=analysis.estimates,
            estimator=estimator,
            quality=analysis.quality,
            warning=warning,
            diverged=stopped_early,
            stop_reason=stop_reason,
            div_factor=analysis.div_factor,
            min_lr=analysis.min_lr,
            train_losses=train_losses if val_loader is not None else None,
            loss_kind="val" if val_loader is not None else "train",
            start_lr=start,
            end_lr=float(end_lr),
            num_iter=num_iter,
            step_mode=step_mode,
            smooth_f=float(smooth_f),
            accumulation_steps=accumulation_steps,
            skipped_steps=skipped,
            elapsed_s=time.perf_counter() - t0,
        )
        self.result = result
        self.history = {"lr": list(lrs), "loss": list(smoothed)}
        return result

    def reset(self) -> None:
        """Restore the model and optimizer to their state before the test.

        The test already restores everything when it ends (also on error), so this is only needed for
        torch-lr-finder compatibility; calling it any number of times is safe.

        Example:
            >>> import torch
            >>> LRFinder(torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1)], lr=0.1)).reset()
        """
        if self._snapshot is not None:
            self._snapshot.restore()
            self._snapshot = None

    def plot(
        self,
        skip_start: int = 10,
        skip_end: int = 5,
        log_lr: bool = True,
        show_lr: float | None = None,
        ax: Axes | None = None,
        suggest_lr: bool = True,
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> Axes | tuple[Axes, float]:
        """torch-lr-finder's ``plot``: loss against LR with the suggestion marked.

        Args:
            skip_start: Points left out at the start (display only; the suggestion uses the whole curve).
            skip_end: Points left out at the end (display only).
            log_lr: Log LR axis (the default) or linear.
            show_lr: Draw a vertical line at this LR too.
            ax: Axes to draw into. ``None`` and no ``path``: a pyplot figure that is shown.
            suggest_lr: Return ``(ax, suggestion)`` instead of ``ax``, as torch-lr-finder does.
            path: Save the figure there (e.g. "lr.png") instead of showing it.

        Returns:
            ``ax``, or ``(ax, suggested_lr)`` when ``suggest_lr``.

        Example:
            >>> import torch
            >>> finder = LRFinder(torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1)], lr=0.1))
            >>> finder.plot()
            Traceback (most recent call last):
            ...
            superconv.errors.ConfigError: plot() needs a finished range test: call range_test(...) first.
        """
        if self.result is None:
            raise ConfigError("plot() needs a finished range test: call range_test(...) first.")
        show = ax is None and path is None
        if show:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(7, 4.5))
        # Fewer points than the skips would leave nothing to see: then show everything.
        n = len(self.result.lrs)
        if skip_start + skip_end >= n:
            skip_start = skip_end = 0
        ax = self.result.plot(path=path, ax=ax, skip_start=skip_start, skip_end=skip_end)
        if not log_lr:
            ax.set_xscale("linear")
        if show_lr is not None:
            ax.axvline(show_lr, color="red", lw=1.0)
        if path is not None:
            ax.figure.savefig(os.fspath(path), dpi=120)  # type: ignore[union-attr]
        if show:
            import matplotlib
            import matplotlib.pyplot as plt

            # Showing on a non-interactive backend (e.g. a headless server) only warns; skip it there.
            if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template"):
                plt.show()
        if suggest_lr:
            return ax, self.result.suggestion
        return ax

    # ----------------------------------------------------------------------------------------- internals

    def _check_args(
        self,
        train_loader: Any,
        val_loader: Any,
        start_lr: float | None,
        end_lr: float,
        num_iter: int,
        step_mode: str,
        smooth_f: float,
        diverge_th: float,
        accumulation_steps: int,
        val_batches: int | None,
        loss_fn: LossFn | None,
        autocast_dtype: torch.dtype | None,
        scaler: Any | None,
        estimator: str,
        progress: bool | None,
    ) -> float:
        """Validate ``range_test``'s arguments; return the start LR."""
        _check_loader(train_loader, "train_loader")
        if val_loader is not None:
            _check_loader(val_loader, "val_loader")
        if start_lr is None:
            group_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
            start = min([DEFAULT_START_LR, *(lr for lr in group_lrs if lr > 0)])
        else:
            start = _positive_float(start_lr, "start_lr", "e.g. 1e-7")
        end = _positive_float(end_lr, "end_lr", "e.g. 10")
        if end <= start:
            raise ConfigError(
                f"end_lr={end_lr!r} must be greater than start_lr={start:g}; the sweep goes up from "
                "start_lr to end_lr (e.g. start_lr=1e-7, end_lr=10)."
            )
        if not _is_int(num_iter) or num_iter < MIN_NUM_ITER:
            raise ConfigError(
                f"num_iter={num_iter!r} must be an integer >= {MIN_NUM_ITER} (too few steps to smooth "
                "and read a curve); use about 100."
            )
        if step_mode not in ("exp", "linear"):
            raise ConfigError(f"step_mode={step_mode!r} must be 'exp' (geometric, the usual) or 'linear'.")
        suggest._check_smooth_f(smooth_f)
        if isinstance(diverge_th, bool) or not isinstance(diverge_th, (int, float)) or not diverge_th > 1:
            raise ConfigError(
                f"diverge_th={diverge_th!r} must be a number > 1 (stop when the smoothed loss exceeds about "
                "diverge_th times the best); use e.g. 5."
            )
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ConfigError(
                f"accumulation_steps={accumulation_steps!r} must be an integer >= 1 (micro-batches per "
                "optimizer update); use 1 for no accumulation."
            )
        if val_batches is not None:
            if not _is_int(val_batches) or val_batches < 1:
                raise ConfigError(
                    f"val_batches={val_batches!r} must be an integer >= 1 or None (all of val_loader); use e.g. 2."
                )
            if val_loader is None:
                raise ConfigError(
                    f"val_batches={val_batches!r} was given without a val_loader; pass val_loader=... "
                    "too, or drop val_batches."
                )
        if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
            raise ConfigError(
                f"autocast_dtype={autocast_dtype!r} must be torch.bfloat16, torch.float16 or None (no autocast)."
            )
        if scaler is not None:
            _check_scaler(scaler)
        if estimator not in suggest.ESTIMATORS:
            raise ConfigError(
                f"estimator={estimator!r} is not one of {', '.join(suggest.ESTIMATORS)}; pass one of those "
                f"names (the default is {suggest.DEFAULT_ESTIMATOR!r})."
            )
        if progress is not None and not isinstance(progress, bool):
            raise ConfigError(f"progress={progress!r} must be True, False or None (only on a terminal).")
        return start

    def _device(self) -> torch.device:
        if self.device is not None:
            return self.device
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def _loss(self, batch: Any, loss_fn: LossFn | None) -> torch.Tensor:
        """The scalar loss of one batch."""
        if loss_fn is not None:
            loss: Any = loss_fn(self.model, batch)
        elif isinstance(batch, Mapping):
            # A Hugging Face-style model takes the dict as keyword arguments and returns its loss.
            out = self.model(**batch)
            loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
            if loss is None:
                raise ConfigError(
                    f"the model returned {type(out).__name__} without a 'loss' for a dict batch; pass "
                    "loss_fn=lambda model, batch: ... to compute the loss."
                )
        elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
            if self.criterion is None:
                raise ConfigError(
                    "criterion=None and no loss_fn: pass a criterion (e.g. torch.nn.CrossEntropyLoss()) for "
                    "(inputs, target) batches, or loss_fn=lambda model, batch: ... for any other batch."
                )
            loss = self.criterion(self.model(*batch[:-1]), batch[-1])
        else:
            raise ConfigError(
                f"a batch of type {type(batch).__name__} is not (inputs, ..., target); pass "
                "loss_fn=lambda model, batch: ... to say how to compute its loss."
            )
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else repr(loss)
            raise ConfigError(
                f"the loss must be a scalar tensor, got {what}; reduce it (e.g. .mean()) in the criterion or loss_fn."
            )
        return loss

    def _sweep(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        val_batches: int | None,
        schedule: list[float],
        smooth_f: float,
        diverge_th: float,
        accumulation_steps: int,
        non_blocking: bool,
        loss_fn: LossFn | None,
        autocast_dtype: torch.dtype | None,
        scaler: Any | None,
        progress: bool | None,
    ) -> tuple[list[float], list[float], list[float], StopReason, int]:
        """Run the sweep; return ``(lrs, losses, train_losses, stop_reason, skipped_steps)``."""
        model, optimizer = self.model, self.optimizer
        if self.device is not None:
            model.to(self.device)
        device = self._device()
        model.train()
        batches = _cycle(train_loader, "train_loader")
        val_cache: list[Any] | None = None
        if val_loader is not None and val_batches is not None:
            val_cache = []
            for batch in val_loader:
                val_cache.append(_to_device(batch, device, non_blocking))
                if len(val_cache) == val_batches:
                    break
            if not val_cache:
                raise ConfigError("val_loader yielded no batches; pass a loader with at least one batch.")

        def autocast() -> AbstractContextManager[Any]:
            if autocast_dtype is None:
                return nullcontext()
            return torch.autocast(device_type=device.type, dtype=autocast_dtype)

        lrs: list[float] = []
        losses: list[float] = []
        train_losses: list[float] = []
        stop: StopReason = "completed"
        skipped = consecutive_skips = 0
        beta = 1.0 - smooth_f
        avg = 0.0
        best = math.inf
        first = math.nan

        show = sys.stderr.isatty() if progress is None else progress
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(schedule), desc="LR range test", leave=False)
        try:
            i = 0
            while i < len(schedule):
                lr = schedule[i]
                for group in optimizer.param_groups:
                    if isinstance(group["lr"], torch.Tensor):
                        group["lr"].fill_(lr)
                    else:
                        group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                total: torch.Tensor | None = None
                for _ in range(accumulation_steps):
                    batch = _to_device(next(batches), device, non_blocking)
                    with autocast():
                        loss = self._loss(batch, loss_fn)
                    detached = loss.detach().float()
                    total = detached if total is None else total + detached
                    scaled = loss / accumulation_steps if accumulation_steps > 1 else loss
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                assert total is not None
                train_loss = total.item() / accumulation_steps  # the one host sync per update
                if not math.isfinite(train_loss):
                    stop = "non-finite"
                    break
                if scaler is not None:
                    scale_before = scaler.get_scale()
                    scaler.step(optimizer)
                    scaler.update()
                    if scaler.get_scale() < scale_before:
                        # The scaler found inf/NaN gradients and skipped the update: same LR, next batch.
                        skipped += 1
                        consecutive_skips += 1
                        if consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                            stop = "amp-skips"
                            break
                        continue
                    consecutive_skips = 0
                else:
                    optimizer.step()

                recorded = train_loss
                if val_loader is not None:
                    recorded = self._val_loss(val_cache if val_cache is not None else val_loader, device,
                                              non_blocking, loss_fn, autocast)  # fmt: skip
                    if not math.isfinite(recorded):
                        stop = "non-finite"
                        break
                lrs.append(lr)
                losses.append(recorded)
                train_losses.append(train_loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(lr=f"{lr:.2g}", loss=f"{recorded:.4g}")

                avg = beta * avg + smooth_f * recorded
                smoothed = avg / (1.0 - beta ** (i + 1))
                if i == 0:
                    first = smoothed
                best = min(best, smoothed)
                scale = max(abs(best), 0.1 * abs(first - best))
                if smoothed > best + (diverge_th - 1.0) * scale:
                    stop = "diverged"
                    break
                i += 1
        finally:
            if bar is not None:
                bar.close()
        return lrs, losses, train_losses, stop, skipped

    def _val_loss(
        self,
        loader: Iterable[Any],
        device: torch.device,
        non_blocking: bool,
        loss_fn: LossFn | None,
        autocast: Callable[[], AbstractContextManager[Any]],
    ) -> float:
        """The mean loss over the validation batches, in eval mode and without gradients."""
        self.model.eval()
        total = torch.zeros((), device=device)
        count = 0
        with torch.no_grad():
            for batch in loader:
                with autocast():
                    total += self._loss(_to_device(batch, device, non_blocking), loss_fn).detach().float()
                count += 1
        self.model.train()
        if count == 0:
            raise ConfigError("val_loader yielded no batches; pass a loader with at least one batch.")
        return total.item() / count


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable[Any],
    criterion: Callable[..., torch.Tensor] | None = None,
    *,
    device: str | torch.device | None = None,
    loss_fn: LossFn | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    **range_test_kwargs: Any,
) -> RangeTestResult:
    """One call for ``superconv find-lr``: run the range test and write the requested outputs.

    Args:
        model: The model to probe (left unchanged).
        optimizer: Its optimizer (left unchanged).
        train_loader: The training batches.
        criterion: ``criterion(output, target)``; or ``None`` with ``loss_fn``.
        device: Where to run; ``None``: where the model is.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` for other batch shapes.
        plot_path: Write the plot there (PNG) if given.
        json_path: Write the result as JSON there if given.
        csv_path: Write the curve as CSV there if given.
        **range_test_kwargs: Passed to :meth:`LRFinder.range_test` (start_lr, end_lr, num_iter, ...).

    Returns:
        The :class:`RangeTestResult`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> data = [(torch.randn(8, 2), torch.randint(0, 2, (8,)))] * 2
        >>> find_lr(model, opt, data, torch.nn.CrossEntropyLoss(), num_iter=20).num_iter
        20
    """
    finder = LRFinder(model, optimizer, criterion, device=device, loss_fn=loss_fn)
    result = finder.range_test(train_loader, **range_test_kwargs)
    if plot_path is not None:
        result.plot(plot_path)
    if json_path is not None:
        result.to_json(json_path)
    if csv_path is not None:
        result.to_csv(csv_path)
    return result


def _schedule(start: float, end: float, num_iter: int, step_mode: str) -> list[float]:
    """The LR of each update: geometric or linear from ``start`` to ``end`` inclusive."""
    if step_mode == "exp":
        return [start * (end / start) ** (i / (num_iter - 1)) for i in range(num_iter)]
    return [start + (end - start) * i / (num_iter - 1) for i in range(num_iter)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_float(value: Any, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a finite number > 0 ({hint}).")
    return float(value)


def _as_device(value: Any, name: str) -> torch.device:
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{name}={value!r} is not a torch device; pass e.g. 'cpu' or 'cuda'.") from exc


def _check_scaler(scaler: Any) -> None:
    if not all(hasattr(scaler, a) for a in ("scale", "step", "update", "get_scale", "state_dict")):
        raise ConfigError(
            f"grad_scaler={type(scaler).__name__} is not a GradScaler; pass torch.amp.GradScaler(...) or None."
        )
