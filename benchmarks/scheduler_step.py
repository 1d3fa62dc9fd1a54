"""Per-step cost of superconv.OneCycleLR.step() against torch's OneCycleLR, side by side.

Both schedulers drive identical optimizers; timings alternate in rounds so machine noise hits
both equally, and the table reports the ratio. Goal: no slower than 1.5x torch.

    .venv/bin/python benchmarks/scheduler_step.py [--steps 20000] [--groups 1 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import device_label, machine_info
from superconv import OneCycleLR


def make(kind: str, groups: int, steps: int, three_phase: bool):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    cls = OneCycleLR if kind == "superconv" else torch.optim.lr_scheduler.OneCycleLR
    return cls(opt, max_lr=0.1, total_steps=steps + 1, three_phase=three_phase)


def time_steps(kind: str, groups: int, steps: int, three_phase: bool) -> float:
    sched = make(kind, groups, steps, three_phase)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step() without optimizer.step(): we time the scheduler alone
        t0 = time.perf_counter()
        for _ in range(steps):
            sched.step()
        return (time.perf_counter() - t0) / steps * 1e6  # microseconds per step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scheduler_step.json")
    args = ap.parse_args()

    rows = []
    for groups in args.groups:
        for three_phase in (False, True):
            times: dict[str, list[float]] = {"torch": [], "superconv": []}
            for _ in range(args.rounds):
                for kind in ("torch", "superconv"):
                    times[kind].append(time_steps(kind, groups, args.steps, three_phase))
            t, s = statistics.median(times["torch"]), statistics.median(times["superconv"])
            rows.append(
                {
                    "groups": groups,
                    "three_phase": three_phase,
                    "torch_us": t,
                    "superconv_us": s,
                    "ratio": s / t,
                }
            )
    info = machine_info()
    print(f"OneCycleLR.step() cost, median of {args.rounds} rounds x {args.steps} steps on {device_label(info)}")
    print(f"{'groups':>6} {'phases':>6} {'torch us':>9} {'superconv us':>13} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['groups']:>6} {3 if r['three_phase'] else 2:>6} {r['torch_us']:>9.2f} {r['superconv_us']:>13.2f} "
            f"{r['ratio']:>6.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": info, "steps": args.steps, "rounds": args.rounds, "rows": rows}, indent=1)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
