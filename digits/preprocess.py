"""Prepare digits for training: validation split, compact storage, and the scaling models expect.

Splits are stored as uint8 in npz files (keys `x`, `y`, deflate level 1) and scaled to float32 [0, 1] only
when a model needs them: the smallest files that still load fast; deflate level 1 writes twice as fast as
zlib's default for a tenth more bytes (the measurements: benchmarks/README.md). Files are byte-identical
for identical arrays, so DVC sees an unchanged rerun as unchanged.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from digits import DigitsError
from digits.files import atomic_path
from digits.shapes import NUM_CLASSES, check_uint8_digits


def check_digits(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Fail with a clear message unless x is uint8 (n, 28, 28) and y holds n labels in 0..9."""
    check_uint8_digits(x, name, error=DigitsError)
    if y.ndim != 1 or len(y) != len(x):
        raise DigitsError(f"{name}: {len(x)} images but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DigitsError(f"{name}: labels must lie in 0..9, got {y.min()}..{y.max()}")


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


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write uint8 digits x (..., n, 28, 28) and labels y (n,) to a compressed npz, atomically."""
    path = Path(path)
    x, y = check_uint8_digits(x, str(path), lead=2 if np.ndim(x) == 4 else 1), np.asarray(y)
    if x.shape[-3] != len(y):
        raise ValueError(f"{path}: {x.shape[-3]} digits but {len(y)} labels")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for key, array in (("x", x), ("y", y.astype(np.uint8))):
            with z.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


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


def load_training_copies(root: str | Path = ".") -> tuple[np.ndarray, np.ndarray]:
    """The augment stage's copies (copies, n, 28, 28) of the training split and its labels (n,).

    Checked against data/prepared/train.npz; with augment.copies = 0 the prepared digits are the one copy.
    """
    root = Path(root)
    train_x, train_y = load_split(root / "data/prepared/train.npz")
    copies, labels = load_split(root / "data/augmented/train.npz")
    if not np.array_equal(labels, train_y):
        raise DigitsError("data/augmented/train.npz does not match data/prepared/train.npz; rerun augment")
    return (copies if len(copies) else train_x[None]), labels
