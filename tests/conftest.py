from __future__ import annotations

import pytest
import torch

# Tests run on 2 cores next to other work: one thread each keeps them predictable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Measured choices (speed.json) go to a folder per test session, never to the user's ~/.cache.
    monkeypatch.setenv("SUPERCONV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "superconv-cache"))
    # The same format in every test whatever the machine's measurements (tests of the measurement unset it).
    monkeypatch.setenv("SUPERCONV_CPU_FORMAT", "fp32")


def cuda_available() -> bool:
    return torch.cuda.is_available()
