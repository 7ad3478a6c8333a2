"""digits.splits: storing digit splits as npz, and checking them."""

from __future__ import annotations

import numpy as np
import pytest

from digits import DigitsError
from digits.splits import check_digits, load_split, save_split


def test_check_digits() -> None:
    x, y = np.zeros((3, 28, 28), np.uint8), np.array([0, 5, 9], np.uint8)
    check_digits(x, y, "ok")
    with pytest.raises(DigitsError, match="labels of shape"):
        check_digits(x, y[:2], "short")
    with pytest.raises(DigitsError, match=r"0\.\.9"):
        check_digits(x, np.array([0, 5, 10]), "fashion")
    with pytest.raises(DigitsError, match="uint8 digits"):
        check_digits(x.astype(np.float32), y, "floats")


@pytest.mark.parametrize("shape", [(5, 28, 28), (3, 5, 28, 28), (0, 5, 28, 28)])
def test_save_load_round_trip(tmp_path, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    y = np.array([0, 1, 2, 8, 9], dtype=np.int64)
    path = tmp_path / "sub" / "split.npz"
    save_split(path, x, y)
    x2, y2 = load_split(path)
    assert x2.dtype == np.uint8 and np.array_equal(x2, x)
    assert y2.dtype == np.uint8 and y2.tolist() == [0, 1, 2, 8, 9]
    assert [p.name for p in path.parent.iterdir()] == ["split.npz"]  # no temp file left behind
    # Same arrays, same bytes: DVC sees a rerun with unchanged data as unchanged.
    first = path.read_bytes()
    save_split(path, x, y)
    assert path.read_bytes() == first


def test_save_rejects_mismatched_labels(tmp_path) -> None:
    with pytest.raises(ValueError):
        save_split(tmp_path / "s.npz", np.zeros((4, 28, 28), np.uint8), np.zeros(3))
    assert list(tmp_path.iterdir()) == []


def test_load_errors_are_clear(tmp_path) -> None:
    with pytest.raises(DigitsError, match="not found"):
        load_split(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DigitsError, match="not a digits split"):
        load_split(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DigitsError, match="not a digits split"):
        load_split(tmp_path / "other.npz")
