"""The outcome of an LR range test: the curve, the suggestion, its quality, and how to plot and export it."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from superconv.errors import ConfigError
from superconv.finder import suggest

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
        smoothed_losses: The bias-corrected EMA of ``losses`` that the test watched for divergence.
        curve: The curve the estimators read: the same EMA over the losses clipped a little above their
            starting level (see :mod:`superconv.finder.suggest`); empty when too short.
        curve_lrs: The LR of each ``curve`` point: moved back by the EMA's lag, so the curve lines up
            with the raw losses.
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
