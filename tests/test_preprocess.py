"""digits.preprocess: the stratified split and the counts per class."""

from __future__ import annotations

import numpy as np
import pytest

from digits import DigitsError
from digits.preprocess import class_counts, data_summary, split_indices, stratified_split


def digits_with_ids(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel pair encodes their index, so rows can be traced through a split."""
    y = np.repeat(np.arange(len(counts)), counts).astype(np.uint8)
    np.random.default_rng(0).shuffle(y)
    x = np.zeros((len(y), 28, 28), np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(len(y)) // 256, np.arange(len(y)) % 256
    x[:, 1, 0] = y
    return x, y


def ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0].astype(int) * 256 + x[:, 0, 1]


def test_split_is_stratified_disjoint_and_complete() -> None:
    counts = [50, 31, 20, 100, 7, 64, 12, 40, 33, 43]  # unbalanced on purpose
    x, y = digits_with_ids(counts)
    x_train, y_train, x_val, y_val = stratified_split(x, y, 0.2, seed=1)
    assert len(y_val) == round(0.2 * len(y)) and len(y_train) + len(y_val) == len(y)
    # Every class keeps its share: within one digit of the exact proportion.
    for label, n in enumerate(counts):
        assert abs(class_counts(y_val)[label] - 0.2 * n) <= 1
    train_ids, val_ids = ids(x_train), ids(x_val)
    assert not set(train_ids) & set(val_ids)
    assert sorted([*train_ids, *val_ids]) == list(range(len(y)))
    # Images and labels stay paired, and both parts keep the original order.
    assert np.array_equal(y_train, y[train_ids]) and np.array_equal(x_val[:, 1, 0], y_val)
    assert np.all(np.diff(train_ids) > 0) and np.all(np.diff(val_ids) > 0)


def test_split_is_seeded() -> None:
    y = digits_with_ids([30] * 10)[1]
    first, again, other = (split_indices(y, 0.1, seed) for seed in (7, 7, 8))
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])


def test_split_too_small_is_a_clear_error() -> None:
    y = np.array([0, 0, 1, 1, 2, 2], np.uint8)
    with pytest.raises(DigitsError, match="cannot split 6 digits"):
        split_indices(y, 0.1, 0)


def test_class_counts_and_summary() -> None:
    assert class_counts(np.array([0, 0, 2, 9], np.uint8)) == [2, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    summary = data_summary({"train": np.array([1, 1, 3]), "test": np.array([0])})
    assert summary["train"] == {
        "total": 3,
        "per_class": {str(k): [0, 2, 0, 1, 0, 0, 0, 0, 0, 0][k] for k in range(10)},
    }
    assert summary["test"]["per_class"]["0"] == 1 and summary["total"] == 4
