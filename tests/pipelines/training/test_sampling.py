"""Data order: the samples of a step are a pure function of (seed, step); micro-batches split a step."""

from __future__ import annotations

import pytest

from pipelines.training.datasets import DatasetError
from pipelines.training.sampling import iter_micro_batches, step_indices


def test_data_order_is_a_function_of_seed_and_step():
    a = [step_indices(10, s, 4, seed=0) for s in range(5)]
    assert a == [step_indices(10, s, 4, seed=0) for s in range(5)]
    flat = [i for step in a for i in step]
    assert sorted(flat[:10]) == list(range(10))  # epoch 0 visits each study once
    assert a != [step_indices(10, s, 4, seed=1) for s in range(5)]


def test_empty_training_set_and_micro_batches():
    with pytest.raises(DatasetError, match="empty"):
        step_indices(0, 0, 4, seed=0)
    assert list(iter_micro_batches([1, 2, 3, 4, 5], 2)) == [[1, 2, 3], [4, 5]]
    assert list(iter_micro_batches([1], 4)) == [[1]]  # empty micro-batches are skipped
