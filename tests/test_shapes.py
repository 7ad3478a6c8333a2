"""digits.shapes: the uint8-digits check, model-input scaling and one-hot labels."""

from __future__ import annotations

import numpy as np
import pytest

from digits import DigitsError
from digits.shapes import check_uint8_digits, one_hot, to_model_input


def test_check_uint8_digits_names_what_is_wrong() -> None:
    x = np.zeros((3, 28, 28), np.uint8)
    assert check_uint8_digits(x, "ok") is x
    assert check_uint8_digits(np.zeros((2, 3, 28, 28), np.uint8), "copies", lead=2).shape == (2, 3, 28, 28)
    with pytest.raises(ValueError, match=r"floats: expected uint8 digits \(n, 28, 28\), got float32"):
        check_uint8_digits(x.astype(np.float32), "floats")
    with pytest.raises(DigitsError, match=r"flat: .* got uint8 \(3, 784\)"):
        check_uint8_digits(x.reshape(3, 784), "flat", error=DigitsError)
    with pytest.raises(ValueError, match=r"\(copies, n, 28, 28\)"):
        check_uint8_digits(x, "copies", lead=2)


def test_to_model_input_scales_exactly_and_adds_a_channel() -> None:
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 0, :3] = [0, 255, 51]
    images[1, 27, 27] = 128
    out = to_model_input(images)
    assert out.shape == (2, 28, 28, 1) and out.dtype == np.float32
    assert out[0, 0, :3, 0].tolist() == [0.0, 1.0, np.float32(0.2)]
    assert out[1, 27, 27, 0] == np.float32(128 / 255)
    assert out.min() == 0.0 and out.max() == 1.0


def test_to_model_input_accepts_flat_rows_and_stacked_copies() -> None:
    flat = np.arange(784, dtype=np.uint32).astype(np.uint8).reshape(1, 784)
    assert np.array_equal(to_model_input(flat)[0, :, :, 0], flat.reshape(28, 28) / np.float32(255))
    copies = np.zeros((3, 5, 28, 28), np.uint8)
    assert to_model_input(copies).shape == (3, 5, 28, 28, 1)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 28, 28), np.float32), np.zeros((2, 27, 28), np.uint8), np.zeros((2, 100), np.uint8)]
)
def test_to_model_input_rejects_what_is_not_uint8_digits(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        to_model_input(bad)


def test_one_hot_exact() -> None:
    out = one_hot(np.array([3, 0, 9], np.uint8))
    assert out.dtype == np.float32 and out.shape == (3, 10)
    expected = np.zeros((3, 10), np.float32)
    expected[[0, 1, 2], [3, 0, 9]] = 1
    assert np.array_equal(out, expected)
    assert one_hot(np.array([1]), num_classes=3).tolist() == [[0.0, 1.0, 0.0]]


@pytest.mark.parametrize("labels", [[10], [-1]])
def test_one_hot_rejects_labels_out_of_range(labels: list[int]) -> None:
    with pytest.raises(ValueError):
        one_hot(np.array(labels))
