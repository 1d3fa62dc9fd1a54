"""Seeds that are a function of ``(seed, epoch, stream)`` only.

Every random choice of the data layer (splits, subsets, shuffles, augmentation) draws from a generator seeded
here, never from a global stream, so that an epoch's batches can be rebuilt exactly by a resumed run, in any
process, with or without worker processes.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["epoch_generator", "epoch_seed", "seeded_sample", "split_indices"]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed that depends on (seed, epoch, stream) and nothing else.

    SeedSequence mixes the numbers well, so neighbouring epochs and seeds give unrelated streams
    (``seed + epoch`` would make seed 1/epoch 0 replay seed 0/epoch 1).
    """
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, stream]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator seeded with :func:`epoch_seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, stream))


def split_indices(n: int, fraction: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``range(n)`` into sorted ``(kept, carved)``, ``carved`` holding ``round(n * fraction)``."""
    order = np.random.default_rng(epoch_seed(seed, 0, stream)).permutation(n)
    n_carved = round(n * fraction)
    return np.sort(order[n_carved:]), np.sort(order[:n_carved])


def seeded_sample(n: int, count: int, seed: int, stream: int) -> np.ndarray:
    """``min(count, n)`` sorted indices of ``range(n)``, drawn without replacement from stream ``stream``."""
    return np.sort(np.random.default_rng(epoch_seed(seed, 0, stream)).permutation(n)[:count])
