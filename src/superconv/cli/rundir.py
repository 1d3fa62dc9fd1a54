"""Run directories: never overwrite an earlier run by accident, and read a run back to resume it.

A folder holds a run when it has any of the files superconv writes there. ``--out`` of such a folder is refused
with the ways out (``--resume DIR``, a new name, or ``--overwrite``, which deletes those files and nothing else).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superconv.errors import CheckpointError, ConfigError

#: What superconv writes in a run directory (train, find-lr and compare).
RUN_FILES = (
    "config.json", "metrics.json", "epochs.csv", "best.pt", "last.pt", "last.prev.pt", "curves.png", "schedule.png",
    "lr_finder.png", "lr_finder.json", "lr_finder.csv", "compare.json", "compare.md", "compare.png",
)  # fmt: skip


def default_out(command: str) -> Path:
    """``runs/<command>-<time>`` (a new folder per run)."""
    return Path("runs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")


def claim_run_dir(out: Path, *, overwrite: bool, resume_hint: bool = True) -> Path:
    """``out``, checked to be usable for a new run: a folder (or nothing yet) that holds no earlier run.

    Raises:
        ConfigError: ``out`` is a file, or holds an earlier run and ``overwrite`` is False.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, but a run directory is a folder: choose another --out")
    earlier = [name for name in RUN_FILES if (out / name).exists()]
    if earlier and not overwrite:
        ways = f"continue it with --resume {out}, " if resume_hint and "config.json" in earlier else ""
        raise ConfigError(
            f"--out {out} holds an earlier run ({', '.join(earlier[:4])}{', ...' if len(earlier) > 4 else ''}) and "
            f"superconv never overwrites one: {ways}choose a new --out, or pass --overwrite to replace it"
        )
    for name in earlier:
        (out / name).unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the run directory {out} ({exc}): choose a writable --out") from exc
    return out


@dataclass
class SavedRun:
    """What ``--resume DIR`` finds: the run's options, whether it has a checkpoint, whether it finished."""

    options: dict[str, Any]
    has_checkpoint: bool
    finished: bool
    summary: str = ""
    decisions: dict[str, str] = field(default_factory=dict)


def read_saved_run(run_dir: Path) -> SavedRun:
    """The run in ``run_dir`` as ``superconv train --resume`` needs it.

    Raises:
        CheckpointError: ``run_dir`` is not a folder holding a run started by ``superconv train``.
    """
    config_path, last = run_dir / "config.json", run_dir / "last.pt"
    if run_dir.is_dir() and not config_path.exists() and not any(run_dir.iterdir()):
        raise CheckpointError(
            f"Cannot resume: {run_dir} is empty (the run was stopped before it saved anything); start it again "
            f"with `superconv train --out {run_dir} ...`"
        )
    if not run_dir.is_dir():
        raise CheckpointError(f"Cannot resume: {run_dir} is not a folder; pass the --out folder of a train run")
    if not config_path.exists():
        raise CheckpointError(
            f"Cannot resume: {config_path} does not exist. Pass the directory of a run started with "
            "`superconv train --out DIR`"
        )
    try:
        config = json.loads(config_path.read_text())
        options = dict(config["options"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"Cannot resume: {config_path} is unreadable or not a superconv run's config ({exc}); start a new run"
        ) from exc
    for key in ("data_dir", "pretrained", "out"):
        if options.get(key):
            options[key] = Path(options[key])
    finished, summary = _finished(run_dir, last)
    has_checkpoint = last.exists() or (run_dir / "last.prev.pt").exists()
    return SavedRun(options, has_checkpoint, finished, summary, dict(config.get("decisions") or {}))


def _finished(run_dir: Path, last: Path) -> tuple[bool, str]:
    if not last.exists():
        return False, ""
    from superconv.train.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(last)
    except CheckpointError:
        return False, ""  # resuming will report the problem with the file
    if not ckpt.get("finished"):
        return False, ""
    summary = f"{len(ckpt.get('history', []))} epochs, {ckpt.get('step')} updates"
    metrics = run_dir / "metrics.json"
    try:
        accuracy = json.loads(metrics.read_text()).get("test_accuracy")
        if accuracy is not None:
            summary += f", test accuracy {accuracy:.2%}"
    except (OSError, ValueError):
        pass
    return True, summary
