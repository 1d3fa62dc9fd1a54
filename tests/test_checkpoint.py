"""Atomic checkpoint writes and safe, clearly failing loads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from superconv.errors import CheckpointError
from superconv.train.checkpoint import load_checkpoint, save_checkpoint


def _payload(step: int) -> dict:
    torch.manual_seed(step)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    return {
        "model": model.state_dict(),
        "step": step,
        "history": [{"loss": 1.5, "lr": 0.1}, {"loss": 1.2, "lr": None}],
        "name": "run",
        "shape": (2, 3),
        "flags": {"amp": False},
    }


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    payload = _payload(3)
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert loaded.keys() == payload.keys()
    for key, value in payload["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert loaded["step"] == 3
    assert loaded["history"] == payload["history"]
    assert tuple(loaded["shape"]) == (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_creates_parent_directories_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "a" / "last.pt"
    save_checkpoint(path, _payload(1))
    save_checkpoint(path, _payload(2))
    assert load_checkpoint(path)["step"] == 2


def test_failure_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(1))
    before = path.read_bytes()

    def torn_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        f.flush()  # type: ignore[attr-defined]
        raise RuntimeError("simulated crash mid-write")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(path, _payload(2))
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"], "a temp file was left behind"


def test_disk_error_becomes_checkpoint_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"Could not write the checkpoint .*No space left.*disk space"):
        save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=rf"No checkpoint at {re.escape(str(path))}.*without resuming"):
        load_checkpoint(path)


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"Expected .* to be a checkpoint file"):
        load_checkpoint(tmp_path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(1))
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash of a non-atomic writer
    with pytest.raises(CheckpointError, match=r"Cannot read the checkpoint .*corrupt.*earlier checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt, truncated, or not a torch checkpoint"):
        load_checkpoint(path)


class Custom:
    """A class that torch.load(weights_only=True) must refuse to unpickle."""

    def __init__(self) -> None:
        self.value = 1


def test_weights_only_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": Custom()}, path)  # written by someone else's code, not save_checkpoint
    with pytest.raises(
        CheckpointError,
        match=r"Refusing to load .*pickled .*Custom object.*weights_only=True.*Re-save",
    ):
        load_checkpoint(path)


def test_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match=r"Expected the checkpoint .* hold a dict, but it holds a list"):
        load_checkpoint(path)


def test_save_refuses_non_plain_payload(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match=r"payload\['extra'\]\[0\] is a .*Custom.*plain data only"):
        save_checkpoint(path, {"extra": [Custom()]})
    with pytest.raises(CheckpointError, match="Expected the checkpoint payload to be a dict, but got a list"):
        save_checkpoint(path, [1, 2])  # type: ignore[arg-type]
    assert not path.exists()


def test_map_location(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.ones(2)})
    assert load_checkpoint(path, map_location=torch.device("cpu"))["w"].device.type == "cpu"


def test_numpy_scalars_are_stored_as_python_numbers(tmp_path: Path) -> None:
    # np.float64 is a float subclass that weights_only loading would refuse; save converts it.
    path = tmp_path / "ckpt.pt"
    state = nn.BatchNorm1d(2).state_dict()
    save_checkpoint(path, {"acc": np.float64(0.91), "epochs": [np.int64(3)], "model": state})
    loaded = load_checkpoint(path)
    assert type(loaded["acc"]) is float and loaded["acc"] == 0.91
    assert loaded["epochs"] == [3] and type(loaded["epochs"][0]) is int
    assert set(loaded["model"]) == set(state)
    with pytest.raises(CheckpointError, match=r"payload\['arr'\] is a numpy.ndarray.*\.tolist\(\)"):
        save_checkpoint(path, {"arr": np.zeros(3)})
