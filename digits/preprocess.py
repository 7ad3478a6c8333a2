"""Prepare digits for training: the seeded, stratified validation split and per-class counts.

The splits are stored by digits.splits.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from digits import DigitsError
from digits.shapes import NUM_CLASSES


def split_indices(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of range(len(y)) into (train, val) indices, each in ascending order."""
    try:
        train, val = train_test_split(
            np.arange(len(y)), test_size=val_fraction, random_state=seed, shuffle=True, stratify=y
        )
    except ValueError as e:  # too few digits per class, or fewer val slots than classes
        raise DigitsError(f"cannot split {len(y)} digits with val_fraction={val_fraction}: {e}") from None
    return np.sort(train), np.sort(val)


def stratified_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): each class keeps its share in both parts; order is preserved."""
    train, val = split_indices(y, val_fraction, seed)
    return x[train], y[train], x[val], y[val]


def class_counts(y: np.ndarray, num_classes: int = NUM_CLASSES) -> list[int]:
    """How many labels of each class 0..num_classes-1."""
    return [int(c) for c in np.bincount(np.asarray(y, dtype=np.intp), minlength=num_classes)]


def data_summary(splits: dict[str, np.ndarray]) -> dict:
    """Counts per class per split plus totals, as written to data/prepared/summary.json."""
    summary: dict = {}
    for name, y in splits.items():
        counts = class_counts(y)
        summary[name] = {"total": len(y), "per_class": {str(k): c for k, c in enumerate(counts)}}
    summary["total"] = sum(len(y) for y in splits.values())
    return summary
