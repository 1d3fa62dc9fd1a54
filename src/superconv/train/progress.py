"""What a person watching sees: tqdm progress bars (in a terminal) and the per-epoch table (always, when verbose)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from superconv.train.events import Callback

if TYPE_CHECKING:
    from superconv.train.state import FitState


def progress_enabled(progress: bool | None) -> bool:
    """``progress`` if given, else whether stderr is a terminal (a log file gets no bars)."""
    return sys.stderr.isatty() if progress is None else progress


class ProgressBars(Callback):
    """An epoch bar and a batch bar; the batch bar shows the loss and LR every ``every`` optimizer updates."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._epochs: Any = None
        self._batches: Any = None

    def on_fit_start(self, state: FitState) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._epochs = tqdm(total=state.epochs, initial=state.epoch, desc="epochs", leave=False)

    def on_epoch_start(self, state: FitState) -> None:
        total, start = state.batches_per_epoch, state.start_batch
        self._batches = self._tqdm(total=total, initial=start, desc=f"epoch {state.epoch + 1}", leave=False)

    def on_batch_end(self, state: FitState) -> None:
        self._batches.update(1)
        if state.updated and state.step % self.every == 0 and state.loss is not None:
            lr = state.optimizer.param_groups[0]["lr"]
            self._batches.set_postfix(loss=f"{state.loss.item():.4f}", lr=f"{lr:.2e}")

    def on_train_epoch_end(self, state: FitState) -> None:
        self._batches.close()

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        self._epochs.update(1)

    def on_fit_end(self, state: FitState) -> None:
        self._epochs.close()


class EpochTable(Callback):
    """One line per epoch: LR, train loss/accuracy, validation loss/accuracy, seconds; ``*`` marks a new best."""

    def __init__(self) -> None:
        self._header_printed = False

    def on_epoch_end(self, state: FitState, metrics: dict[str, float]) -> None:
        if not self._header_printed:
            print(table_header("val_loss" in metrics))
            self._header_printed = True
        print(table_row(metrics, state.improved))


def table_header(has_val: bool) -> str:
    cols = f"{'epoch':>5} {'lr':>9} {'train loss':>10} {'train acc':>9}"
    if has_val:
        cols += f" {'val loss':>9} {'val acc':>8}"
    return cols + f" {'time':>7}"


def table_row(m: dict[str, float], improved: bool) -> str:
    row = f"{int(m['epoch']):>5} {m['lr']:>9.2e} {m['train_loss']:>10.4f} {m['train_accuracy']:>9.2%}"
    if "val_loss" in m:
        row += f" {m['val_loss']:>9.4f} {m['val_accuracy']:>8.2%}"
    return row + f" {m['seconds']:>6.1f}s" + (" *" if improved else "")
