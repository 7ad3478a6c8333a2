"""The npz files the stages hand each other: digits (uint8 28x28) with their labels, one file per split.

Stored as uint8 (keys `x`, `y`, deflate level 1) and scaled to float32 [0, 1] only when a model needs them:
the smallest files that still load fast (the measurements: benchmarks/README.md). Files are byte-identical
for identical arrays, so DVC sees an unchanged rerun as unchanged. Kept apart from the splitting code
(digits.preprocess) so that the stages that only read splits do not rerun when it changes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from digits import DigitsError
from digits.files import save_arrays
from digits.shapes import NUM_CLASSES, check_uint8_digits


def check_digits(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Fail with a clear message unless x is uint8 (n, 28, 28) and y holds n labels in 0..9."""
    check_uint8_digits(x, name, error=DigitsError)
    if y.ndim != 1 or len(y) != len(x):
        raise DigitsError(f"{name}: {len(x)} images but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DigitsError(f"{name}: labels must lie in 0..9, got {y.min()}..{y.max()}")


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write uint8 digits x (..., n, 28, 28) and labels y (n,) to a compressed npz, atomically."""
    path = Path(path)
    x, y = check_uint8_digits(x, str(path), lead=2 if np.ndim(x) == 4 else 1), np.asarray(y)
    if x.shape[-3] != len(y):
        raise ValueError(f"{path}: {x.shape[-3]} digits but {len(y)} labels")
    save_arrays(path, x=x, y=y.astype(np.uint8))


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read what save_split wrote: x uint8 (n, 28, 28) (or (copies, n, 28, 28), augmented), y uint8 (n,)."""
    path = Path(path)
    try:
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    except FileNotFoundError:
        raise DigitsError(f"{path}: not found (run the stage that writes it: dvc repro)") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise DigitsError(f"{path}: not a digits split (npz with x and y): {e}") from None
    check_uint8_digits(x, f"{path}: x", lead=2 if x.ndim == 4 else 1, error=DigitsError)
    if x.shape[-3] != len(y):
        raise DigitsError(f"{path}: {x.shape[-3]} digits but labels of shape {y.shape}")
    return x, y
