"""``superconv.fit``: the seed's whole workflow as one call.

Range test -> one-cycle schedule stepped after every optimizer update -> train/validation phases
with loss and accuracy -> early stopping -> best checkpoint -> test on the best weights.

The loop is written for speed from the start: batches arrive already on the device, losses and
accuracies accumulate as device tensors (``.item()`` only at log points and epoch ends), bf16
autocast and channels_last where the hardware has them, and the schedule counts optimizer
updates, so gradient accumulation and skipped AMP steps never shift it.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superconv import rng
from superconv.device import resolve_device, resolve_precision, use_channels_last
from superconv.errors import CheckpointError, ConfigError
from superconv.schedule.baselines import ONE_CYCLE_SCHEDULES, SCHEDULES, build_scheduler
from superconv.schedule.steps import total_steps as count_total_steps
from superconv.train.checkpoint import load_checkpoint, save_checkpoint, state_on_cpu
from superconv.train.ema import WeightEMA
from superconv.train.events import Callback, EarlyStopping

CHECKPOINT_FORMAT = "superconv-checkpoint-v1"
MONITORS = ("val_accuracy", "val_loss")
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class FitState:
    """What callbacks see. ``step`` counts optimizer updates; ``batch`` counts batches in the epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    epoch: int = 0
    step: int = 0
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stop_training: bool = False
    loss: torch.Tensor | None = None  # the last batch's loss, as a device tensor


@dataclass
class FitResult:
    """Everything a run produced; ``to_dict()`` is plain data (metrics.json)."""

    history: list[dict[str, float]]
    max_lr: float
    epochs: int
    steps: int
    device: str
    precision: str
    train_seconds: float
    range_test_seconds: float = 0.0
    # Wall time of the first optimizer update of this process (includes torch.compile's warm-up when on).
    first_step_seconds: float | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    stopped_early: bool = False
    interrupted: bool = False
    diverged: bool = False
    message: str = ""
    schedule: str = "one-cycle"
    ema: float | None = None  # the weight average's decay when validation/test used the average
    lrs: list[float] = field(default_factory=list, repr=False)
    momentums: list[float | None] = field(default_factory=list, repr=False)
    range_test: Any = field(default=None, repr=False)
    checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("range_test")
        d.pop("lrs")
        d.pop("momentums")
        if self.range_test is not None:
            d["lr_suggestion"] = {
                "suggestion": self.range_test.suggestion,
                "quality": self.range_test.quality,
            }
        return d


