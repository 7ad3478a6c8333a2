"""The kaggle source: Kaggle Digit Recognizer's CSVs, train.csv split into MNIST's train and test files.

Kaggle's unlabelled test.csv, when present, becomes one more file (for a submission) that has no published
sha256; a bad row names its file, line and column.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from digits.sources.base import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Arrays,
    Attempt,
    FetchError,
    no_scratch,
)

KAGGLE_TEST_IMAGES = "kaggle-test-images-idx3-ubyte"  # Kaggle's unlabelled test.csv, for a submission
KAGGLE_PIXELS = [f"pixel{i}" for i in range(28 * 28)]


def kaggle_attempt(kaggle_dir: str, *, test_size: float, seed: int) -> Attempt:
    """Not strict: Kaggle's digits are not MNIST's files, so they only have to look like them."""
    produce = no_scratch(from_kaggle, Path(kaggle_dir), test_size=test_size, seed=seed)
    return Attempt("kaggle", kaggle_dir, False, produce)


def from_kaggle(directory: Path, *, test_size: float, seed: int) -> tuple[Arrays, dict[str, Any]]:
    """train.csv -> a seeded stratified train/test split (Kaggle's test.csv has no labels)."""
    from sklearn.model_selection import train_test_split  # slow import, only this source needs it

    train_csv = directory / "train.csv"
    if not train_csv.is_file():
        raise FetchError(f"{train_csv}: not found (put Kaggle's Digit Recognizer train.csv there)")
    labels, images = read_kaggle_csv(train_csv, labelled=True)
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
        )
    except ValueError as e:
        raise FetchError(f"{train_csv}: cannot hold out a stratified test split: {e}") from None
    # Keep the file's order inside each split, so every digit is easy to trace back to its row.
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    arrays = {
        TRAIN_IMAGES: images[train_idx],
        TRAIN_LABELS: labels[train_idx],
        TEST_IMAGES: images[test_idx],
        TEST_LABELS: labels[test_idx],
    }
    details: dict[str, Any] = {
        "train_csv": str(train_csv),
        "rows": len(labels),
        "test_size": test_size,
        "seed": seed,
        "split": "sklearn train_test_split, stratified by label; file order kept within each part",
        "test_csv": None,
    }
    test_csv = directory / "test.csv"
    if test_csv.is_file():
        _, arrays[KAGGLE_TEST_IMAGES] = read_kaggle_csv(test_csv, labelled=False)
        details["test_csv"] = str(test_csv)
    return arrays, details


def read_kaggle_csv(path: Path, *, labelled: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """(uint8 labels or None, uint8 n x 28 x 28 images); FetchError names the file, line and column.

    Lines count from 1 at the header, as an editor shows them.
    """
    import pandas as pd  # only this source needs it

    columns = (["label"] if labelled else []) + KAGGLE_PIXELS
    _check_kaggle_header(path, columns)
    try:
        # The fast path: the C parser reads 42,000 rows in a couple of seconds. Anything it rejects is
        # re-read slowly below, only to say exactly where the problem is.
        table = pd.read_csv(path, dtype=np.int32, encoding="utf-8-sig", engine="c")
    except (ValueError, OverflowError, pd.errors.ParserError) as e:
        raise FetchError(_locate_kaggle_problem(path, columns) or f"{path}: {e}") from None
    values = table.to_numpy()
    if len(values) == 0:
        raise FetchError(f"{path}: no data rows after the header")
    high = np.full(len(columns), 255)
    if labelled:
        high[0] = 9
    bad = (values < 0) | (values > high)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise FetchError(
            f"{path}: line {row + 2}, column {columns[col]}: {values[row, col]} is outside 0..{high[col]}"
        )
    values = values.astype(np.uint8)
    pixels = values[:, 1:] if labelled else values
    return (values[:, 0] if labelled else None), pixels.reshape(-1, 28, 28)


def _check_kaggle_header(path: Path, columns: list[str]) -> None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError(f"{path}: cannot read: {e}") from None
    want = f"{columns[0]},...,{columns[-1]} ({len(columns)} columns)"
    if len(header) != len(columns):
        raise FetchError(f"{path}: line 1: header has {len(header)} columns, expected {want}")
    for i, (got, expected) in enumerate(zip(header, columns, strict=True)):
        if got.strip() != expected:
            raise FetchError(f"{path}: line 1, column {i + 1}: header says {got!r}, expected {expected!r}")


def _locate_kaggle_problem(path: Path, columns: list[str]) -> str | None:
    """The first wrong column count, non-integer or out-of-range cell, as a message; None if none."""
    highs = [9 if column == "label" else 255 for column in columns]
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header, already checked
        for row in reader:
            if not row:  # blank lines are skipped, as pandas does
                continue
            where = f"{path}: line {reader.line_num}"
            if len(row) != len(columns):
                return f"{where}: {len(row)} columns, expected {len(columns)}"
            try:  # a whole row at once (fast); cell by cell only to name the culprit
                values = np.array(row, dtype=np.int64)
                if ((values >= 0) & (values <= highs)).all():
                    continue
            except (ValueError, OverflowError):
                pass
            for value, column, high in zip(row, columns, highs, strict=True):
                try:
                    number = int(value)
                except ValueError:
                    return f"{where}, column {column}: {value!r} is not an integer"
                if not 0 <= number <= high:
                    return f"{where}, column {column}: {number} is outside 0..{high}"
    return None
