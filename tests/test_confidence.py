"""digits.confidence: calibration, the accept/reject rule and its measures."""

from __future__ import annotations

import numpy as np
import pytest

from digits.confidence import (
    Calibration,
    auroc,
    brier,
    calibrate,
    choose_threshold,
    choose_thresholds,
    ece,
    fit_calibration,
    fit_temperature,
    fpr_at_tpr,
    nll,
    rejection_metrics,
    reliability,
    with_rest,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- calibration ----------------------------------------------------------------------------------


def test_calibrate_keeps_argmax_and_sums_to_one() -> None:
    p = softmax(np.random.default_rng(0).normal(size=(50, 10)) * 3)
    for t in (0.3, 1.0, 4.0):
        q = calibrate(p, t)
        np.testing.assert_array_equal(q.argmax(1), p.argmax(1))
        np.testing.assert_allclose(q.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(calibrate(p, 1.0), p, atol=1e-6)
    assert (calibrate(p, 0.5).max(1) >= p.max(1) - 1e-6).all()  # T < 1 sharpens


def test_calibrate_treats_what_the_digits_lack_as_not_a_digit() -> None:
    eleven = softmax(np.random.default_rng(2).normal(size=(40, 11)) * 3)
    for t in (0.5, 2.0):
        # The model's ten outputs (softmax over 11, last dropped) calibrate like the full 11-way softmax.
        np.testing.assert_allclose(calibrate(eleven[:, :10], t), calibrate(eleven, t)[:, :10], atol=1e-6)
        np.testing.assert_allclose(
            calibrate(eleven[:, :10], t).sum(1), 1 - softmax(np.log(eleven) / t)[:, 10], atol=1e-6
        )
    # A 10-way softmax's float32 rounding is not taken for a chance of no digit.
    ten = softmax(np.random.default_rng(3).normal(size=(40, 10))).astype(np.float32)
    np.testing.assert_allclose(calibrate(ten, 3.0).sum(1), 1, atol=1e-6)
    assert with_rest(eleven[:, :10])[:, 10] == pytest.approx(eleven[:, 10], abs=1e-9)


def test_fit_temperature_recovers_the_temperature_that_made_the_data() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20000, 10)) * 4
    labels = np.array([rng.choice(10, p=row) for row in softmax(logits)])  # labels drawn from softmax(z)
    # The model is overconfident by a factor 2.5: its probabilities are softmax(2.5 z).
    t = fit_temperature(softmax(logits * 2.5), labels)
    assert t == pytest.approx(2.5, rel=0.05)
    fitted = calibrate(softmax(logits * 2.5), t)
    assert ece(fitted, labels) < 0.01 < ece(softmax(logits * 2.5), labels)
    assert nll(fitted, labels) < nll(softmax(logits * 2.5), labels)


def test_metrics_on_known_values() -> None:
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 1])
    assert brier(p, labels) == pytest.approx((0.02 + 0.72 + 0.08) / 3)
    assert nll(p, labels) == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.8)) / 3)
    rows = reliability(p, labels, bins=10)
    assert [r["count"] for r in rows] == [1, 1, 1] and [r["accuracy"] for r in rows] == [0.0, 1.0, 1.0]
    assert ece(p, labels, bins=10) == pytest.approx((0.6 + 0.2 + 0.1) / 3)


