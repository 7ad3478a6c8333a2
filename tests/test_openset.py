"""digits.confidence (calibration, the accept/reject rule, its measures) and digits.negatives (generators)."""

from __future__ import annotations

import numpy as np
import pytest

from digits import confidence as c
from digits import negatives
from digits.drawing import as_served
from digits.shapes import SIDE


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- calibration ----------------------------------------------------------------------------------


def test_calibrate_keeps_argmax_and_sums_to_one() -> None:
    p = softmax(np.random.default_rng(0).normal(size=(50, 10)) * 3)
    for t in (0.3, 1.0, 4.0):
        q = c.calibrate(p, t)
        np.testing.assert_array_equal(q.argmax(1), p.argmax(1))
        np.testing.assert_allclose(q.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(c.calibrate(p, 1.0), p, atol=1e-6)
    assert (c.calibrate(p, 0.5).max(1) >= p.max(1) - 1e-6).all()  # T < 1 sharpens


def test_calibrate_treats_what_the_digits_lack_as_not_a_digit() -> None:
    eleven = softmax(np.random.default_rng(2).normal(size=(40, 11)) * 3)
    for t in (0.5, 2.0):
        # The model's ten outputs (softmax over 11, last dropped) calibrate like the full 11-way softmax.
        np.testing.assert_allclose(c.calibrate(eleven[:, :10], t), c.calibrate(eleven, t)[:, :10], atol=1e-6)
        np.testing.assert_allclose(
            c.calibrate(eleven[:, :10], t).sum(1), 1 - softmax(np.log(eleven) / t)[:, 10], atol=1e-6
        )
    # A 10-way softmax's float32 rounding is not taken for a chance of no digit.
    ten = softmax(np.random.default_rng(3).normal(size=(40, 10))).astype(np.float32)
    np.testing.assert_allclose(c.calibrate(ten, 3.0).sum(1), 1, atol=1e-6)
    assert c.with_rest(eleven[:, :10])[:, 10] == pytest.approx(eleven[:, 10], abs=1e-9)


def test_fit_temperature_recovers_the_temperature_that_made_the_data() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20000, 10)) * 4
    labels = np.array([rng.choice(10, p=row) for row in softmax(logits)])  # labels drawn from softmax(z)
    # The model is overconfident by a factor 2.5: its probabilities are softmax(2.5 z).
    t = c.fit_temperature(softmax(logits * 2.5), labels)
    assert t == pytest.approx(2.5, rel=0.05)
    fitted = c.calibrate(softmax(logits * 2.5), t)
    assert c.ece(fitted, labels) < 0.01 < c.ece(softmax(logits * 2.5), labels)
    assert c.nll(fitted, labels) < c.nll(softmax(logits * 2.5), labels)


def test_metrics_on_known_values() -> None:
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 1])
    assert c.brier(p, labels) == pytest.approx((0.02 + 0.72 + 0.08) / 3)
    assert c.nll(p, labels) == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.8)) / 3)
    rows = c.reliability(p, labels, bins=10)
    assert [r["count"] for r in rows] == [1, 1, 1] and [r["accuracy"] for r in rows] == [0.0, 1.0, 1.0]
    assert c.ece(p, labels, bins=10) == pytest.approx((0.6 + 0.2 + 0.1) / 3)


