"""Under load: a long CPU run keeps its memory flat and leaves nothing behind.

`superconv.fit` trains digits for many epochs (a checkpoint every epoch, the EMA, validation) with a handler that
reads the process's resident memory (VmRSS) after every epoch. Reported: RSS per epoch, the growth from the end of
the warm-up (epoch 5) to the last epoch, temporary files left in the run directory, child processes left alive.

    .venv/bin/python benchmarks/soak.py --epochs 50                  # about 2 minutes on 2 idle cores

Writes benchmarks/results/soak.json and .md (with the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import superconv
from superconv.data import load_data
from superconv.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info


def rss_mib() -> float:
    """This process's resident set size (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children() -> list[int]:
    """Processes whose parent is this one (a DataLoader worker or a launcher left behind would show here)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


class RSSPerEpoch(superconv.Callback):
    def __init__(self) -> None:
        self.rss: list[float] = []

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        self.rss.append(round(rss_mib(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = load_data("digits", batch_size=32, seed=0)
    model = build_model("resnet-small", num_classes=10, in_channels=1, image_size=8, width=16)
    probe = RSSPerEpoch()
    with tempfile.TemporaryDirectory() as tmp:
        result = superconv.fit(model, data.train, data.val, epochs=args.epochs, max_lr=0.02, ema="auto",
                               out_dir=tmp, callbacks=[probe], test_loader=data.test, verbose=False,
                               progress=False)  # fmt: skip
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))
        files = sorted(p.name for p in Path(tmp).iterdir())
    warm = probe.rss[min(4, len(probe.rss) - 1)]
    report = {
        "machine": machine_info(),
        "command": " ".join(sys.argv),
        "epochs": result.epochs,
        "test_accuracy": result.test_accuracy,
        "rss_mib_per_epoch": probe.rss,
        "growth_after_epoch_5_mib": round(probe.rss[-1] - warm, 1),
        "max_rss_mib": max(probe.rss),
        "temp_files_left": leftovers,
        "run_files": files,
        "child_processes_left": children(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    text = (
        f"| epochs | RSS at epoch 5 | RSS at the end | growth | max RSS | temp files left | child processes |\n"
        f"|---|---|---|---|---|---|---|\n"
        f"| {result.epochs} | {warm:.0f} MiB | {probe.rss[-1]:.0f} MiB | {report['growth_after_epoch_5_mib']:+.1f} MiB "
        f"| {report['max_rss_mib']:.0f} MiB | {len(leftovers)} | {len(children())} |\n"
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print("run directory:", ", ".join(files))


if __name__ == "__main__":
    main()
