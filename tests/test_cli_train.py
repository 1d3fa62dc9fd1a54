"""`superconv train` and `superconv find-lr` end to end on tiny real data, and their errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from superconv.cli.main import cli
from superconv.cli.options import shape_kwargs

TINY = ["--dataset", "digits", "--batch-size", "64", "--width", "8", "--no-progress", "--precision", "fp32"]


def test_train_writes_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", *TINY, "--epochs", "4", "--range-iters", "30", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "LR range test: suggested max_lr=" in res.output and "test accuracy" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "epochs", "max_lr", "train_seconds", "device"):
        assert key in metrics, key
    assert metrics["epochs"] == 4 and metrics["test_accuracy"] > 0.6
    # the suggestion, checked by verification probes on the validation split (fit's default)
    decision = json.loads((out / "config.json").read_text())["decisions"]["max_lr"]
    assert f"verified max_lr={metrics['max_lr']:.2g}:" in decision
    assert (out / "epochs.csv").read_text().count("\n") == 5
    assert json.loads((out / "config.json").read_text())["options"]["dataset"] == "digits"
    for png in ("lr_finder.png", "schedule.png", "curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    assert "model" in torch.load(out / "best.pt", weights_only=True)
    # one rule for the shape, as in the library: the range test's div_factor, since none was given
    finder = json.loads((out / "lr_finder.json").read_text())
    first_lr = torch.load(out / "last.pt", weights_only=True)["schedule"]["lrs"][0]
    assert first_lr == pytest.approx(metrics["max_lr"] / finder["div_factor"])


def test_the_cli_passes_the_preset_by_name_so_the_range_tests_shape_applies() -> None:
    # Expanding the preset here would pass its div_factor explicitly and override the range test's.
    assert shape_kwargs("torch", div_factor=None, pct_start=None) == {"preset": "torch"}
    assert shape_kwargs("smith", div_factor=10.0) == {"preset": "smith", "div_factor": 10.0}


def test_train_with_given_lr_sgd_and_smith_shape(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            *TINY,
            "--epochs",
            "2",
            "--max-lr",
            "0.05",
            "--optimizer",
            "sgd",
            "--preset",
            "smith",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_lr"] == 0.05 and "lr_suggestion" not in metrics
    assert not (out / "lr_finder.png").exists()


def test_train_with_a_weight_average(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "2", "--max-lr", "0.01", "--ema", "0.9", "--out", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["recipe"]["ema"] == 0.9
    assert json.loads((out / "metrics.json").read_text())["ema"] == 0.9
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["ema"]["decay"] == 0.9 and last["ema"]["updates"] == last["step"]
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    # the best checkpoint holds the averaged weights, which differ from the raw weights of the last epoch
    assert any(not torch.equal(best[k], last["model"][k]) for k in best if best[k].is_floating_point())


@pytest.mark.slow
def test_train_with_torch_compile(tmp_path: Path) -> None:
    """A real torch.compile (Inductor) run through the CLI: about a minute on a 2-core CPU."""
    out = tmp_path / "run"
    args = ["train", *TINY, "--model", "cnn", "--epochs", "1", "--max-lr", "0.01", "--compile", "--out", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["recipe"]["compile"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] is not None and metrics["first_step_seconds"] > 0
    # the checkpoint holds the plain module's weights (no torch.compile "_orig_mod." prefix)
    assert not any(k.startswith("_orig_mod") for k in torch.load(out / "best.pt", weights_only=True)["model"])


def test_find_lr_command(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["find-lr", *TINY, "--num-iter", "30", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "lr_finder.json").read_text())
    assert data["suggestion"] > 0 and (tmp_path / "lr_finder.png").exists()


def test_find_lr_verify_prints_the_choice_and_adds_it_to_the_json(tmp_path: Path) -> None:
    args = ["find-lr", *TINY, "--num-iter", "30", "--verify", "--run-steps", "200", "--out", str(tmp_path)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "lr_finder.json").read_text())
    check = data["verification"]
    probed = [c["lr"] for c in check["candidates"]]
    assert check["lr"] in probed and "<- verified" in res.output
    assert check["metric"] == "loss" and check["tie"] is False  # by validation loss (the default): never a tie
    assert check["run_steps"] == 200
    assert f"verified max_lr={check['lr']:.2g}" in res.output and "confidence" in res.output
    assert f"OneCycleLR: max_lr={check['lr']:.3g}" in res.output  # the verified LR is the one recommended
    assert data["confidence"]["level"] in ("high", "medium", "low")  # the curve's own confidence, as before


def _write_images(root: Path, classes: int = 2, per_class: int = 6, size: int = 20) -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = torch.full((size, size, 3), 60 + 120 * c, dtype=torch.uint8)
            noise = torch.randint(0, 40, (size, size, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray((base + noise).numpy()).save(folder / f"{i}.png")


def test_train_on_an_imagefolder(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    out = tmp_path / "run"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(tmp_path / "images"),
            "--image-size",
            "16",
            "--batch-size",
            "4",
            "--width",
            "4",
            "--epochs",
            "2",
            "--max-lr",
            "1e-2",
            "--val-fraction",
            "0.2",
            "--workers",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["test_accuracy"] is not None


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "superconv", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "mnist"], "Invalid value for '--dataset'"),
        (["train", "--epochs", "-3"], "Invalid value for '--epochs'"),
        (["train", "--dataset", "imagefolder", "--data-dir", "/nonexistent/folder"], "/nonexistent/folder"),
        (["train", "--dataset", "digits", "--batch-size", "100000"], "--batch-size"),
        (["train", "--dataset", "digits", "--model", "resnet9000"], "resnet9000"),
        (
            ["train", "--dataset", "digits", "--device", "cuda:7"]
            if not torch.cuda.is_available()
            else ["train", "--dataset", "digits", "--device", "tpu"],
            "--device",
        ),
        (["train", "--resume", "/nonexistent/run"], "Cannot resume"),
        (["train", "--dataset", "digits", "--ema", "1.5"], "Invalid value for '--ema'"),
        (["train", "--dataset", "digits", "--ema", "0.9", "--no-ema"], "--ema and --no-ema contradict"),
        (["find-lr", "--dataset", "digits", "--verify"], "--verify needs --run-steps N"),
        (
            [
                "find-lr",
                "--dataset",
                "digits",
                "--verify",
                "--run-steps",
                "50",
                "--val-fraction",
                "0",
                "--num-iter",
                "20",
            ],
            "--verify chooses on the validation split, but this dataset has none",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_status_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = _run(*args, "--out", str(tmp_path / "run"), "--no-progress") if "--resume" not in args else _run(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superconv: error:"), out.stderr
    assert message in lines[0]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "superconv",
        "train",
        *TINY,
        "--epochs",
        "40",
        "--max-lr",
        "5e-3",
        "--no-early-stopping",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "SIGTERM received" in stderr and f"--resume {out}" in stdout
    done = json.loads((out / "metrics.json").read_text())
    assert done["interrupted"] and done["epochs"] < 40

    res = _run("train", "--resume", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "Resuming" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 40 and not metrics["interrupted"] and metrics["steps"] == 40 * 20
    assert os.path.exists(out / "best.pt")
