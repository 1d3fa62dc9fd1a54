"""The run directory: metrics.json, epochs.csv, config.json and the PNG plots of a training run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superconv.files import write_json

if TYPE_CHECKING:
    from superconv.train.state import FitResult


def write_epochs_csv(path: Path, history: list[dict[str, float]]) -> Path:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    return path


def plot_curves(path: Path, history: list[dict[str, float]]) -> Path:
    """Loss and accuracy per epoch, train and validation."""
    from superconv.plots import pyplot, save

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for key, ax, label in (
        ("train_loss", ax_loss, "train"),
        ("val_loss", ax_loss, "validation"),
        ("train_accuracy", ax_acc, "train"),
        ("val_accuracy", ax_acc, "validation"),
    ):
        if history and key in history[0]:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend()
    return save(fig, path)


def write_run(out: Path, result: FitResult, config: dict[str, Any]) -> dict[str, Path]:
    """Everything a run directory holds besides the checkpoints (which ``fit`` writes itself)."""
    from superconv.plots import plot_lr_momentum

    out.mkdir(parents=True, exist_ok=True)
    files = {"config": write_json(out / "config.json", config)}
    metrics = result.to_dict()
    metrics.pop("history")
    metrics["config"] = config
    files["metrics"] = write_json(out / "metrics.json", metrics)
    if result.history:
        files["epochs"] = write_epochs_csv(out / "epochs.csv", result.history)
        files["curves"] = plot_curves(out / "curves.png", result.history)
    if result.lrs:
        files["schedule"] = plot_lr_momentum(
            result.lrs,
            result.momentums,
            out / "schedule.png",
            title=f"Schedule applied ({result.schedule}, {len(result.lrs)} updates)",
        )
    if result.range_test is not None:
        files["lr_finder"] = result.range_test.plot(out / "lr_finder.png")
        files["lr_finder_json"] = result.range_test.to_json(out / "lr_finder.json")
    return files
