"""Fine-tuning a pretrained torchvision model: head first with the body frozen, then the whole net with a lower
LR for the body; resumable in either phase."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from superconv import Callback
from superconv.errors import ConfigError
from superconv.models import build_model, split_head_body
from superconv.train.finetune import fine_tune
from superconv.train.state import FitState


def _pretrained(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "mobilenet_v2.pt"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)  # stands in for ImageNet weights
    return path


def _model(weights: Path) -> torch.nn.Module:
    torch.manual_seed(0)  # the new head's initial weights
    return build_model("mobilenet_v2", num_classes=2, image_size=32, pretrained=weights)


def _data(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()  # a learnable rule
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


class Phases(Callback):
    """The weights at the end of each phase (fine_tune gives each phase's fit the same callbacks)."""

    def __init__(self) -> None:
        self.ends: list[dict[str, torch.Tensor]] = []

    def on_fit_end(self, state: FitState) -> None:
        self.ends.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})


def test_the_body_is_frozen_in_the_head_phase_and_moves_in_the_whole_phase(tmp_path: Path) -> None:
    model = build_model("mobilenet_v2", num_classes=2, image_size=32, pretrained=_pretrained(tmp_path))
    head, _ = split_head_body(model)
    head_names = {n for n, p in model.named_parameters() if any(p is h for h in head)}
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    phases = Phases()
    data = _data()
    result = fine_tune(model, data, data, head_epochs=1, epochs=1, max_lr=0.01, callbacks=[phases], verbose=False,
                       progress=False)  # fmt: skip
    after_head, after_whole = phases.ends
    body_names = [n for n in start if n not in head_names]
    assert all(torch.equal(after_head[n], start[n]) for n in body_names)  # frozen in phase 1
    assert any(not torch.equal(after_head[n], start[n]) for n in head_names)  # the head learned
    assert any(not torch.equal(after_whole[n], after_head[n]) for n in body_names)  # phase 2 moves the body
    assert all(p.requires_grad for p in model.parameters())  # nothing left frozen
    assert "body at 0.1 of the head's LR" in result.decisions["fine_tune"]


def test_discriminative_learning_rates_give_the_body_a_fraction_of_the_peak(tmp_path: Path) -> None:
    model = build_model("mobilenet_v2", num_classes=2, image_size=32, pretrained=_pretrained(tmp_path))
    peaks: dict[float, float] = {}

    class Peak(Callback):
        def on_batch_end(self, state: FitState) -> None:
            for g in state.optimizer.param_groups:
                scale = g.get("lr_scale", 1.0)
                peaks[scale] = max(peaks.get(scale, 0.0), g["lr"])

    data = _data()
    fine_tune(model, data, data, head_epochs=0, epochs=2, max_lr=0.02, body_lr_factor=0.25, callbacks=[Peak()],
              verbose=False, progress=False)  # fmt: skip
    assert peaks[0.25] == pytest.approx(0.25 * peaks[1.0], rel=1e-6)


def test_an_interrupted_fine_tune_resumes_in_its_second_phase(tmp_path: Path) -> None:
    weights = _pretrained(tmp_path)
    data = _data()
    kwargs = dict(head_epochs=1, epochs=2, max_lr=0.01, verbose=False, progress=False)
    full = _model(weights)
    fine_tune(full, data, data, out_dir=tmp_path / "full", **kwargs)

    class StopInPhase2(Callback):
        def on_batch_end(self, state: FitState) -> None:
            if state.epoch == 1 and state.batch == 2 and state.epochs == 2:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGINT)

    part = _model(weights)
    first = fine_tune(part, data, data, out_dir=tmp_path / "run", callbacks=[StopInPhase2()], **kwargs)
    assert first.interrupted
    again = _model(weights)
    fine_tune(again, data, data, out_dir=tmp_path / "run", resume=True, **kwargs)
    for (name, a), b in zip(full.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_fine_tune_arguments() -> None:
    model = build_model("cnn", num_classes=2, width=4)
    with pytest.raises(ConfigError, match=r"body_lr_factor in \(0, 1\]"):
        fine_tune(model, _data(), None, body_lr_factor=0.0, verbose=False)
    with pytest.raises(ConfigError, match=r"head_epochs to be a non-negative integer"):
        fine_tune(model, _data(), None, head_epochs=-1, verbose=False)
