"""Per-update cost of superconv's WeightEMA against torch's swa_utils.AveragedModel, side by side.

Both average the same model (parameters and buffers, EMA with the same decay); timings alternate
in rounds so machine noise hits both, and the table reports the ratio. On a GPU the figure is the
host time per update (what a fast loop waits for), since both only enqueue kernels.

    .venv/bin/python benchmarks/ema_update.py [--device cpu] [--updates 500] [--widths 16 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import device_label, machine_info
from superconv.models import build_model
from superconv.train.ema import WeightEMA


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_updates(kind: str, model: torch.nn.Module, updates: int, device: torch.device) -> float:
    """Microseconds per update, after a few warm-up updates."""
    step: Callable[[int], None]
    if kind == "superconv":
        ema = WeightEMA(model, decay=0.98, warmup=False)
        step = ema.update
    else:
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.98), use_buffers=True)

        def step(_: int) -> None:
            averaged.update_parameters(model)

    for i in range(5):
        step(i + 1)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(updates):
        step(i + 6)
    _sync(device)
    return (time.perf_counter() - t0) / updates * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--updates", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ema_update.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    for width in args.widths:
        model = build_model("resnet-small", num_classes=10, in_channels=1, image_size=28, width=width).to(device)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        times: dict[str, list[float]] = {"torch": [], "superconv": []}
        for _ in range(args.rounds):
            for kind in ("torch", "superconv"):
                times[kind].append(time_updates(kind, model, args.updates, device))
        t, s = statistics.median(times["torch"]), statistics.median(times["superconv"])
        params = sum(p.numel() for p in model.parameters())
        rows.append({"width": width, "parameters": params, "torch_us": t, "superconv_us": s, "ratio": t / s})

    info = machine_info()
    print(
        f"EMA update cost (resnet-small, parameters + buffers), median of {args.rounds} rounds x {args.updates} "
        f"updates on {device} ({device_label(info)})"
    )
    print(f"{'width':>5} {'params':>9} {'AveragedModel us':>17} {'WeightEMA us':>13} {'speed-up':>9}")
    for r in rows:
        print(
            f"{r['width']:>5} {r['parameters']:>9} {r['torch_us']:>17.1f} {r['superconv_us']:>13.1f} "
            f"{r['ratio']:>8.1f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "device": str(device), "updates": args.updates, "rounds": args.rounds, "rows": rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
