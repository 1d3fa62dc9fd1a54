"""`superconv schedule`: the table, the PNG, the JSON, and errors as one line with status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from superconv.cli.main import cli


def test_schedule_prints_key_steps_and_writes_plot_and_json(tmp_path: Path) -> None:
    png, js = tmp_path / "s.png", tmp_path / "s.json"
    result = CliRunner().invoke(
        cli,
        [
            "schedule",
            "--max-lr",
            "0.1",
            "--epochs",
            "4",
            "--batches",
            "50",
            "--accumulation",
            "2",
            "--preset",
            "smith",
            "--plot",
            str(png),
            "--json",
            str(js),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "back to initial" in result.output and "1000x below the initial LR" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text())
    assert len(data["lr"]) == 100  # 4 epochs x ceil(50 / 2) updates
    assert max(data["lr"]) == pytest.approx(0.1)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "superconv", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["schedule", "--max-lr", "0", "--total-steps", "9"],
            "Expected max_lr to be a positive, finite learning rate, but got 0.0",
        ),
        (["schedule", "--max-lr", "0.1"], "Missing the run's length: pass --total-steps"),
        (["schedule", "--max-lr", "0.1", "--total-steps", "100", "--pct-start", "2"], "pct_start"),
        (["schedule", "--max-lr", "abc"], "'abc' is not a valid float"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = _run(*args, "--plot", str(tmp_path / "x.png"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superconv: error:")
    assert message in lines[0]
