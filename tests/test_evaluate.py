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


def test_tta_views_are_the_digit_shifted_and_rotated() -> None:
    rng = np.random.default_rng(0)
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 8:20, 10:18] = rng.integers(1, 256, (3, 12, 8))
    views = evaluate.tta_views(images, shift=2, rotation=10)
    assert len(views) == 7 and all(v.shape == images.shape and v.dtype == np.uint8 for v in views)
    np.testing.assert_array_equal(views[0], images)
    # Whole-pixel shifts move the ink exactly: up, down, left, right (the digit is clear of the border).
    for view, axis, step in zip(views[1:5], (1, 1, 2, 2), (-2, 2, -2, 2), strict=True):
        np.testing.assert_array_equal(view, np.roll(images, step, axis=axis))
    # Rotations keep the ink's centre and roughly its mass, and turn opposite ways.
    for view in views[5:]:
        assert not np.array_equal(view, images)
        assert abs(int(view.sum()) - int(images.sum())) < 0.05 * images.sum()
    assert not np.array_equal(views[5], views[6])


def test_tta_probs_average_the_views_and_report_beside_plain_metrics() -> None:
    from digits.params import EvaluateParams

    images = np.zeros((4, 28, 28), np.uint8)
    images[:, 10:18, 4:12] = 255  # ink left of centre: the shifts move it, so views score differently
    seen = []

    def predict(x: np.ndarray) -> np.ndarray:  # class 1's probability: the ink's mean column / 28
        seen.append(x)
        col = (x.astype(float) * np.arange(28)).sum((1, 2)) / x.sum((1, 2)) / 28
        return np.stack([1 - col, col, *np.zeros((8, len(x)))], axis=1)

    params = EvaluateParams(tta=True, tta_shift=1, tta_rotation=10)
    probs = evaluate.tta_probs(predict, images, params)
    assert len(seen) == 7
    np.testing.assert_allclose(probs, np.mean([predict(v) for v in seen[:7]], axis=0))
    np.testing.assert_allclose(probs.sum(1), 1)
    m = evaluate.tta_metrics(np.zeros(4, int), probs)
    assert m == {"tta_accuracy": 1.0, "tta_loss": m["tta_loss"], "tta_errors": 0} and m["tta_loss"] > 0
