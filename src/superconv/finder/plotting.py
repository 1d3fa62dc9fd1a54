"""The range test's two figures: torch-lr-finder's one loss curve (``LRFinder.plot``) and superconv's detailed one
(``RangeTestResult.plot``: raw, smoothed and lag-free curves with every estimator marked).

matplotlib is imported only here, and only when a figure is drawn, so ``import superconv`` stays light. A figure
that is saved is a bare ``Figure`` (no GUI backend needed); only ``LRFinder.plot()`` without ``ax`` or ``path``
opens a pyplot window, as torch-lr-finder does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from superconv import checks
from superconv.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


class Curve(Protocol):
    """What the detailed figure reads (a :class:`~superconv.finder.result.RangeTestResult` has it all)."""

    @property
    def lrs(self) -> Sequence[float]: ...

    @property
    def losses(self) -> Sequence[float]: ...

    @property
    def smoothed_losses(self) -> Sequence[float]: ...

    @property
    def curve(self) -> Sequence[float]: ...

    @property
    def loss_kind(self) -> str: ...

    @property
    def estimates(self) -> Mapping[str, float]: ...

    @property
    def estimator(self) -> str: ...

    @property
    def suggestion(self) -> float: ...

    @property
    def quality(self) -> str: ...


#: Backends on which ``pyplot.show()`` can only warn (a headless server): the figure is not shown there.
NON_INTERACTIVE = ("agg", "pdf", "svg", "ps", "cairo", "template")


def check_history_plot(n_points: int, skip_start: Any, skip_end: Any, show_lr: Any, suggest_lr: bool) -> None:
    """torch-lr-finder's checks: ``ValueError`` for a bad skip or ``show_lr``, ``RuntimeError`` for too few points."""
    for name, skip in (("skip_start", skip_start), ("skip_end", skip_end)):
        checks.non_negative_int(name, skip)
    if show_lr is not None and not (checks.is_number(show_lr) and show_lr > 0):
        raise ConfigError(f"Expected show_lr to be a positive learning rate (a float) or None, but got {show_lr!r}")
    if suggest_lr and n_points < skip_start + skip_end + 2:
        raise RuntimeError(
            f"Need at least {skip_start + skip_end + 2} iterations to suggest a learning rate. Got {n_points}; run "
            "a longer range test (num_iter) or lower skip_start/skip_end."
        )


def plot_history(
    history: Mapping[str, Sequence[float]],
    suggestion: float | None,
    *,
    skip_start: int,
    skip_end: int,
    log_lr: bool,
    show_lr: float | None,
    ax: Axes | None,
    path: str | os.PathLike[str] | None,
    label: str = "suggested lr",
) -> Axes:
    """torch-lr-finder's figure: one line (``history`` without the skipped points) and the suggestion as a dot.

    With neither ``ax`` nor ``path`` the figure is shown (unless the backend cannot show it).
    """
    stop = len(history["lr"]) - skip_end
    lrs = list(history["lr"][skip_start:stop])
    losses = list(history["loss"][skip_start:stop])
    show = ax is None and path is None
    ax = _axes(ax, pyplot=show, figsize=None)
    ax.plot(lrs, losses)
    if suggestion is not None:
        ax.scatter(suggestion, _loss_near(history, suggestion), s=75, marker="o", color="red", zorder=3, label=label)
        ax.legend()
    if log_lr:
        ax.set_xscale("log")
    ax.set_xlabel("Learning rate")
    ax.set_ylabel("Loss")
    if show_lr is not None:
        ax.axvline(x=show_lr, color="red")
    _finish(ax, path, show)
    return ax


def _loss_near(history: Mapping[str, Sequence[float]], lr: float) -> float:
    """The recorded loss at the LR closest to ``lr`` (on the log axis), where the suggestion's dot goes."""
    lrs = np.asarray(history["lr"], dtype=float)
    if not (lrs > 0).all() or not lr > 0:
        return float(history["loss"][int(np.argmin(np.abs(lrs - lr)))])
    return float(history["loss"][int(np.argmin(np.abs(np.log(lrs) - math.log(lr))))])


