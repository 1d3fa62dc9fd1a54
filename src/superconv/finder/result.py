"""The outcome of an LR range test: the curve, the suggestion, its quality, and how to plot and export it."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import superconv.finder.suggest as suggest
from superconv import files
from superconv.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

StopReason = Literal["completed", "diverged", "non-finite", "amp-skips"]

# --------------------------------------------------------------------------------------------- result


@dataclass
class RangeTestResult:
    """The outcome of one LR range test.

    Attributes:
        lrs: The learning rate of each recorded step.
        losses: The raw loss of each recorded step (validation loss in validation mode); finite only.
        smoothed_losses: The smoothed losses the test watched for divergence: torch-lr-finder's
            ``history["loss"]`` (``smooth_f * loss + (1 - smooth_f) * previous``, from the first loss).
        curve: The lag-free curve the estimators read, over the losses clipped a little above their starting
            level (see :mod:`superconv.finder.suggest`); empty when too short.
        suggestion: The ``max_lr`` to hand to OneCycleLR (the ``estimator``'s value).
        estimates: Every estimator's LR by name (:data:`superconv.finder.suggest.ESTIMATORS`).
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
        confidence: How sure the suggestion is, from the curve alone, as plain data (``level``: "high", "medium"
            or "low"; ``score`` in [0, 1]; ``reason``; ``advice``: what to do to be surer); see
            :mod:`superconv.finder.confidence`. Empty when unknown (a result built by hand).

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
    confidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the curve supports a confident suggestion (``quality == "ok"``)."""
        return self.quality == "ok"

    def one_cycle_kwargs(self) -> dict[str, float]:
        """The keyword arguments this test recommends for OneCycleLR.

        Returns:
            ``{"max_lr": ..., "div_factor": ...}``, to be used as
            ``superconv.OneCycleLR(optimizer, **result.one_cycle_kwargs(), total_steps=n)`` (or torch's).

        Raises:
            ConfigError: When the test recorded no usable point (e.g. the loss was NaN from its first step), so
                there is no max_lr to give; the message says where it failed and what to try.

        Example:
            >>> r = RangeTestResult(lrs=[0.1], losses=[1.0], smoothed_losses=[1.0], suggestion=0.1,
            ...                     div_factor=20.0)
            >>> r.one_cycle_kwargs()
            {'max_lr': 0.1, 'div_factor': 20.0}
        """
        if not (math.isfinite(self.suggestion) and self.suggestion > 0):
            raise ConfigError(self._no_suggestion_message())
        return {"max_lr": float(self.suggestion), "div_factor": float(self.div_factor)}

    def _no_suggestion_message(self) -> str:
        if self.stop_reason == "amp-skips":
            what = "the GradScaler skipped every update (inf/NaN gradients at every scale)"
        elif self.lrs:
            what = f"it stopped ({self.stop_reason}) after {len(self.lrs)} step(s), at lr={self.lrs[-1]:.3g}"
        elif self.stop_reason in ("non-finite", "diverged"):
            what = f"the sweep diverged at once: the loss was NaN/inf at its first step (lr={self.start_lr:.3g})"
        else:
            what = "the sweep recorded no step"
        lower = f" (e.g. {self.start_lr / 100:.1g})" if math.isfinite(self.start_lr) else ""
        return (
            f"The LR range test found no max_lr: {what}. Try a lower start_lr{lower}, "
            "check the data and the model for NaN/inf (inputs, labels, the loss at the initial weights), a smaller "
            "batch, or mixed precision off; or pass max_lr yourself."
        )

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
        usable = math.isfinite(self.suggestion) and self.suggestion > 0
        data["one_cycle_kwargs"] = self.one_cycle_kwargs() if usable else None
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
        return files.write_json(path, self.to_dict())

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one row per step (``step, lr, loss, smoothed_loss`` and ``train_loss`` in validation mode).

        Example:
            >>> import tempfile, pathlib
            >>> r = RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1)
            >>> r.to_csv(pathlib.Path(tempfile.mkdtemp()) / "lr.csv").read_text().splitlines()[0]
            'step,lr,loss,smoothed_loss'
        """
        header = ["step", "lr", "loss", "smoothed_loss"]
        if self.train_losses is not None:
            header.append("train_loss")
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        for i, (lr, loss, smooth) in enumerate(zip(self.lrs, self.losses, self.smoothed_losses)):
            row: list[Any] = [i, repr(lr), repr(loss), repr(smooth)]
            if self.train_losses is not None:
                row.append(repr(self.train_losses[i]))
            writer.writerow(row)
        return files.write_text(path, text.getvalue())

    def summary(self) -> str:
        """One line for humans: the suggestion, the quality, the other estimators and the confidence.

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
        if self.confidence:
            text += f"; {self.confidence_text()}"
        return text

    def confidence_text(self) -> str:
        """The confidence in one phrase, e.g. ``confidence high (0.90): a clean descent and a clear minimum``
        ("" when unknown).

        Example:
            >>> r = RangeTestResult(lrs=[1.0], losses=[2.0], smoothed_losses=[2.0], suggestion=0.1,
            ...                     confidence={"level": "low", "score": 0.15, "reason": "the curve is flat",
            ...                                 "advice": "widen the sweep"})
            >>> r.confidence_text()
            'confidence low (0.15): the curve is flat; widen the sweep'
        """
        if not self.confidence:
            return ""
        c = self.confidence
        text = f"confidence {c.get('level', '?')} ({float(c.get('score', math.nan)):.2f}): {c.get('reason', '')}"
        return f"{text}; {c['advice']}" if c.get("advice") else text

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        ax: Axes | None = None,
        *,
        show_estimates: bool = True,
        skip_start: int = 0,
        skip_end: int = 0,
    ) -> Axes:
        """superconv's detailed figure: raw, smoothed and lag-free loss against LR (log axis), the suggestion and
        the other estimators marked; written to ``path`` (once) when given.

        Args:
            path: Where to save the figure (any format matplotlib knows by the suffix; PNG usually).
            ax: Axes to draw into; a new figure when ``None`` (never shown: pass ``path`` or ``ax``).
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
        from superconv.finder.plotting import plot_result

        return plot_result(self, path, ax, show_estimates=show_estimates, skip_start=skip_start, skip_end=skip_end)


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
