"""A fingerprint of what ``superconv.fit`` computes: SHA-256 of the final weights of a few fixed runs on digits.

Refactors that must not change behaviour run this on the commit before and the commit after, on the same
machine, and compare the lines (float kernels differ between CPU kinds, so compare on one host only):

    .venv/bin/python benchmarks/weights_fingerprint.py > /tmp/before.txt    # on the old commit
    .venv/bin/python benchmarks/weights_fingerprint.py > /tmp/after.txt     # on the new one
    diff /tmp/before.txt /tmp/after.txt && echo bit-identical

Each configuration exercises a different part of the loop: the range test and one cycle with an EMA and
flip TTA; SGD with gradient accumulation and a cosine baseline with early stopping; a run interrupted by a
callback and resumed from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import superconv
from superconv.data import load_data
from superconv.models import build_model


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run(name: str, model_name: str, fit_kwargs: dict[str, Any], batch_size: int, interrupt_at: int | None) -> str:
    torch.manual_seed(0)
    data = load_data("digits", batch_size=batch_size, seed=0)
    model = build_model(model_name, num_classes=10, in_channels=1, image_size=8, width=8)
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = dict(fit_kwargs, out_dir=tmp, verbose=False, progress=False, test_loader=data.test)
        if interrupt_at is not None:

            class Stop(superconv.Callback):
                def on_batch_end(self, state: Any) -> None:
                    if state.step == interrupt_at:
                        import os
                        import signal

                        os.kill(os.getpid(), signal.SIGINT)

            first = superconv.fit(model, data.train, data.val, callbacks=[Stop()], **kwargs)
            assert first.interrupted, first.message
            torch.manual_seed(123)  # the resume must not depend on the process's RNG
            data = load_data("digits", batch_size=batch_size, seed=0)
            model = build_model(model_name, num_classes=10, in_channels=1, image_size=8, width=8)
            kwargs["test_loader"] = data.test
            result = superconv.fit(model, data.train, data.val, resume=True, **kwargs)
        else:
            result = superconv.fit(model, data.train, data.val, **kwargs)
        best = torch.load(Path(tmp) / "best.pt", weights_only=True)["model"]
        history = json.dumps([{k: round(v, 10) for k, v in h.items() if k != "seconds"} for h in result.history])
    return (
        f"{name}: final {digest(model.state_dict())} best {digest(best)} "
        f"history {hashlib.sha256(history.encode()).hexdigest()[:16]} max_lr {result.max_lr!r} "
        f"test {result.test_accuracy!r} epochs {result.epochs} steps {result.steps}"
    )


def main() -> None:
    torch.set_num_threads(1)
    configs = [
        ("range-test+one-cycle+ema+tta", "resnet-small",
         {"epochs": 4, "precision": "fp32", "channels_last": False, "ema": 0.9, "tta": True,
          "label_smoothing": 0.1, "range_test_kwargs": {"num_iter": 30}}, 64, None),
        ("sgd+accumulation+cosine+patience", "cnn",
         {"epochs": 6, "max_lr": 0.05, "optimizer": "sgd", "schedule": "cosine", "accumulation_steps": 3,
          "patience": 1, "precision": "fp32", "channels_last": False}, 32, None),
        ("interrupted+resumed", "resnet-small",
         {"epochs": 3, "max_lr": 0.01, "precision": "fp32", "channels_last": False, "ema": 0.8}, 64, 25),
    ]  # fmt: skip
    for config in configs:
        print(run(*config))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
