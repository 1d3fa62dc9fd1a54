"""Crash anywhere, resume exactly (a few trials; `benchmarks/crash_resume.py --trials 20` gives the figures)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import crash_resume


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_bit_identical_weights(tmp_path: Path) -> None:
    report = crash_resume.run(trials=1, workdir=tmp_path, seed=1)
    assert len(report.trials) == 3  # SIGKILL, SIGTERM, SIGINT
    for trial in report.trials:
        assert trial.clean_exit and trial.identical, trial
