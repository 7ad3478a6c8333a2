"""Kaggle "Digit Recognizer" submission file: `ImageId,Label`, ImageId counting from 1 in test.csv order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digits.files import atomic_path

HEADER = "ImageId,Label"


def submission_csv(predictions: np.ndarray) -> str:
    """The file's text for predicted digits given in test.csv's row order."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 1 or (predictions.size and (predictions.min() < 0 or predictions.max() > 9)):
        raise ValueError(f"expected a 1-d array of digits 0..9, got shape {predictions.shape}")
    rows = (f"{i},{int(d)}" for i, d in enumerate(predictions, start=1))
    return "\n".join([HEADER, *rows]) + "\n"


def write_submission(path: str | Path, predictions: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(submission_csv(predictions))
