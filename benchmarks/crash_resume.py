"""Crash anywhere, resume exactly: kill `superconv train` at random moments and check every resumed run.

One uninterrupted reference run, then for each signal (SIGKILL, SIGTERM, SIGINT) N trials: start the same command
in a new run directory, send the signal at a random moment of the reference's duration (start-up, data, the range
test, an epoch, an evaluation, a checkpoint being written), then `superconv train --resume DIR` until the run
finishes (a run killed before it saved anything is started again, as a user would). A trial passes when the final
weights in last.pt AND the best weights in best.pt are bit-identical to the reference's, and, for SIGTERM/SIGINT,
the interrupted process exited 130 after saving (or 0 when it had finished first).

The README's test command runs a few trials (tests/test_crash_resume.py); the figures come from:

    .venv/bin/python benchmarks/crash_resume.py --trials 20         # 20 per signal: about 15 min on 2 cores

Writes benchmarks/results/crash_resume.json and .md (with the machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

#: A small, deterministic run: digits, fixed format, the range test included.
TRAIN_ARGS = [
    "--dataset", "digits", "--model", "cnn", "--width", "8", "--batch-size", "32", "--epochs", "8",
    "--precision", "fp32", "--no-channels-last", "--no-progress", "--range-iters", "30",
]  # fmt: skip
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def superconv(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "superconv", *args]


def weights_digest(run_dir: Path) -> str:
    """SHA-256 of the final (last.pt) and best (best.pt) weights of a finished run."""
    h = hashlib.sha256()
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / name, weights_only=True, map_location="cpu")["model"]
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_to_end(run_dir: Path, env: dict[str, str], timeout: float) -> int:
    """`superconv train` into ``run_dir`` until it has finished; returns how many processes that took."""
    for processes in range(1, 11):
        saved = (run_dir / "config.json").exists()
        args = ["train", "--resume", str(run_dir)] if saved else ["train", *TRAIN_ARGS, "--out", str(run_dir)]
        if not saved and run_dir.exists():
            args.append("--overwrite")  # killed before config.json: nothing of the run is there to keep
        done = subprocess.run(superconv(*args), env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"superconv {' '.join(args)} failed ({done.returncode}): {done.stderr[-800:]}")
        if "has finished" in done.stdout or "test accuracy" in done.stdout:
            return processes
    raise RuntimeError(f"{run_dir} did not finish after 10 processes")


@dataclass
class Trial:
    signal: str
    delay: float
    exit_code: int | None
    clean_exit: bool
    processes: int
    identical: bool
    phase: str = ""
    error: str = ""


def kill_and_resume(name: str, run_dir: Path, delay: float, reference: str, env: dict[str, str],
                    timeout: float) -> Trial:  # fmt: skip
    """One trial: start, signal after ``delay`` seconds, resume to the end, compare with the reference."""
    proc = subprocess.Popen(superconv("train", *TRAIN_ARGS, "--out", str(run_dir)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(delay)
    phase = _phase(run_dir)
    if proc.poll() is None:
        proc.send_signal(SIGNALS[name])
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    code = proc.returncode
    # SIGTERM/SIGINT: a clean save and exit 130 (or 0 if the run had finished, or 2/130 before anything started).
    clean = name == "SIGKILL" or code in (0, 130) or (code != 0 and not (run_dir / "config.json").exists())
    trial = Trial(name, round(delay, 2), code, clean, 1, False, phase)
    try:
        trial.processes += run_to_end(run_dir, env, timeout)
        trial.identical = weights_digest(run_dir) == reference
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        trial.error = str(exc)[-400:]
    if not trial.clean_exit:
        trial.error += f" exit {code}: {stderr[-300:]}"
    return trial


def _phase(run_dir: Path) -> str:
    """A rough label of where the run was when the signal went out (for the report)."""
    if not (run_dir / "config.json").exists():
        return "start-up/data"
    if not (run_dir / "last.pt").exists():
        return "range test/epoch 1"
    try:
        epochs = len(torch.load(run_dir / "last.pt", weights_only=True)["history"])
    except Exception:  # being replaced right now
        return "checkpoint write"
    return f"after epoch {epochs}"


@dataclass
class Report:
    reference_seconds: float
    reference: str
    trials: list[Trial] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for t in self.trials:
            c = out.setdefault(t.signal, {"trials": 0, "identical": 0, "clean_exit": 0})
            c["trials"] += 1
            c["identical"] += int(t.identical)
            c["clean_exit"] += int(t.clean_exit)
        return out


def run(trials: int, workdir: Path, seed: int = 0, timeout: float = 300.0) -> Report:
    """The reference run, then ``trials`` kill-and-resume trials per signal."""
    env = {**os.environ, "SUPERCONV_CACHE_DIR": str(workdir / "cache"), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    ref_dir = workdir / "reference"
    done = subprocess.run(superconv("train", *TRAIN_ARGS, "--out", str(ref_dir)), env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the reference run failed: {done.stderr[-800:]}")
    report = Report(round(time.monotonic() - t0, 2), weights_digest(ref_dir))
    rng = random.Random(seed)
    for i in range(trials):
        for name in SIGNALS:
            delay = rng.uniform(0.2, report.reference_seconds)
            report.trials.append(kill_and_resume(name, workdir / f"{name}-{i}", delay, report.reference, env, timeout))
    return report


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per signal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "crash_resume.json")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="superconv-crash-") as tmp:
        report = run(args.trials, args.workdir or Path(tmp), args.seed)
    data: dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv), "train_args": TRAIN_ARGS,
                            **asdict(report), "counts": report.counts()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    lines = ["| signal | trials | bit-identical | clean exit |", "|---|---|---|---|"]
    for name, c in report.counts().items():
        lines.append(f"| {name} | {c['trials']} | {c['identical']} | {c['clean_exit']} |")
    phases = sorted({t.phase for t in report.trials})
    landed = ", ".join(phases)
    text = "\n".join(lines) + f"\n\nReference run {report.reference_seconds} s; signals landed in: {landed}.\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    failed = [t for t in report.trials if not (t.identical and t.clean_exit)]
    for t in failed:
        print(f"FAILED {t}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
