from __future__ import annotations

import pytest
import torch

# Tests run on 2 cores next to other work: one thread each keeps them predictable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def cuda_available() -> bool:
    return torch.cuda.is_available()
