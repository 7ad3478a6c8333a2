"""benchmarks/seeds.py: fewer non-digits than the negatives stage drew, spread over families as it would."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from seeds import fewer_non_digits


def test_fewer_non_digits_keeps_each_familys_share_and_the_file_order() -> None:
    families = np.repeat([0, 1, 2, 3, 5], 7200)  # the stage's 36,000: five training families
    pictures = np.arange(len(families))  # stands for the pictures: which one was kept
    kept = fewer_non_digits(pictures, families, 30001, seed=42)
    assert len(kept) == 30001 and len(np.unique(kept)) == 30001 and np.all(np.diff(kept) > 0)
    assert sorted(np.bincount(families[kept])[[0, 1, 2, 3, 5]]) == [6000, 6000, 6000, 6000, 6001]
    np.testing.assert_array_equal(kept, fewer_non_digits(pictures, families, 30001, seed=42))
    assert not np.array_equal(kept, fewer_non_digits(pictures, families, 30001, seed=43))
