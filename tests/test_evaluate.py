"""Test-set metrics computed from probabilities, checked against hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from digits import evaluate


def probs_for(pred: list[int], confidence: list[float]) -> np.ndarray:
    probs = np.full((len(pred), 10), 0.0)
    for i, (p, c) in enumerate(zip(pred, confidence, strict=True)):
        probs[i] = (1 - c) / 9
        probs[i, p] = c
    return probs


LABELS = np.array([0, 1, 2, 3, 3, 7])
PROBS = probs_for([0, 1, 2, 3, 8, 1], [0.9, 0.8, 0.7, 0.9, 0.6, 0.95])


def test_summary_metrics() -> None:
    m = evaluate.summary_metrics(LABELS, PROBS)
    assert m["accuracy"] == round(4 / 6, 5)
    assert m["errors"] == 2 and m["n"] == 6
    expected_loss = -np.mean(np.log([0.9, 0.8, 0.7, 0.9, 0.4 / 9, 0.05 / 9]))
    assert abs(m["loss"] - expected_loss) < 1e-4
    # F1 per class: 0,2 -> 1; 1 -> 2/3 (one false positive); 3 -> 2/3 (one miss); 7, 8 -> 0; rest absent -> 0.
    assert m["macro_f1"] == round((1 + 1 + 2 / 3 + 2 / 3) / 10, 5)


def test_per_class_metrics() -> None:
    per = evaluate.per_class_metrics(LABELS, PROBS)
    assert list(per) == [str(d) for d in range(10)]
    assert per["1"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 5), "support": 1}
    assert per["3"] == {"precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 5), "support": 2}
    assert per["7"]["recall"] == 0.0 and per["5"]["support"] == 0


def test_confusion_and_rows_agree() -> None:
    matrix = evaluate.confusion(LABELS, PROBS)
    assert matrix.shape == (10, 10) and matrix.sum() == 6 and np.trace(matrix) == 4
    assert matrix[3, 8] == 1 and matrix[7, 1] == 1
    rows = evaluate.confusion_rows(LABELS, PROBS)
    assert rows[4] == {"actual": 3, "predicted": 8}
    rebuilt = np.zeros((10, 10), int)
    for r in rows:
        rebuilt[r["actual"], r["predicted"]] += 1
    np.testing.assert_array_equal(rebuilt, matrix)


def test_misclassified_most_confident_first() -> None:
    assert evaluate.misclassified(LABELS, PROBS, limit=10).tolist() == [5, 4]
    assert evaluate.misclassified(LABELS, PROBS, limit=1).tolist() == [5]
    assert evaluate.misclassified(LABELS[:4], PROBS[:4], limit=5).tolist() == []


def test_average_softmax_is_the_mean_of_members() -> None:
    a = np.array([[0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(evaluate.average_softmax([a, b]), [[0.4, 0.6], [0.3, 0.7]])
    np.testing.assert_array_equal(evaluate.average_softmax([a]), a)
    with pytest.raises(ValueError, match="at least one member"):
        evaluate.average_softmax([])


def test_ensemble_fixes_a_split_vote() -> None:
    # Each member is wrong on a different digit; their average is right on both.
    labels = np.array([0, 1])
    a = np.array([[0.9, 0.1], [0.55, 0.45]])
    b = np.array([[0.45, 0.55], [0.1, 0.9]])
    assert evaluate.accuracy(labels, a) == evaluate.accuracy(labels, b) == 0.5
    assert evaluate.accuracy(labels, evaluate.average_softmax([a, b])) == 1.0


def test_member_spread() -> None:
    spread = evaluate.member_spread([0.99, 0.995, 0.997])
    assert spread["members"] == 3
    assert spread["member_accuracy_mean"] == 0.994
    assert spread["member_accuracy_std"] == round(float(np.std([0.99, 0.995, 0.997], ddof=1)), 5)
    assert (spread["member_accuracy_min"], spread["member_accuracy_max"]) == (0.99, 0.997)
    assert evaluate.member_spread([0.98])["member_accuracy_std"] == 0.0