def test_auroc_and_fpr() -> None:
    assert c.auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert c.auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert c.auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
    digits = np.linspace(0.5, 1, 100)
    assert c.fpr_at_tpr(digits, np.array([0.1, 0.99]), 0.95) == 0.5
    others = np.array([0.1, 0.2, 0.99])
    m = c.rejection_metrics(digits, others, others >= 0.5)
    above_099 = int((digits > 0.99).sum())  # digits that outscore the 0.99 non-digit
    assert m["rejected"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["auroc"] == pytest.approx((100 + 100 + above_099) / 300, abs=1e-4)
    assert m["fpr_at_95_tpr"] == pytest.approx(1 / 3, abs=1e-4)


def test_choose_threshold_rejects_at_most_the_share_asked() -> None:
    scores = np.random.default_rng(2).random(1000)
    for share in (0.0, 0.0025, 0.01, 0.2):
        t = c.choose_threshold(scores, share)
        assert (scores < t).mean() <= share
        assert (scores <= t).mean() > share  # and it is the highest such threshold
    with pytest.raises(ValueError, match="no scores"):
        c.choose_threshold(np.array([]), 0.1)


def test_choose_thresholds_splits_the_share_between_the_two_steps() -> None:
    rng = np.random.default_rng(4)
    eleven = softmax(rng.normal(size=(2000, 11)) * 3 + np.eye(11)[rng.integers(0, 10, 2000)] * 6)
    digits = c.calibrate(eleven[:, :10], 1.0)
    digit_threshold, threshold = c.choose_thresholds(digits, 0.04, 0.01)
    rule = c.Calibration(1.0, threshold, 0.8, digit_threshold)
    not_a_digit = digits.sum(axis=1) < digit_threshold
    assert not_a_digit.mean() == pytest.approx(0.03, abs=0.001)
    assert (1 - rule.decide(digits)[0].mean()) == pytest.approx(0.04, abs=0.001)
    np.testing.assert_allclose(rule.score(digits), digits.sum(axis=1), rtol=1e-6)
    # Without a "not a digit" class the top probability rejects the whole share.
    ten = softmax(rng.normal(size=(2000, 10)) * 3)
    assert c.choose_thresholds(ten, 0.04, 0.01) == (0.0, c.choose_threshold(ten.max(axis=1), 0.04))


def test_decide_gives_accepted_unsure_and_not_a_digit() -> None:
    rule = c.Calibration(temperature=1.0, threshold=0.9, unsure_mass=0.8)
    p = np.zeros((3, 10))
    p[0, 3] = 1.0
    p[1, [4, 9]] = [0.45, 0.5]
    p[1, 0] = 0.05
    p[2] = 0.1
    accepted, reasons = rule.decide(p)
    assert accepted.tolist() == [True, False, False]
    assert reasons == [None, "unsure between 4 and 9", "not a digit"]
    # With a "not a digit" step: little probability on any digit is "not a digit", even if sharply peaked.
    rule = c.Calibration(temperature=1.0, threshold=0.5, unsure_mass=0.8, digit_threshold=0.6)
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
        c.Calibration.from_dict(raw)


def test_calibration_round_trips_through_a_dict() -> None:
    rule = c.Calibration(0.5, 0.7, 0.9, 0.95)
    assert c.Calibration.from_dict(rule.as_dict()) == rule
    # An older bundle's calibration, without the "not a digit" step, still loads: the step is off.
    assert c.Calibration.from_dict({"temperature": 0.5, "threshold": 0.7}).digit_threshold == 0


# --- generated non-digits --------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(negatives.FAMILIES))
def test_each_family_is_seeded_shaped_and_looks_served(family: str) -> None:
    a = negatives.generate(family, 12, negatives.generator(5, "test", family))
    b = negatives.generate(family, 12, negatives.generator(5, "test", family))
    other = negatives.generate(family, 12, negatives.generator(6, "test", family))
    assert a.shape == (12, SIDE, SIDE) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # same seed, same bytes
    assert not np.array_equal(a, other)
    assert (a.max(axis=(1, 2)) > 0).all() and len({x.tobytes() for x in a}) == 12  # ink, all different
    if (
        family != "noise"
    ):  # pen strokes: already in the server's layout, so preprocessing again changes little
        again, ink = as_served(a)
        assert ink.all() and np.abs(again.astype(int) - a).mean() < 12


def test_families_have_their_own_streams() -> None:
    first = negatives.generate("letters", 4, negatives.generator(1, "train", "letters"))
    second = negatives.generate("letters", 4, negatives.generator(1, "val", "letters"))
    assert not np.array_equal(first, second)


def test_blobs_are_filled_and_never_thin() -> None:
    blobs = negatives.generate("blobs", 60, negatives.generator(3, "test", "blobs"))
    for blob in blobs:
        rows, cols = np.nonzero(blob > 64)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert min(height, width) >= 0.3 * max(height, width)  # not a sliver, which would be a 1
        assert (blob > 64).sum() > 0.4 * height * width  # filled, unlike pen strokes


def test_letters_leave_out_digit_look_alikes() -> None:
    assert not set("OoIlSsZzBbgqDGQ") & set(negatives.LETTERS)


def test_font_digits_and_pure_noise() -> None:
    images, labels = negatives.font_digits(20, negatives.generator(0, "font digits"))
    assert images.shape == (20, SIDE, SIDE) and labels.tolist() == [i % 10 for i in range(20)]
    noise = negatives.pure_noise(9, np.random.default_rng(0))
    assert noise.shape == (9, SIDE, SIDE) and noise.dtype == np.uint8 and noise.std() > 40


def test_as_served_flags_blank_pictures() -> None:
    images = np.zeros((2, SIDE, SIDE), np.uint8)
    images[1, 5:20, 12:16] = 255
    served, ink = as_served(images)
    assert ink.tolist() == [False, True] and served[0].max() == 0 and served[1].max() == 255
