"""Training throughput of one process against two DDP processes (gloo) on the CPU, side by side in one run.

Both runs train the same small CNN with ``superconv.fit`` on the same synthetic images with the same global batch
(one process: the whole batch; two processes started by ``torch.distributed.run``: half of it each, gradients
all-reduced every update), a given max_lr (no range test) and no validation, and report the training samples per
second of ``fit``'s training loop. No multi-GPU machine was available: this measures the CPU path only, where two
processes share the machine's cores (each process gets ``cores / 2`` threads).

    .venv/bin/python benchmarks/ddp_throughput.py [--epochs 3] [--examples 4096] [--batch 128] [--width 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import device_label, machine_info

RESULTS = Path(__file__).parent / "results" / "ddp_throughput.json"
NO_GPUS = "No multi-GPU machine was available for this benchmark: CPU processes with gloo only."


def model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, 10),
    )  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    """One process of a run (started directly, or by torch.distributed.run): train, and rank 0 writes its numbers."""
    import superconv
    import superconv.distributed as distributed
    from superconv.data.loaders import TensorLoader

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.examples, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.examples,), generator=gen)
    loader = TensorLoader(images, labels, batch_size=args.batch, mean=[0.5] * 3, std=[0.25] * 3, shuffle=True,
                          drop_last=True, augment=True, pad=4, flip=True)  # fmt: skip
    with distributed.session():
        result = superconv.fit(
            model(args.width), loader, epochs=args.epochs, max_lr=0.05, optimizer="sgd", precision="fp32",
            channels_last=False, verify=False, progress=False, verbose=False,
        )  # fmt: skip
        if distributed.is_main():
            samples = result.steps * args.batch
            report = {"processes": distributed.world_size(), "steps": result.steps, "samples": samples,
                      "train_seconds": result.train_seconds, "samples_per_s": samples / result.train_seconds,
                      "threads_per_process": torch.get_num_threads()}  # fmt: skip
            Path(args.report).write_text(json.dumps(report))


def run(processes: int, threads: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    report = folder / f"p{processes}-t{threads}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), SUPERCONV_CPU_FORMAT="fp32")
    own = [__file__, "--worker", "--report", str(report), "--epochs", str(args.epochs),
           "--examples", str(args.examples), "--batch", str(args.batch), "--width", str(args.width)]  # fmt: skip
    if processes == 1:
        command = [sys.executable, *own]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *own]
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return {**json.loads(report.read_text()), "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128, help="the global batch (each of 2 processes takes half)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three runs, interleaved (medians)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    cores = os.cpu_count() or 1
    # One process with all the cores, one with a core per process (as each DDP process has), two processes.
    plan = [(1, cores), (1, max(1, cores // 2)), (2, max(1, cores // 2))]
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # interleaved, so that the machine's noise hits every configuration alike
            rounds.append([run(p, t, args, Path(tmp)) for p, t in plan])
    runs = [_median_run([r[i] for r in rounds]) for i in range(len(plan))]
    info = machine_info()
    best_single = max(r["samples_per_s"] for r in runs if r["processes"] == 1)
    ratio = runs[-1]["samples_per_s"] / best_single
    print(f"\nDDP throughput on {device_label(info)}, torch {info['torch']}")
    print(f"{'processes':>9} {'threads/proc':>12} {'updates':>8} {'train s':>8} {'samples/s':>10} {'wall s':>7}")
    for r in runs:
        print(f"{r['processes']:>9} {r['threads_per_process']:>12} {r['steps']:>8} {r['train_seconds']:>8.2f} "
              f"{r['samples_per_s']:>10.1f} {r['wall_seconds']:>7.1f}")  # fmt: skip
    print(f"2 processes / best 1 process: {ratio:.2f}x samples/s (same global batch {args.batch}, same updates; "
          f"medians of {args.rounds} interleaved rounds)")  # fmt: skip
    print(NO_GPUS)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "settings": vars(args) | {"worker": None, "report": None}, "runs": runs,
               "rounds": rounds, "ratio_2_over_best_1": ratio, "note": NO_GPUS}  # fmt: skip
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median samples/s among the rounds of one configuration."""
    return sorted(runs, key=lambda r: r["samples_per_s"])[len(runs) // 2]


if __name__ == "__main__":
    main()
