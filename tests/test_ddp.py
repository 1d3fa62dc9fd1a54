"""Several processes (DDP, gloo on the CPU): two processes started by torchrun (or by hand, as torchrun would) train
one model, sweep one range test, stop together on a NaN or a dead peer, and resume with two or one process.

Each test has a timeout and asserts the exit: a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import superconv
from superconv.finder import LRFinder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs gloo"
    ),
]

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402

SRC = str(Path(superconv.__file__).resolve().parents[1])
TINY = ["--dataset", "digits", "--batch-size", "64", "--width", "8", "--no-progress", "--precision", "fp32"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    return {**env, "SUPERCONV_DIST_TIMEOUT": "60", **extra}


def _torchrun(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)


def _reports(out: Path, scenario: str) -> list[dict[str, Any]]:
    return [torch.load(out / f"{scenario}-rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], str]:
    out = tmp_path_factory.mktemp("ddp-train")
    proc = _torchrun(str(HERE / "ddp_worker.py"), "train", str(out), timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, _reports(out, "train"), proc.stdout


def test_two_processes_train_the_same_weights_and_count_updates(trained: Any) -> None:
    out, (r0, r1), stdout = trained
    fit0, fit1 = r0["fit"], r1["fit"]
    assert fit0["world_size"] == fit1["world_size"] == 2
    for key, value in fit0["weights"].items():
        assert torch.equal(value, fit1["weights"][key]), key
    # The schedule counts optimizer updates (8 global batches of 32 per epoch, 3 epochs), not processes.
    per_epoch = len(ddp_worker.loader())
    assert fit0["steps"] == fit1["steps"] == 3 * per_epoch == len(fit0["lrs"])
    last = torch.load(out / "run" / "last.pt", weights_only=True)
    assert last["scheduler"]["last_epoch"] == last["step"] == 3 * per_epoch
    assert last["scheduler"]["total_steps"] == 3 * per_epoch and last["world_size"] == 2
    # Metrics reduced over the processes: the same history on both; rank 0 alone prints.
    untimed = [[{k: v for k, v in epoch.items() if k != "seconds"} for epoch in fit["history"]] for fit in (fit0, fit1)]
    assert untimed[0] == untimed[1] and fit0["max_lr"] == fit1["max_lr"]
    assert stdout.count("LR range test: suggested") == 1 and stdout.count("epoch ") == 1
    assert fit0["history"][-1]["val_accuracy"] > 0.7


def test_the_range_test_is_one_sweep_equal_to_one_process_on_the_same_global_batches(trained: Any) -> None:
    _, (r0, r1), _ = trained
    a, b = r0["range_test"], r1["range_test"]
    assert a["restored"] and b["restored"]
    assert a["lrs"] == b["lrs"] and a["losses"] == b["losses"] and a["suggestion"] == b["suggestion"]
    net = ddp_worker.model()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-5, momentum=0.9)
    single = LRFinder(net, optimizer, nn.CrossEntropyLoss()).range_test(
        ddp_worker.loader(), start_lr=1e-4, end_lr=10, num_iter=30
    )
    assert len(single.losses) == len(a["losses"]) >= 10
    assert single.lrs == pytest.approx(a["lrs"], rel=1e-12)
    assert single.losses == pytest.approx(a["losses"], rel=1e-4, abs=1e-6)
    assert single.suggestion == pytest.approx(a["suggestion"], rel=1e-3)


def test_a_nan_on_one_rank_stops_every_rank_together(tmp_path: Path) -> None:
    proc = _torchrun(str(HERE / "ddp_worker.py"), "nan", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = _reports(tmp_path, "nan")
    assert r0["range_stop"] == r1["range_stop"] == "non-finite"
    assert r0["range_points"] == r1["range_points"] == 5 and r0["suggestion"] == r1["suggestion"]
    assert r0["diverged"] and r1["diverged"] and r0["steps"] == r1["steps"] < 24
    assert "NaN/inf" in r0["message"] and "NaN/inf" in r1["message"]


def test_a_time_budget_is_one_plan_and_a_slow_process_speeds_up_every_process(tmp_path: Path) -> None:
    proc = _torchrun(str(HERE / "ddp_worker.py"), "budget", str(tmp_path), timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = _reports(tmp_path, "budget")
    # rank 0's plan on both; rank 1's slowness (the slowest process's speed) sped up both schedules alike
    assert r0["planned"] == r1["planned"] and "time budget 12 s" in r0["decisions"]["length"]
    assert "deadline" in r0["decisions"] and "deadline" in r1["decisions"]
    assert r0["steps"] == r1["steps"] < r0["planned"] and r0["lrs"] == r1["lrs"]
    assert r0["lrs"][-1] < 0.05 / 1e4  # the cycle still ends with its tail
    for key, value in r0["weights"].items():
        assert torch.equal(value, r1["weights"][key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_killed_rank_ends_the_other_and_the_run_resumes_with_two_or_one_process(tmp_path: Path) -> None:
    """Two CLI processes started as torchrun starts them (env:// rendezvous); rank 1 is SIGKILLed after the first
    checkpoint: rank 0 must exit with one clear line, not hang; then the run resumes with 1 and with 2 processes."""
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "superconv",
        "train",
        *TINY,
        "--epochs",
        "6",
        "--no-early-stopping",
        "--max-lr",
        "0.05",
        "--out",
        str(out),
    ]
    port = str(_free_port())
    ranks = [
        subprocess.Popen(
            args,
            env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and time.monotonic() < deadline and ranks[0].poll() is None:
            time.sleep(0.1)
        assert (out / "last.pt").exists(), ranks[0].communicate(timeout=30)
        ranks[1].kill()
        killed = time.monotonic()
        _, err = ranks[0].communicate(timeout=90)
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
    assert time.monotonic() - killed < 90
    assert ranks[0].returncode == 1, err
    message = [line for line in err.splitlines() if line.startswith("superconv: error:")]
    assert len(message) == 1 and "another process of this run stopped answering" in message[0], err
    print(message[0])
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["world_size"] == 2 and not saved["finished"]

    copy = tmp_path / "run2"
    shutil.copytree(out, copy)
    one = subprocess.run([sys.executable, "-m", "superconv", "train", "--resume", str(out)], env=_env(),
                         capture_output=True, text=True, timeout=150)  # fmt: skip
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([sys.executable, "-m", "superconv", "train", "--resume", str(copy), "--nproc-per-node", "2"],
                         env=_env(), capture_output=True, text=True, timeout=150)  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    for run, processes in ((out, 1), (copy, 2)):
        metrics = json.loads((run / "metrics.json").read_text())
        last = torch.load(run / "last.pt", weights_only=True)
        assert metrics["epochs"] == 6 and last["finished"] and last["world_size"] == processes
        assert last["step"] == last["total_steps"] == saved["total_steps"]
        assert metrics["test_accuracy"] > 0.5
    assert two.stdout.count("Resuming") == 1


@pytest.mark.parametrize("n", [256, 250, 241])
def test_sharded_loaders_split_every_global_batch_and_count_the_same_batches(n: int) -> None:
    """The parts of two processes are the one-process batch, in order, with its augmentation; the epoch's length
    (what sizes the schedule) is the same for 1 and 2 processes, drop_last or not."""
    images, labels = ddp_worker.data(n)
    for drop_last in (True, False):
        whole = ddp_worker.TensorLoader(images, labels, batch_size=32, mean=[0.3], std=[0.3], shuffle=True,
                                        drop_last=drop_last, augment=True, pad=2, flip=True, seed=5)  # fmt: skip
        parts = [whole.shard(r, 2) for r in (0, 1)]
        assert len(parts[0]) == len(parts[1]) == len(whole) - (not drop_last and 0 < n % 32 < 2)
        for loader in (whole, *parts):
            loader.set_epoch(3)
        for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
            assert len(y0) == len(y1) or not drop_last
            assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    with pytest.raises(superconv.errors.ConfigError, match="does not split evenly over 3 processes"):
        whole.shard(0, 3) if whole.drop_last else ddp_worker.loader().shard(0, 3)


def test_torchruns_elastic_restart_continues_the_run_to_the_same_weights(tmp_path: Path) -> None:
    # A worker SIGKILLed after the first checkpoint; torchrun (--max-restarts 2) restarts the group, which continues
    # the run from last.pt by itself and ends bit-identical to an uninterrupted 2-process run.
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    import elastic_restart

    env = _env(SUPERCONV_CACHE_DIR=str(tmp_path / "cache"))
    reference = elastic_restart.reference(tmp_path, env, timeout=150)
    result = elastic_restart.trial(tmp_path / "killed", env, random.Random(0), timeout=150, delay=0.2)
    assert result["killed"] and result["restarted"] and result["exit"] == 0, result
    assert result["digest"] == reference
