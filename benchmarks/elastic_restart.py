"""torchrun's elastic restart: a worker killed with SIGKILL, the worker group restarted, the run continued.

One uninterrupted 2-process run (``torchrun --standalone --nproc-per-node 2 -m superconv train ...``) gives the
reference weights. Each trial starts the same command with ``--max-restarts 2``, waits for the first checkpoint
plus a random delay, SIGKILLs one worker, and lets torchrun restart the group: superconv continues the run from
its last checkpoint by itself (it sees ``TORCHELASTIC_RESTART_COUNT``). A trial counts as identical when the
final and best weights equal the reference's bit for bit. Prints a table, writes JSON + markdown.

    PYTHONPATH=src .venv/bin/python benchmarks/elastic_restart.py --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info
from crash_resume import weights_digest

TRAIN_ARGS = ["--dataset", "digits", "--model", "cnn", "--width", "8", "--batch-size", "64", "--epochs", "20",
              "--precision", "fp32", "--no-channels-last", "--no-progress", "--max-lr", "0.05"]  # fmt: skip
RESULTS = Path(__file__).parent / "results" / "elastic_restart"


def torchrun(out: Path, restarts: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", str(restarts), "-m", "superconv", "train", *TRAIN_ARGS, "--out", str(out)]  # fmt: skip


def workers(launcher: int) -> list[int]:
    """The launcher's worker processes (its children running superconv)."""
    found = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def reference(work: Path, env: dict[str, str], timeout: float) -> str:
    """The weights digest of an uninterrupted 2-process run."""
    ref = work / "reference"
    done = subprocess.run(torchrun(ref, 0), env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the reference run failed: {done.stdout[-800:]}{done.stderr[-800:]}")
    return weights_digest(ref)


def trial(out: Path, env: dict[str, str], rng: random.Random, timeout: float,
          delay: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Start, SIGKILL one worker ``delay`` s (default: random) after the first checkpoint, wait for the end."""
    log = (out.parent / f"{out.name}.log").open("w")
    proc = subprocess.Popen(torchrun(out, 2), env=env, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    time.sleep(rng.uniform(0.0, 3.0) if delay is None else delay)
    victims = workers(proc.pid)
    killed = rng.choice(victims) if victims and proc.poll() is None else None
    if killed is not None:
        os.kill(killed, 9)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    seconds = time.monotonic() - t0
    text = (out.parent / f"{out.name}.log").read_text()
    restarted = "Resuming" in text  # the restarted workers continued from last.pt
    digest = weights_digest(out) if code == 0 else None
    return {"killed": killed is not None, "exit": code, "restarted": restarted, "seconds": round(seconds, 1),
            "digest": digest}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=400.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs and their logs here")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUPERCONV_DIST_TIMEOUT": "60"}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="superconv-elastic-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env["SUPERCONV_CACHE_DIR"] = str(work / "cache")
        digest = reference(work, env, args.timeout)
        trials = [trial(work / f"trial-{i}", env, rng, args.timeout) for i in range(args.trials)]
    for t in trials:
        t["identical"] = t["digest"] == digest
    ok = sum(t["identical"] for t in trials)
    data = {"machine": machine_info(), "command": " ".join(sys.argv), "train_args": TRAIN_ARGS,
            "reference": digest, "trials": trials, "identical": ok}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "| trial | worker killed | restarted and resumed | exit | seconds | bit-identical |",
        "|---|---|---|---|---|---|",
    ]
    for i, t in enumerate(trials):
        lines.append(f"| {i} | {t['killed']} | {t['restarted']} | {t['exit']} | {t['seconds']} | {t['identical']} |")
    text = "\n".join(lines) + f"\n\n{ok} of {len(trials)} trials ended bit-identical to the uninterrupted run.\n"
    RESULTS.with_suffix(".md").write_text(text)
    print(text)
    sys.exit(0 if ok == len(trials) else 1)


if __name__ == "__main__":
    main()