def test_auroc_and_fpr() -> None:
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
    digits = np.linspace(0.5, 1, 100)
    assert fpr_at_tpr(digits, np.array([0.1, 0.99]), 0.95) == 0.5
    others = np.array([0.1, 0.2, 0.99])
    m = rejection_metrics(digits, others, others >= 0.5)
    above_099 = int((digits > 0.99).sum())  # digits that outscore the 0.99 non-digit
    assert m["rejected"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["auroc"] == pytest.approx((100 + 100 + above_099) / 300, abs=1e-4)
    assert m["fpr_at_95_tpr"] == pytest.approx(1 / 3, abs=1e-4)


def test_choose_threshold_rejects_at_most_the_share_asked() -> None:
    scores = np.random.default_rng(2).random(1000)
    for share in (0.0, 0.0025, 0.01, 0.2):
        t = choose_threshold(scores, share)
        assert (scores < t).mean() <= share
        assert (scores <= t).mean() > share  # and it is the highest such threshold
    with pytest.raises(ValueError, match="no scores"):
        choose_threshold(np.array([]), 0.1)


def test_choose_thresholds_splits_the_share_between_the_two_steps() -> None:
    rng = np.random.default_rng(4)
    eleven = softmax(rng.normal(size=(2000, 11)) * 3 + np.eye(11)[rng.integers(0, 10, 2000)] * 6)
    digits = calibrate(eleven[:, :10], 1.0)
    digit_threshold, threshold = choose_thresholds(digits, 0.04, 0.01)
    rule = Calibration(1.0, threshold, 0.8, digit_threshold)
    not_a_digit = digits.sum(axis=1) < digit_threshold
    assert not_a_digit.mean() == pytest.approx(0.03, abs=0.001)
    assert (1 - rule.decide(digits)[0].mean()) == pytest.approx(0.04, abs=0.001)
    np.testing.assert_allclose(rule.score(digits), digits.sum(axis=1), rtol=1e-6)
    # Without a "not a digit" class the top probability rejects the whole share.
    ten = softmax(rng.normal(size=(2000, 10)) * 3)
    assert choose_thresholds(ten, 0.04, 0.01) == (0.0, choose_threshold(ten.max(axis=1), 0.04))


def test_decide_gives_accepted_unsure_and_not_a_digit() -> None:
    rule = Calibration(temperature=1.0, threshold=0.9, unsure_mass=0.8)
    p = np.zeros((3, 10))
    p[0, 3] = 1.0
    p[1, [4, 9]] = [0.45, 0.5]
    p[1, 0] = 0.05
    p[2] = 0.1
    accepted, reasons = rule.decide(p)
    assert accepted.tolist() == [True, False, False]
    assert reasons == [None, "unsure between 4 and 9", "not a digit"]
    # With a "not a digit" step: little probability on any digit is "not a digit", even if sharply peaked.
    rule = Calibration(temperature=1.0, threshold=0.5, unsure_mass=0.8, digit_threshold=0.6)
    p = np.zeros((3, 10))
    p[0, 3], p[1, [4, 9]], p[2, 7] = 0.95, [0.45, 0.45], 0.55
    accepted, reasons = rule.decide(p)
    assert accepted.tolist() == [True, False, False]
    assert reasons == [None, "unsure between 4 and 9", "not a digit"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"temperature": 0}, "temperature must be a positive number"),
        ({"threshold": 1.5}, r"threshold must lie in \[0, 1\]"),
        ({"unsure_mass": -1}, r"unsure_mass must lie in \[0, 1\]"),
        ({"digit_threshold": 2}, r"digit_threshold must lie in \[0, 1\]"),
        ({"temperature": 1, "bias": 2}, r"unknown calibration keys \['bias'\]"),
    ],
)
def test_calibration_rejects_bad_values(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(raw)


def test_calibration_round_trips_through_a_dict() -> None:
    rule = Calibration(0.5, 0.7, 0.9, 0.95)
    assert Calibration.from_dict(rule.as_dict()) == rule
    # An older bundle's calibration, without the "not a digit" step, still loads: the step is off.
    assert Calibration.from_dict({"temperature": 0.5, "threshold": 0.7}).digit_threshold == 0


def test_fit_calibration_rejects_the_share_asked_with_thresholds_rounded_down() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, 2000)
    eleven = softmax(rng.normal(size=(2000, 11)) * 3 + np.eye(11)[labels] * 6)
    rule = fit_calibration(eleven[:, :10], labels, 0.04, 0.01, 0.8)
    assert rule.unsure_mass == 0.8 and rule.temperature == fit_temperature(eleven[:, :10], labels)
    assert rule.threshold == round(rule.threshold, 6) and 0 < rule.digit_threshold == round(
        rule.digit_threshold, 6
    )
    assert (1 - rule.decide(rule.apply(eleven[:, :10]))[0].mean()) == pytest.approx(0.04, abs=0.001)


def test_score_threshold_names_what_the_score_measures() -> None:
    assert Calibration(1.0, 0.7, 0.8, 0.5).score_threshold() == (0.5, "calibrated probability of any digit")
    assert Calibration(1.0, 0.7).score_threshold() == (0.7, "calibrated top probability")
