"""Deterministic data order: which samples optimiser step `s` sees is a pure function of (seed, s).

Global sample position p = s * B * accum + j reads index perm_e[p mod N] of the epoch-e permutation
drawn from `np.random.default_rng([seed, e])`. Augmentation and dropout are reseeded per step from
(seed, s) through `sample_seed`. A resumed run therefore replays exactly the steps an unbroken run
would have taken.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pipelines.training.datasets import DatasetError


def step_indices(n: int, step: int, per_step: int, seed: int) -> list[int]:
    """Dataset indices of optimiser step `step` (0-based): a pure function of (n, step, per_step, seed).

    Epoch e visits the permutation `default_rng([seed, e]).permutation(n)`; steps cut it in
    consecutive slices that wrap into the next epoch.

    Raises:
        DatasetError: the training set is empty (n < 1).
    """
    if n < 1:
        raise DatasetError("the training set is empty")
    out = []
    cache: dict[int, np.ndarray] = {}
    for p in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(p, n)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(cache[epoch][pos]))
    return out


def sample_seed(seed: int, step: int, position: int) -> int:
    """A 31-bit seed for one sample's augmentation at one step (position -1: the step itself)."""
    return int(np.random.default_rng([seed, step, position + 1, 7]).integers(2**31 - 1))


def iter_micro_batches(items: Sequence[Any], n_micro: int) -> Iterator[Sequence[Any]]:
    """Split a step's (rank-local) items into `n_micro` consecutive micro-batches (empty ones skipped)."""
    size = max(1, -(-len(items) // n_micro))
    for start in range(0, len(items), size):
        yield items[start : start + size]
