"""PNG plots (matplotlib, imported only when a plot is made, on the non-interactive Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def plot_lr_momentum(
    lrs: Sequence[float],
    momentums: Sequence[float | None] | None,
    path: str | Path,
    *,
    title: str = "One-cycle schedule",
    markers: Sequence[tuple[str, int]] = (),
    xlabel: str = "optimizer update",
) -> Path:
    """LR (log scale) and momentum against the step, with named steps marked."""
    plt = pyplot()
    has_m = momentums is not None and any(m is not None for m in momentums)
    fig, axes = plt.subplots(2 if has_m else 1, 1, figsize=(7, 5.5 if has_m else 3.5), sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(range(len(lrs)), lrs, color="C0")
    ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    for name, step in markers:
        if 0 <= step < len(lrs):
            ax.axvline(step, color="0.6", lw=0.8, ls="--")
            ax.annotate(
                f"{name}\n{lrs[step]:.3g}",
                (step, lrs[step]),
                fontsize=8,
                xytext=(3, 3),
                textcoords="offset points",
            )
    if has_m and momentums is not None:
        axm = axes[1][0]
        axm.plot(range(len(momentums)), [m if m is not None else float("nan") for m in momentums], color="C1")
        axm.set_ylabel("momentum / beta1")
        axm.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel(xlabel)
    return save(fig, path)
