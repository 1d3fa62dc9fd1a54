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
  estimators (:mod:`superconv.finder.suggest`), with a quality flag when the curve does not support one.

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

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from superconv.errors import ConfigError
from superconv.finder import suggest
from superconv.finder.result import RangeTestResult, StopReason
from superconv.finder.snapshot import Snapshot

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

LossFn = Callable[[nn.Module, Any], torch.Tensor]

#: A sweep shorter than this cannot be smoothed and read reliably.
MIN_NUM_ITER = suggest.MIN_POINTS
#: Default start of the sweep when neither ``start_lr`` nor a lower optimizer LR is given.
DEFAULT_START_LR = 1e-7
#: After this many GradScaler-skipped steps in a row the test gives up (the scale has collapsed).
MAX_CONSECUTIVE_SKIPS = 50


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
        self._snapshot: Snapshot | None = None

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
            estimator: Which estimator gives ``suggestion`` (see :mod:`superconv.finder.suggest`).
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
        snapshot = Snapshot(self.model, self.optimizer, scaler, self.scheduler, self.snapshot_device, self.cache_dir)
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