class _GracefulStop:
    """Ctrl-C or SIGTERM asks the loop to stop at the next update boundary; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        print(
            f"\nsuperconv: {name} received: saving a checkpoint at the next step (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    def __enter__(self) -> _GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _progress_enabled(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _split_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Weight decay on weights only: decaying BatchNorm scales and biases only hurts.
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(
    model: nn.Module, name: str, *, lr: float, weight_decay: float, momentum: float, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with Nesterov momentum, weight decay on weights only, fused on CUDA."""
    groups = _split_decay_groups(model, weight_decay)
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **fused)
    raise ConfigError(f"Unknown optimizer {name!r}: expected one of {OPTIMIZERS}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    tta: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``loader``, accumulated on the device (one sync at the end).

    ``tta`` averages the logits of each image and its horizontal flip.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _autocast(device, autocast_dtype):
            logits = model(inputs)
            if tta:
                logits = logits + model(inputs.flip(-1))
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        count += labels.shape[0]
    model.train(was_training)
    if count == 0:
        raise ConfigError("The evaluation loader yielded no batches: give it at least one example")
    return loss_sum.item() / count, correct.item() / count


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    epochs: int = 10,
    max_lr: float | None = None,
    optimizer: str | torch.optim.Optimizer = "adamw",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    label_smoothing: float = 0.0,
    criterion: nn.Module | None = None,
    schedule: str = "one-cycle",
    schedule_kwargs: dict[str, Any] | None = None,
    accumulation_steps: int = 1,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | str = "auto",
    compile: bool = False,
    patience: int | None = None,
    monitor: str = "val_accuracy",
    test_loader: Iterable[Any] | None = None,
    tta: bool = False,
    ema: float | None = None,
    ema_every: int = 1,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    range_test_kwargs: dict[str, Any] | None = None,
    progress: bool | None = None,
    verbose: bool = True,
    log_every: int = 50,
    config: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` with super-convergence: range test, one cycle, early stopping, best checkpoint.

    Args:
        model: Any classifier returning logits; moved to ``device``.
        train_loader: Yields ``(inputs, labels)``; must have ``len()``. A ``set_epoch(epoch)`` method,
            when present, is called each epoch (reproducible shuffles, exact resume).
        val_loader: Validation batches, evaluated after every epoch (drives early stopping and the best
            checkpoint). Optional.
        epochs: Training epochs.
        max_lr: Peak LR. ``None`` runs the LR range test and uses its suggestion.
        optimizer: ``"adamw"`` (default), ``"sgd"`` (Nesterov), or your own optimizer instance.
        weight_decay: Decoupled weight decay on weights (not norms or biases).
        momentum: SGD momentum / Adam beta1 when the schedule does not cycle it.
        label_smoothing: For the default cross-entropy criterion.
        criterion: Training loss; default ``nn.CrossEntropyLoss(label_smoothing=...)``.
        schedule: One of :data:`superconv.schedule.baselines.SCHEDULES` (default ``"one-cycle"``).
        schedule_kwargs: Extra :class:`superconv.OneCycleLR` arguments (``preset``, ``pct_start``, ...).
        accumulation_steps: Batches per optimizer update.
        device: ``None``/"auto" picks cuda, mps, cpu.
        precision: ``"auto"`` (bf16 on GPUs and bf16-capable CPUs, else fp32), ``"bf16"``, ``"fp16"``, ``"fp32"``.
        channels_last: ``"auto"``, True or False.
        compile: Wrap the model in ``torch.compile``.
        patience: Early stopping after this many epochs without improvement of ``monitor`` (None: off).
        monitor: ``"val_accuracy"`` or ``"val_loss"``.
        test_loader: Evaluated once at the end, on the best weights.
        tta: Average predictions with the horizontal flip at evaluation.
        ema: Decay per optimizer update of an exponential moving average of the weights (e.g. 0.99);
            when set, validation, the best checkpoint, the test and the returned model use the
            averaged weights (:class:`superconv.train.ema.WeightEMA`). ``None``: off.
        ema_every: Optimizer updates between EMA updates (the decay is compounded to match).
        out_dir: Where ``best.pt``, ``last.pt``, ``metrics.json``, ``epochs.csv`` and plots go.
        resume: Continue the run saved in ``out_dir/last.pt`` exactly where it stopped.
        callbacks: :class:`superconv.Callback` objects.
        range_test_kwargs: Extra arguments for :meth:`superconv.LRFinder.range_test`.
        progress: Progress bars (default: only when stderr is a terminal).
        verbose: Print the per-epoch table.
        log_every: Optimizer updates between progress updates (and NaN checks).
        config: Plain data saved with checkpoints and metrics (the CLI's resolved options).

    Returns:
        A :class:`FitResult`.
    """
    _check_fit_args(epochs, accumulation_steps, patience, monitor, schedule, log_every, train_loader)
    if max_lr is not None and not (isinstance(max_lr, (int, float)) and math.isfinite(max_lr) and max_lr > 0):
        raise ConfigError(f"Expected max_lr to be a positive, finite learning rate, but got {max_lr!r}")
    dev = resolve_device(device)
    autocast_dtype = resolve_precision(precision, dev)
    cl = use_channels_last(channels_last, dev)
    precision_name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype]
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir: the run directory holding last.pt")

    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    forward_model: nn.Module = torch.compile(model) if compile else model  # type: ignore[assignment]
    if criterion is None:
        criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    criterion = criterion.to(dev)

    opt = (
        optimizer
        if isinstance(optimizer, torch.optim.Optimizer)
        else make_optimizer(
            model, optimizer, lr=max_lr or 1e-3, weight_decay=weight_decay, momentum=momentum, device=dev
        )
    )
    scaler = torch.amp.GradScaler(dev.type) if autocast_dtype is torch.float16 else None
    if ema is not None:
        WeightEMA.check(ema, ema_every)  # bad settings fail before the range test, not after it

    ckpt: dict[str, Any] | None = None
    if resume:
        assert out is not None
        ckpt = _load_resume_checkpoint(out / "last.pt", config)
        max_lr = float(ckpt["max_lr"])

    range_result = None
    range_seconds = 0.0
    one_cycle_kwargs = dict(schedule_kwargs or {})
    if max_lr is None:
        from superconv.finder.lr_finder import LRFinder

        t0 = time.perf_counter()
        finder = LRFinder(forward_model, opt, criterion, device=dev)
        rt_kwargs = {
            "autocast_dtype": autocast_dtype,
            "grad_scaler": scaler,  # fp16: the range test scales its losses as training will (state restored)
            "progress": _progress_enabled(progress),
            **(range_test_kwargs or {}),
        }
        range_result = finder.range_test(train_loader, **rt_kwargs)
        range_seconds = time.perf_counter() - t0
        suggested = range_result.one_cycle_kwargs()
        max_lr = float(suggested.pop("max_lr"))
        if schedule in ONE_CYCLE_SCHEDULES:
            for key, value in suggested.items():
                one_cycle_kwargs.setdefault(key, value)
        if range_result.quality != "ok" and verbose:
            warnings.warn(f"LR range test: {range_result.warning}", UserWarning, stacklevel=2)
        if verbose:
            print(f"LR range test: suggested max_lr={max_lr:.3g} ({range_seconds:.1f} s)")

    n_batches = len(train_loader)  # type: ignore[arg-type]
    total = count_total_steps(epochs, n_batches, accumulation_steps)
    if schedule not in ONE_CYCLE_SCHEDULES:
        one_cycle_kwargs = {}
    elif scaler is not None:
        one_cycle_kwargs["count_updates"] = True
    if total < 2:
        raise ConfigError(
            f"The run has only {total} optimizer update(s) (epochs={epochs}, {n_batches} batches per epoch, "
            f"accumulation_steps={accumulation_steps}): train longer or use a smaller batch size"
        )
    sched = build_scheduler(schedule, opt, max_lr, total, **one_cycle_kwargs)
    averager = WeightEMA(model, ema, ema_every) if ema is not None else None  # after the range test's restore
    eval_model = averager.module if averager is not None else forward_model

    stopper = EarlyStopping(patience, mode="max" if monitor == "val_accuracy" else "min") if patience else None
    state = FitState(model=model, optimizer=opt, scheduler=sched, device=dev)
    result = FitResult(
        history=state.history,
        max_lr=max_lr,
        epochs=0,
        steps=0,
        device=str(dev),
        precision=precision_name,
        train_seconds=0.0,
        range_test_seconds=range_seconds,
        schedule=schedule,
        ema=ema,
        range_test=range_result,
    )
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, start_batch, elapsed_before = 0, 0, 0.0

    if ckpt is not None:
        assert out is not None
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"Cannot resume from {out / 'last.pt'}: it does not match this run ({first}). Resume with the "
                "same model, optimizer, epochs, batch size and accumulation as the saved run"
            ) from exc
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if averager is not None:
            if not ckpt.get("ema"):
                raise CheckpointError(
                    f"Cannot resume from {out / 'last.pt'} with ema={ema}: the saved run trained without an EMA; "
                    "resume it with ema=None (superconv train --resume DIR --no-ema)"
                )
            averager.load_state_dict(ckpt["ema"])
        if stopper is not None and ckpt.get("early_stopping"):
            stopper.load_state_dict(ckpt["early_stopping"])
        state.history.extend(ckpt["history"])
        state.step = int(ckpt["step"])
        start_epoch, start_batch = int(ckpt["epoch"]), int(ckpt["batch"])
        result.lrs, result.momentums = list(ckpt["lrs"]), list(ckpt["momentums"])
        result.best_epoch, result.best_val_accuracy, result.best_val_loss = (
            ckpt["best"]["epoch"],
            ckpt["best"]["val_accuracy"],
            ckpt["best"]["val_loss"],
        )
        result.range_test_seconds = float(ckpt.get("range_test_seconds", 0.0))
        elapsed_before = float(ckpt.get("train_seconds", 0.0))
        if out is not None and (out / "best.pt").exists():
            best_state = load_checkpoint(out / "best.pt")["model"]
        rng.restore(ckpt["rng"])
        if verbose:
            print(f"Resuming {out} at epoch {start_epoch + 1}, batch {start_batch} (update {state.step}/{total})")

    def checkpoint_payload(epoch: int, batch: int, seconds: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": state_on_cpu(model),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "early_stopping": stopper.state_dict() if stopper is not None else None,
            "ema": averager.state_dict() if averager is not None else None,
            "epoch": epoch,
            "batch": batch,
            "step": state.step,
            "total_steps": total,
            "max_lr": max_lr,
            "history": list(state.history),
            "lrs": list(result.lrs),
            "momentums": list(result.momentums),
            "best": {
                "epoch": result.best_epoch,
                "val_accuracy": result.best_val_accuracy,
                "val_loss": result.best_val_loss,
            },
            "rng": rng.capture(),
            "config": config or {},
            "train_seconds": seconds,
            "range_test_seconds": result.range_test_seconds,
        }

    show = _progress_enabled(progress)
    from tqdm.auto import tqdm

    for cb in callbacks:
        cb.on_fit_start(state)
    log_header = False
    t_start = time.perf_counter()
    epoch_bar = tqdm(
        range(start_epoch, epochs),
        desc="epochs",
        disable=not show,
        leave=False,
        initial=start_epoch,
        total=epochs,
    )
    nonfinite = torch.zeros((), dtype=torch.bool, device=dev)

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    with _GracefulStop() as stop:
        for epoch in epoch_bar:
            state.epoch = epoch
            skip = start_batch if epoch == start_epoch else 0
            batches = _epoch_batches(train_loader, epoch, skip)
            for cb in callbacks:
                cb.on_epoch_start(state)
            forward_model.train()
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            seen = 0
            t_epoch = time.perf_counter()
            batch_bar = tqdm(total=n_batches, initial=skip, desc=f"epoch {epoch + 1}", disable=not show, leave=False)
            for batch_idx, (inputs, labels) in batches:
                inputs = inputs.to(dev, non_blocking=True)
                labels = labels.to(dev, non_blocking=True)
                if cl and inputs.ndim == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with _autocast(dev, autocast_dtype):
                    logits = forward_model(inputs)
                    loss = criterion(logits, labels)
                scaled = loss / accumulation_steps if accumulation_steps > 1 else loss
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                detached = loss.detach()
                nonfinite |= ~torch.isfinite(detached)
                loss_sum += detached.float() * labels.shape[0]
                correct += (logits.detach().argmax(1) == labels).sum()
                seen += labels.shape[0]
                state.batch, state.loss = batch_idx + 1, detached
                updated = (batch_idx + 1) % accumulation_steps == 0 or batch_idx + 1 == n_batches
                if updated:
                    group = opt.param_groups[0]
                    result.lrs.append(float(group["lr"]))
                    result.momentums.append(float(group["betas"][0]) if "betas" in group else group.get("momentum"))
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    sched.step()
                    state.step += 1
                    if averager is not None:
                        averager.update(state.step)
                    if result.first_step_seconds is None:
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        result.first_step_seconds = time.perf_counter() - t_epoch
                for cb in callbacks:
                    cb.on_batch_end(state)
                batch_bar.update(1)
                if updated and state.step % log_every == 0:
                    if bool(nonfinite):
                        break
                    if show:
                        batch_bar.set_postfix(loss=f"{detached.item():.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
                if updated and stop.requested:
                    break
            batch_bar.close()

            if bool(nonfinite):
                result.diverged = True
                result.message = (
                    f"training stopped: the loss became NaN/inf in epoch {epoch + 1} (max_lr={max_lr:.3g} is "
                    "probably too high: pass a smaller --max-lr); the best checkpoint is kept"
                )
                break
            if stop.requested and state.batch < n_batches:
                # Mid-epoch: save the exact position; the epoch's remaining batches run on resume.
                _interrupted(result, out, checkpoint_payload(epoch, state.batch, elapsed()) if out else None)
                break

            metrics = {
                "epoch": epoch + 1,
                "step": state.step,
                "lr": float(opt.param_groups[0]["lr"]),
                "train_loss": loss_sum.item() / max(seen, 1),
                "train_accuracy": correct.item() / max(seen, 1),
            }
            if val_loader is not None:
                val_loss, val_acc = evaluate(
                    eval_model, val_loader, dev, autocast_dtype=autocast_dtype, channels_last=cl, tta=tta
                )
                metrics.update(val_loss=val_loss, val_accuracy=val_acc)
            metrics["seconds"] = elapsed()
            state.history.append(metrics)
            result.epochs = epoch + 1

            improved = val_loader is not None and (
                result.best_epoch is None
                or (
                    metrics["val_accuracy"] > (result.best_val_accuracy or 0.0)
                    if monitor == "val_accuracy"
                    else metrics["val_loss"] < (result.best_val_loss or math.inf)
                )
            )
            if improved:
                result.best_epoch = epoch + 1
                result.best_val_accuracy, result.best_val_loss = metrics["val_accuracy"], metrics["val_loss"]
                best_state = state_on_cpu(averager.module if averager is not None else model)
                if out is not None:
                    save_checkpoint(
                        out / "best.pt",
                        {
                            "format": CHECKPOINT_FORMAT,
                            "model": best_state,
                            "epoch": epoch + 1,
                            "metrics": metrics,
                            "config": config or {},
                            "max_lr": max_lr,
                        },
                    )
            if verbose:
                if not log_header:
                    print(_table_header(val_loader is not None))
                    log_header = True
                print(_table_row(metrics, improved))
            for cb in callbacks:
                cb.on_epoch_end(state, metrics)
            if out is not None:
                save_checkpoint(out / "last.pt", checkpoint_payload(epoch + 1, 0, elapsed()))
            if stop.requested:  # the signal came with the epoch's last batch: the epoch is complete and saved
                _interrupted(result, out, None)
                break
            if stopper is not None and val_loader is not None and stopper.update(metrics[monitor]):
                result.stopped_early = True
                result.message = f"early stopping: no improvement in {monitor} for {patience} epochs"
                break
            if state.stop_training:
                result.message = result.message or "stopped by a callback"
                break
    epoch_bar.close()

    result.train_seconds = elapsed()
    result.steps = state.step
    if best_state is not None and not result.interrupted:
        model.load_state_dict(best_state)  # test on the best weights
    elif averager is not None and not result.interrupted and not result.diverged:
        model.load_state_dict(averager.module.state_dict())  # no validation: the final average
    if test_loader is not None and not result.interrupted and not (result.diverged and best_state is None):
        result.test_loss, result.test_accuracy = evaluate(
            forward_model, test_loader, dev, autocast_dtype=autocast_dtype, channels_last=cl, tta=tta
        )
    if out is not None and best_state is not None:
        result.checkpoint = str(out / "best.pt")
    for cb in callbacks:
        cb.on_fit_end(state)
    if verbose and result.message:
        print(result.message)
    return result


def _epoch_batches(loader: Iterable[Any], epoch: int, skip: int) -> Iterator[tuple[int, Any]]:
    """``(batch index, batch)`` for one epoch, starting at batch ``skip`` (a resumed run).

    The loader's order must be a function of the epoch (``set_epoch``) for a resume to be exact;
    superconv's loaders can also start at a batch without producing the skipped ones.
    """
    set_epoch = getattr(loader, "set_epoch", None)
    if set_epoch is not None and skip and "start_batch" in inspect.signature(set_epoch).parameters:
        set_epoch(epoch, start_batch=skip)
        return enumerate(loader, start=skip)
    if set_epoch is not None:
        set_epoch(epoch)
    return itertools.islice(enumerate(loader), skip, None)


def _interrupted(result: FitResult, out: Path | None, payload: Any) -> None:
    result.interrupted = True
    if out is None:
        result.message = "interrupted (no out_dir, so no checkpoint was written)"
        return
    if payload is not None:
        save_checkpoint(out / "last.pt", payload)
    result.message = f"interrupted: checkpoint saved; continue with --resume {out}"


def _check_fit_args(
    epochs: Any,
    accumulation_steps: Any,
    patience: Any,
    monitor: str,
    schedule: str,
    log_every: Any,
    train_loader: Any,
) -> None:
    for name, value in (
        ("epochs", epochs),
        ("accumulation_steps", accumulation_steps),
        ("log_every", log_every),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"Expected {name} to be a positive integer, but got {value!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"Expected patience to be a positive integer (epochs) or None, but got {patience!r}")
    if monitor not in MONITORS:
        raise ConfigError(f"Unknown monitor {monitor!r}: expected one of {MONITORS}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {schedule!r}: expected one of {SCHEDULES}")
    if not isinstance(train_loader, Sized):
        raise ConfigError("train_loader must have a length (len(train_loader) batches per epoch) to size the schedule")
    if len(train_loader) == 0:
        raise ConfigError("train_loader is empty: it must yield at least one batch per epoch")


def _load_resume_checkpoint(path: Path, config: dict[str, Any] | None) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(
            f"Cannot resume: {path} does not exist. Resume from a run directory written by "
            "`superconv train --out DIR` (it holds last.pt)"
        )
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Cannot resume from {path}: it is not a superconv training checkpoint "
            f"(format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    return ckpt


def _table_header(has_val: bool) -> str:
    cols = f"{'epoch':>5} {'lr':>9} {'train loss':>10} {'train acc':>9}"
    if has_val:
        cols += f" {'val loss':>9} {'val acc':>8}"
    return cols + f" {'time':>7}"


def _table_row(m: dict[str, float], improved: bool) -> str:
    row = f"{int(m['epoch']):>5} {m['lr']:>9.2e} {m['train_loss']:>10.4f} {m['train_accuracy']:>9.2%}"
    if "val_loss" in m:
        row += f" {m['val_loss']:>9.4f} {m['val_accuracy']:>8.2%}"
    return row + f" {m['seconds']:>6.1f}s" + (" *" if improved else "")