def plot_result(
    result: Curve,
    path: str | os.PathLike[str] | None = None,
    ax: Axes | None = None,
    *,
    show_estimates: bool = True,
    skip_start: int = 0,
    skip_end: int = 0,
) -> Axes:
    """superconv's figure of one result: see :meth:`superconv.RangeTestResult.plot`."""
    checks.non_negative_int("skip_start", skip_start)
    checks.non_negative_int("skip_end", skip_end)
    ax = _axes(ax, pyplot=False, figsize=(7, 4.5))
    stop = len(result.lrs) - skip_end
    lrs = np.asarray(result.lrs[skip_start:stop], dtype=float)
    lag_free = np.asarray(result.curve[skip_start:stop], dtype=float)
    label = "validation loss" if result.loss_kind == "val" else "loss"
    if lrs.size:
        raw = np.asarray(result.losses[skip_start:stop], dtype=float)
        smooth = np.asarray(result.smoothed_losses[skip_start:stop], dtype=float)
        ax.plot(lrs, raw, color="0.75", lw=0.8, label=f"{label} (raw)")
        ax.plot(lrs, smooth, color="C0", lw=0.9, alpha=0.6, label=f"{label} (EMA)")
        if lag_free.size == lrs.size:
            ax.plot(lrs, lag_free, color="C0", lw=2.0, label=f"{label} (EMA fwd+bwd, lag-free: read)")
        _zoom(ax, raw, lag_free if lag_free.size == lrs.size else smooth)
    if show_estimates:
        for i, (name, value) in enumerate(result.estimates.items()):
            if name != result.estimator and math.isfinite(value) and value > 0:
                ax.axvline(value, color=f"C{i + 2}", lw=0.9, ls=":", label=f"{name}: {value:.2g}")
    if math.isfinite(result.suggestion) and result.suggestion > 0:
        ax.axvline(result.suggestion, color="C3", lw=1.6, ls="--")
        if result.lrs:
            curve = result.curve if len(result.curve) == len(result.lrs) else result.smoothed_losses
            dot = _loss_near({"lr": result.lrs, "loss": curve}, result.suggestion)
            ax.plot([result.suggestion], [dot], "o", color="C3", ms=7)
        ax.plot([], [], color="C3", ls="--", label=f"suggestion ({result.estimator}): {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(label)
    ax.set_title("LR range test" + (f" - quality: {result.quality}" if result.quality != "ok" else ""))
    ax.legend(loc="best", fontsize="small")
    _finish(ax, path, show=False)
    return ax


def _zoom(ax: Axes, raw: np.ndarray, shown: np.ndarray) -> None:
    """Keep the end-of-sweep explosion from squashing the interesting part of the curve."""
    finite = shown[np.isfinite(shown)]
    if not finite.size:
        return
    lo, first = float(finite.min()), float(finite[0])
    top = max(first, lo) + 0.35 * abs(max(first, lo) - lo) + 1e-12
    # the raw losses dip below the smoothed curve; show most of them
    raw_low = float(np.percentile(raw[np.isfinite(raw)], 2)) if np.isfinite(raw).any() else lo
    lo = min(lo, raw_low)
    ax.set_ylim(lo - 0.05 * abs(top - lo), top)


def _axes(ax: Axes | None, *, pyplot: bool, figsize: tuple[float, float] | None) -> Axes:
    if ax is not None:
        return ax
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.subplots(figsize=figsize)[1]
    # A bare Figure needs no GUI backend, so saving works headless and pyplot is not imported.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _finish(ax: Axes, path: str | os.PathLike[str] | None, show: bool) -> None:
    if path is not None:
        ax.figure.savefig(os.fspath(path), dpi=120)  # type: ignore[union-attr]
    if show:
        import matplotlib
        import matplotlib.pyplot as plt

        if matplotlib.get_backend().lower() not in NON_INTERACTIVE:
            plt.show()
