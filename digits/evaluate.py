"""Test-set metrics from predicted probabilities: pure functions, no TensorFlow needed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from digits.augment import warp
from digits.params import EvaluateParams

CLASSES = list(range(10))


def summary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | int]:
    """Headline numbers for `dvc metrics`: accuracy, loss, macro F1, error count."""
    pred = probs.argmax(axis=1)
    _, _, f1, _ = precision_recall_fscore_support(labels, pred, labels=CLASSES, zero_division=0)
    # float32 softmax rows sum to 1 only within ~1e-7; renormalise in float64 so log_loss accepts them.
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    return {
        "accuracy": accuracy(labels, probs),
        "loss": round(float(log_loss(labels, probs, labels=CLASSES)), 5),
        "macro_f1": round(float(np.mean(f1)), 5),
        "errors": int(np.sum(pred != labels)),
        "n": len(labels),
    }


def per_class_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support per digit, keyed by the digit as a string (JSON keys)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, probs.argmax(axis=1), labels=CLASSES, zero_division=0
    )
    return {
        str(c): {
            "precision": round(float(precision[c]), 5),
            "recall": round(float(recall[c]), 5),
            "f1": round(float(f1[c]), 5),
            "support": int(support[c]),
        }
        for c in CLASSES
    }


def confusion(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """10x10 counts, rows = actual, columns = predicted."""
    return confusion_matrix(labels, probs.argmax(axis=1), labels=CLASSES)


def confusion_rows(labels: np.ndarray, probs: np.ndarray) -> list[dict[str, int]]:
    """One row per test digit, the shape DVC's `confusion` template expects."""
    pred = probs.argmax(axis=1)
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(labels, pred, strict=True)]


def misclassified(labels: np.ndarray, probs: np.ndarray, limit: int) -> np.ndarray:
    """Indices of wrong predictions, most confident mistakes first."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    confidence = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def average_softmax(member_probs: list[np.ndarray]) -> np.ndarray:
    """An ensemble's prediction: the mean of its members' softmax outputs."""
    if not member_probs:
        raise ValueError("an ensemble needs at least one member")
    return np.mean(np.stack(member_probs), axis=0)


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return round(float(np.mean(probs.argmax(axis=1) == labels)), 5)


def member_spread(accuracies: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation, min and max of the members' single-model accuracies."""
    acc = np.asarray(accuracies, dtype=np.float64)
    return {
        "members": len(acc),
        "member_accuracy_mean": round(float(acc.mean()), 5),
        "member_accuracy_std": round(float(acc.std(ddof=1)), 5) if len(acc) > 1 else 0.0,
        "member_accuracy_min": round(float(acc.min()), 5),
        "member_accuracy_max": round(float(acc.max()), 5),
    }


def tta_views(images: np.ndarray, shift: int, rotation: float) -> list[np.ndarray]:
    """Seven deterministic views of uint8 digits (n, 28, 28): as they are, shifted by `shift` pixels up,
    down, left and right, and rotated by +-`rotation` degrees."""
    n = len(images)
    ones, zeros = np.ones(n), np.zeros(n)
    views = [np.asarray(images)]
    for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
        views.append(warp(images, zeros, ones, np.tile([dy, dx], (n, 1))))
    for angle in (-rotation, rotation):
        views.append(warp(images, np.full(n, angle), ones, np.zeros((n, 2))))
    return views


def tta_probs(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, params: EvaluateParams
) -> np.ndarray:
    """Test-time augmentation: the mean of predict's softmax over tta_views of the digits."""
    return average_softmax([predict(v) for v in tta_views(images, params.tta_shift, params.tta_rotation)])


def tta_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | int]:
    """summary_metrics of a TTA prediction, keys prefixed `tta_` to sit beside the plain ones."""
    m = summary_metrics(labels, probs)
    return {f"tta_{k}": m[k] for k in ("accuracy", "loss", "errors")}
