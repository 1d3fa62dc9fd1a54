"""The README's library example runs as written (on digits, with a shorter time budget)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from superconv.data import load_data

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_one_library_example() -> None:
    assert len(python_blocks()) == 1


@pytest.mark.slow
def test_the_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[0]
    assert "time_budget=120" in code
    code = code.replace("time_budget=120", "time_budget=12")  # the only change: a test has no two minutes
    data = load_data("digits", batch_size=32)
    names: dict[str, object] = {
        "train_loader": data.train,
        "val_loader": data.val,
        "test_loader": data.test,
        "criterion": nn.CrossEntropyLoss(),
        "epochs": 3,
    }
    # The block shows two ways, one after the other: each gets an untrained model.
    whole, pieces = code.split("# Or the pieces")
    for part in (whole, "# Or the pieces" + pieces):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, data.num_classes))
        names |= {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)}
        exec(compile(part, str(README), "exec"), names)
    assert names["result"].test_accuracy > 0.8  # type: ignore[attr-defined]
    assert (tmp_path / "runs" / "mine" / "best.pt").exists()
    assert 1e-5 < names["lr"] < 10  # type: ignore[operator]
    assert names["scheduler"].total_steps == 3 * len(data.train)  # type: ignore[attr-defined]
