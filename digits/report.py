"""The evaluation report of one softmax output, a single model's or an ensemble's: the same files for both."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digits import evaluate, plots
from digits.files import write_csv


def write_report(
    plots_dir: str | Path, images: np.ndarray, labels: np.ndarray, probs: np.ndarray, gallery: int
) -> dict:
    """Write confusion.csv, per_class.csv, confusion.png and misclassified.png into plots_dir.

    Returns the summary metrics for the caller's metrics JSON.
    """
    plots_dir = Path(plots_dir)
    summary = evaluate.summary_metrics(labels, probs)
    per_class = evaluate.per_class_metrics(labels, probs)
    write_csv(plots_dir / "confusion.csv", evaluate.confusion_rows(labels, probs))
    write_csv(plots_dir / "per_class.csv", [{"digit": int(d), **m} for d, m in per_class.items()])
    plots.save_confusion(plots_dir / "confusion.png", evaluate.confusion(labels, probs))
    wrong = evaluate.misclassified(labels, probs, gallery)
    plots.save_gallery(plots_dir / "misclassified.png", images[wrong], labels[wrong], probs[wrong])
    return summary
