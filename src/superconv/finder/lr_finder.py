"""The LR range test (Smith, "Cyclical Learning Rates", https://arxiv.org/abs/1506.01186).

Train for a short sweep while the learning rate grows from ``start_lr`` to ``end_lr``, record the loss,
and read off the ``max_lr`` of a one-cycle run. :class:`LRFinder` is a drop-in for ``torch_lr_finder.LRFinder``:
the same constructor, ``range_test``, ``history``, ``best_loss``, ``reset`` and ``plot``, the same sweep and
smoothing (the same ``history`` for the same run), the same loaders (a ``DataLoader`` or torch-lr-finder's
``TrainDataLoaderIter``/``ValDataLoaderIter`` adapters) and the same exception types. Where it deliberately
differs is listed in ``docs/lr_finder_dropin.md``; mainly, it also:

* puts everything back exactly, automatically, also when the test raises: parameters, buffers (BatchNorm running
  stats), gradients, train/eval modes, optimizer state and hyperparameters, a GradScaler, an attached scheduler
  and the RNG streams (torch, CUDA, ``random``, numpy), and the model's device;
* stops at once on NaN/inf (before the update), and a GradScaler-skipped step does not advance the sweep;
* takes other batch shapes: dicts for Hugging Face-style models, ``loss_fn(model, batch)``, and plain lists of
  ``(x1, ..., xn, target)`` batches (see :mod:`superconv.finder.batches`);
* returns a :class:`RangeTestResult` whose suggestion is read on the log-LR axis of a lag-free curve by several
  estimators (:mod:`superconv.finder.suggest`), with a quality flag when the curve does not support one.

Example:
    >>> import torch
    >>> from superconv import LRFinder
    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
    >>> result = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss()).range_test(data, num_iter=20)
    >>> len(result.lrs) <= 20 and result.suggestion > 0
    True
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import superconv.distributed as distributed
import superconv.finder.amp as amp
import superconv.finder.plotting as plotting
import superconv.finder.suggest as suggest
from superconv.device import resolve_device
from superconv.errors import ConfigError
from superconv.finder.batches import BatchLoss, LossFn, TrainBatches, loader_kind
from superconv.finder.plan import SweepPlan, make_plan
from superconv.finder.result import RangeTestResult
from superconv.finder.snapshot import Snapshot
from superconv.finder.sweep import MAX_CONSECUTIVE_SKIPS, Sweep, SweepRecord
from superconv.finder.verify import Verification, verify

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["DEFAULT_START_LR", "LRFinder", "RangeTestResult", "find_lr"]

#: ``find_lr``'s first LR when none is given (``LRFinder.range_test`` starts at the optimizer's LR, as
#: torch-lr-finder does).
DEFAULT_START_LR = 1e-7


class LRFinder:
    """The LR range test, a drop-in for ``torch_lr_finder.LRFinder``.

    Args:
        model: The model to probe; it is left exactly as it was (values, modes, gradients, device).
        optimizer: Its optimizer; its state and hyperparameters are left exactly as they were.
        criterion: ``criterion(output, target)``. May be ``None`` when ``loss_fn`` is given or batches are
            dicts for a model that returns ``.loss``.
        device: Where to run the test; the model is moved there and back. ``None``: where it is.
        memory_cache: Keep the snapshot in memory (the default); ``False``: in a file under ``cache_dir``
            (the system's temporary folder when ``None``), removed afterwards.
        cache_dir: The folder for that file.
        amp_backend: torch-lr-finder's mixed precision: ``None`` (off), ``"torch"`` (``torch.autocast`` with
            ``amp_config``; needs ``grad_scaler``) or ``"apex"`` (NVIDIA apex, if installed).
        amp_config: ``torch.autocast`` keyword arguments, e.g. ``{"device_type": "cuda", "dtype": torch.float16}``
            (``device_type`` defaults to the test's device).
        grad_scaler: A ``torch.amp.GradScaler`` (its state is restored afterwards); used whenever given.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` for any other batch shape.
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
        amp_backend: str | None = None,
        amp_config: Mapping[str, Any] | None = None,
        grad_scaler: Any | None = None,
        *,
        loss_fn: LossFn | None = None,
        scheduler: Any | None = None,
        snapshot_device: str | torch.device = "cpu",
    ) -> None:
        _check_parts(model, optimizer, criterion, loss_fn, scheduler)
        self._apex_amp = amp.check_amp(amp_backend, amp_config, grad_scaler)
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.device = resolve_device(device) if device is not None else None
        self.snapshot_device = resolve_device(snapshot_device)
        self.cache_dir = None if memory_cache else _cache_dir(cache_dir)
        self.amp_backend, self.amp_config, self.grad_scaler = amp_backend, amp_config, grad_scaler
        self.loss_fn, self.scheduler = loss_fn, scheduler
        #: torch-lr-finder's record of the last test: ``{"lr": [...], "loss": [...]}`` with the smoothed loss.
        self.history: dict[str, list[float]] = {"lr": [], "loss": []}
        #: The lowest smoothed loss of the last test (``None`` before the first).
        self.best_loss: float | None = None
        #: The last test's result (``None`` before the first).
        self.result: RangeTestResult | None = None
        self._snapshot: Snapshot | None = None

    def range_test(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        start_lr: float | list[float] | None = None,
        end_lr: float = 10,
        num_iter: int = 100,
        step_mode: str = "exp",
        smooth_f: float = 0.05,
        diverge_th: float = 5,
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

        The first ten parameters are torch-lr-finder's, in its order and with its defaults. Everything is
        restored when the test ends, also when it raises; ``history`` holds what was recorded either way.

        Args:
            train_loader: A ``DataLoader``, a torch-lr-finder ``TrainDataLoaderIter``, or a collection of batches
                with a length (see :mod:`superconv.finder.batches`); cycled when shorter than the sweep.
            val_loader: Validation-loss mode: the recorded loss is the loss per sample on these batches after
                each update (smoother than a noisy training loss, slower). A ``ValDataLoaderIter`` works too.
            start_lr: The first LR (one, or one per param group). ``None``: each group's current LR.
            end_lr: The last LR; must be above the start.
            num_iter: Optimizer updates in the sweep (>= 2; about 100 gives a curve to read).
            step_mode: "exp" (geometric, the usual) or "linear".
            smooth_f: The weight of the newest loss in the recorded moving average, in [0, 1); 0: no smoothing.
            diverge_th: Stop when the smoothed loss exceeds ``diverge_th`` times the best (see
                :class:`superconv.finder.plan.Divergence` for losses near or below zero).
            accumulation_steps: Micro-batches per optimizer update; the LR advances per update and the
                recorded loss is the micro-batches' mean.
            non_blocking_transfer: Copy batches to the device asynchronously.
            val_batches: In validation mode, evaluate only the first ``val_batches`` batches (kept on the
                device and reused, so every step is measured on the same data). ``None``: all of them.
            loss_fn: ``loss_fn(model, batch) -> scalar tensor``; overrides the constructor's.
            autocast_dtype: Run the forward pass under ``torch.autocast`` with this dtype (``torch.bfloat16``
                or ``torch.float16``) on the test's device; overrides ``amp_config``.
            grad_scaler: A ``torch.amp.GradScaler``; overrides the constructor's. A step it skips (inf/NaN
                gradients) is retried at the same LR with the next batch and not recorded.
            estimator: Which estimator gives ``suggestion`` (see :mod:`superconv.finder.suggest`).
            progress: Show a tqdm progress bar; ``None``: only when stderr is a terminal.

        Returns:
            A :class:`RangeTestResult` (also kept as ``self.result``); torch-lr-finder returns None.

        Raises:
            ConfigError: (a ``ValueError``) for a bad argument, an unsupported or empty loader.
        """
        group_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        plan = make_plan(group_lrs, start_lr, end_lr, num_iter, step_mode, smooth_f, diverge_th,
                         accumulation_steps, non_blocking_transfer, val_batches)  # fmt: skip
        train_kind = loader_kind(train_loader, "train_loader")
        scaler = grad_scaler if grad_scaler is not None else self.grad_scaler
        _check_options(val_loader, val_batches, scaler, autocast_dtype, estimator, progress)
        t0 = time.perf_counter()
        batches = TrainBatches(train_loader, train_kind)
        record = self._sweep(plan, batches, val_loader, loss_fn or self.loss_fn, scaler, autocast_dtype, progress)
        self.result = _result(record, plan, estimator, val_loader is not None, time.perf_counter() - t0)
        return self.result

    def _sweep(
        self,
        plan: SweepPlan,
        batches: TrainBatches,
        val_loader: Iterable[Any] | None,
        loss_fn: LossFn | None,
        scaler: Any | None,
        autocast_dtype: torch.dtype | None,
        progress: bool | None,
    ) -> SweepRecord:
        """Snapshot, sweep, restore (also on error); ``history`` fills as the sweep runs."""
        self.reset()  # a previous test's snapshot that was never restored
        self._snapshot = Snapshot(self.model, self.optimizer, scaler, self.scheduler, self.snapshot_device,
                                  self.cache_dir)  # fmt: skip
        record = SweepRecord()
        self.history, self.best_loss = {"lr": record.lrs, "loss": record.smoothed}, None
        try:
            if self.device is not None:
                self.model.to(self.device)
            device = self._device()
            batch_loss = BatchLoss(self.model, self.criterion, loss_fn, batches.kind)
            precision = amp.Precision(device, self.amp_backend, self.amp_config, scaler, autocast_dtype, self._apex_amp)
            sweep = Sweep(self.model, self.optimizer, plan, batch_loss, precision, device, val_loader)
            show = (sys.stderr.isatty() if progress is None else progress) and distributed.is_main()
            sweep.run(batches, record, show)
        finally:
            self.reset()
            self.history = {"lr": list(record.lrs), "loss": list(record.smoothed)}
            self.best_loss = min(record.smoothed) if record.smoothed else None
        return record

    def verify(
        self, train_loader: Iterable[Any], val_loader: Iterable[Any], *, run_steps: int | None = None, **kwargs: Any
    ) -> Verification:
        """Opt-in: check the last test's suggestion with short one-cycle probes, chosen by validation.

        superconv's addition (torch-lr-finder has no such step, and nothing here changes its defaults): see
        :func:`superconv.finder.verify.verify`. The model, optimizer, criterion, ``loss_fn``, device, GradScaler
        and autocast settings are this finder's; everything is restored after every probe.

        Args:
            train_loader: Training batches for the probes.
            val_loader: Validation batches that choose between the candidates.
            run_steps: Optimizer updates of the run the LR is for (each probe takes a share of it).
            **kwargs: Any other :func:`~superconv.finder.verify.verify` argument (``candidates``, ``metric``,
                ``probe_steps``, ``autocast_dtype``, ...).

        Returns:
            A :class:`~superconv.finder.verify.Verification`: ``.lr`` to train with, ``.summary()`` why.

        Raises:
            ConfigError: Before a range test, or for a bad argument.
        """
        if self.result is None:
            raise ConfigError(
                "LRFinder.verify needs the range test's curve, but no test has run: call range_test(...) first."
            )
        kwargs.setdefault("loss_fn", self.loss_fn)
        kwargs.setdefault("grad_scaler", self.grad_scaler)
        kwargs.setdefault("snapshot_device", self.snapshot_device)
        if self.device is not None:
            kwargs.setdefault("device", self.device)
        if self.amp_backend == "torch" and (self.amp_config or {}).get("dtype") is not None:
            kwargs.setdefault("autocast_dtype", (self.amp_config or {})["dtype"])
        return verify(self.model, self.optimizer, self.result, train_loader, val_loader, criterion=self.criterion,
                      run_steps=run_steps, **kwargs)  # fmt: skip

    def reset(self) -> None:
        """Restore the model and optimizer to their state before the test.

        The test already restores everything when it ends (also on error), so this is only needed for
        torch-lr-finder compatibility; calling it any number of times is safe.

        Example:
            >>> import torch
            >>> LRFinder(torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1)], lr=0.1)).reset()
        """
        if self._snapshot is not None:
            snapshot, self._snapshot = self._snapshot, None
            snapshot.restore()

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
        """torch-lr-finder's ``plot``: ``history``'s loss against LR as one line, and the suggestion as a dot.

        superconv's detailed figure is :meth:`plot_detailed` (or ``result.plot(path)``).

        Args:
            skip_start: Points left out at the start (display only; the suggestion uses the whole curve).
            skip_end: Points left out at the end (display only).
            log_lr: Log LR axis (the default) or linear.
            show_lr: Draw a vertical line at this LR too.
            ax: Axes to draw into. ``None`` and no ``path``: a pyplot figure that is shown.
            suggest_lr: Mark the suggestion and return ``(ax, suggested_lr)`` instead of ``ax``.
            path: Save the figure there (e.g. "lr.png") instead of showing it.

        Returns:
            ``ax``, or ``(ax, suggested_lr)`` with ``suggest_lr``: superconv's suggestion (``result.suggestion``),
            not torch-lr-finder's steepest point of the displayed part.

        Raises:
            RuntimeError: With ``suggest_lr``, when ``history`` has fewer than ``skip_start + skip_end + 2`` points.

        Example:
            >>> import torch
            >>> finder = LRFinder(torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1)], lr=0.1))
            >>> finder.plot()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            RuntimeError: Need at least 17 iterations to suggest a learning rate. Got 0; ...
        """
        plotting.check_history_plot(len(self.history["lr"]), skip_start, skip_end, show_lr, suggest_lr)
        suggestion = self._suggestion() if suggest_lr else None
        ax = plotting.plot_history(self.history, suggestion, skip_start=skip_start, skip_end=skip_end,
                                   log_lr=log_lr, show_lr=show_lr, ax=ax, path=path)  # fmt: skip
        return (ax, suggestion) if suggestion is not None else ax

    def plot_detailed(self, path: str | os.PathLike[str] | None = None, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """superconv's figure of the last test (:meth:`RangeTestResult.plot`): raw, smoothed and lag-free curves,
        every estimator; saved to ``path`` when given."""
        if self.result is None:
            raise ConfigError("plot_detailed() needs a finished range test: call range_test(...) first.")
        return self.result.plot(path, ax, **kwargs)

    def _suggestion(self) -> float:
        """The last test's suggestion; re-read from ``history`` if it was changed since."""
        if self.result is not None and list(self.history["lr"]) == self.result.lrs:
            return self.result.suggestion
        return suggest.analyze(self.history["lr"], self.history["loss"], smooth_f=1.0).suggestion

    def _device(self) -> torch.device:
        if self.device is not None:
            return self.device
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")


def _check_parts(
    model: Any, optimizer: Any, criterion: Any, loss_fn: Any, scheduler: Any
) -> None:  # the constructor's checks
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
    if scheduler is not None and not (hasattr(scheduler, "state_dict") and hasattr(scheduler, "load_state_dict")):
        raise ConfigError(
            f"scheduler={type(scheduler).__name__} has no state_dict/load_state_dict; pass a torch LR "
            "scheduler (or None)."
        )


def _check_options(
    val_loader: Any, val_batches: Any, scaler: Any, autocast_dtype: Any, estimator: Any, progress: Any
) -> None:  # range_test's checks beyond the plan's
    if val_loader is not None:
        loader_kind(val_loader, "val_loader")
    elif val_batches is not None:
        raise ConfigError(f"val_batches={val_batches!r} was given without a val_loader; pass val_loader=... too.")
    amp.check_scaler(scaler)
    amp.check_autocast_dtype(autocast_dtype)
    if estimator not in suggest.ESTIMATORS:
        raise ConfigError(f"Unknown estimator {estimator!r}: expected one of {', '.join(suggest.ESTIMATORS)}")
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError(f"Expected progress to be True, False or None (only on a terminal), but got {progress!r}")


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    folder = Path(tempfile.gettempdir() if cache_dir is None else cache_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cache_dir={os.fspath(folder)!r} is a file, not a folder; pass a folder for the snapshot.")
    return folder


def _result(record: SweepRecord, plan: SweepPlan, estimator: str, validation: bool, elapsed: float) -> RangeTestResult:
    """Read the suggestion off the recorded curve."""
    stopped_early = record.stop_reason in ("diverged", "non-finite")
    analysis = suggest.analyze(
        record.lrs, record.losses, plan.smooth_f or 1.0, estimator=estimator, stopped_early=stopped_early
    )
    warning = analysis.warning
    if record.stop_reason == "amp-skips":
        warning = (warning + "; " if warning else "") + (
            f"the GradScaler skipped {MAX_CONSECUTIVE_SKIPS} steps in a row (inf/NaN gradients) and the test stopped"
        )
    return RangeTestResult(
        lrs=list(record.lrs),
        losses=list(record.losses),
        smoothed_losses=list(record.smoothed),
        curve=analysis.curve.tolist() if analysis.quality not in ("too-short", "diverged-immediately") else [],
        suggestion=analysis.suggestion,
        estimates=analysis.estimates,
        estimator=estimator,
        quality=analysis.quality,
        warning=warning,
        diverged=stopped_early,
        stop_reason=record.stop_reason,
        div_factor=analysis.div_factor,
        min_lr=analysis.min_lr,
        train_losses=list(record.train_losses) if validation else None,
        loss_kind="val" if validation else "train",
        start_lr=plan.start_lrs[0],
        end_lr=plan.end_lr,
        num_iter=plan.num_iter,
        step_mode="exp" if plan.step_mode == "exp" else "linear",
        smooth_f=plan.smooth_f,
        accumulation_steps=plan.accumulation_steps,
        skipped_steps=record.skipped,
        elapsed_s=elapsed,
        confidence=analysis.confidence.to_dict(),
    )


def _write_outputs(result: RangeTestResult, plot_path: Any, json_path: Any, csv_path: Any) -> None:
    if plot_path is not None:
        result.plot(plot_path)
    if json_path is not None:
        result.to_json(json_path)
    if csv_path is not None:
        result.to_csv(csv_path)


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

    Unlike ``LRFinder.range_test``, the sweep starts at :data:`DEFAULT_START_LR` (1e-7) when ``start_lr`` is
    not given (or ``None``), whatever the optimizer's LR.

    Args:
        model: The model to probe (left unchanged).
        optimizer: Its optimizer (left unchanged).
        train_loader: The training batches.
        criterion: ``criterion(output, target)``; or ``None`` with ``loss_fn``.
        device: Where to run; ``None``: where the model is.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` for other batch shapes.
        plot_path: Write the detailed plot there (PNG) if given.
        json_path: Write the result as JSON there if given.
        csv_path: Write the curve as CSV there if given.
        **range_test_kwargs: Passed to :meth:`LRFinder.range_test` (start_lr, end_lr, num_iter, ...).

    Returns:
        The :class:`RangeTestResult`.

    Raises:
        ConfigError: When the test recorded no usable point (the outputs are written first), with what to try.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> data = [(torch.randn(8, 2), torch.randint(0, 2, (8,)))] * 2
        >>> find_lr(model, opt, data, torch.nn.CrossEntropyLoss(), num_iter=20).num_iter
        20
    """
    if range_test_kwargs.get("start_lr") is None:
        range_test_kwargs["start_lr"] = DEFAULT_START_LR
    finder = LRFinder(model, optimizer, criterion, device=device, loss_fn=loss_fn)
    result = finder.range_test(train_loader, **range_test_kwargs)
    if distributed.is_main():  # several processes: one curve, written once
        _write_outputs(result, plot_path, json_path, csv_path)
    result.one_cycle_kwargs()  # no usable point: say so (ConfigError) rather than return a NaN max_lr
    return result
