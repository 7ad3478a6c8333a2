"""digits.parallel: work spread over processes gives the bytes one process gives, in order."""

from __future__ import annotations

import numpy as np
import pytest

from digits import DigitsError, negatives, parallel
from digits.augment import augment_copies
from digits.idx import read_idx
from digits.mnistify import PARALLEL_FROM, as_served
from digits.params import AugmentParams
from digits.seeding import generator


def _square(x: int) -> int:
    return x * x


@pytest.fixture
def two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_WORKERS", "2")  # the parallel path, however many cores the machine has


def serially(monkeypatch: pytest.MonkeyPatch, fn, *args):
    with monkeypatch.context() as m:
        m.setenv("DIGITS_WORKERS", "1")
        return fn(*args)


def test_map_ordered_keeps_order(two_workers: None) -> None:
    assert parallel.map_ordered(_square, range(50)) == [x * x for x in range(50)]
    assert parallel.map_ordered(_square, []) == []


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_bad_worker_count_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DIGITS_WORKERS", value)
    with pytest.raises(DigitsError, match=f"DIGITS_WORKERS={value!r}: expected a whole number"):
        parallel.workers()


def test_workers_default_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGITS_WORKERS", raising=False)
    assert parallel.workers() >= 1


def test_as_served_in_parallel_is_byte_identical(
    two_workers: None, monkeypatch: pytest.MonkeyPatch, tiny_mnist_dir
) -> None:
    digits = read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")
    pictures = np.concatenate([digits] * (PARALLEL_FROM // len(digits) + 1))
    pictures[::7] = 0  # blank ones too: no ink, a black row
    served, ink = as_served(pictures)
    alone, alone_ink = serially(monkeypatch, as_served, pictures)
    np.testing.assert_array_equal(served, alone)
    np.testing.assert_array_equal(ink, alone_ink)
    assert not ink[::7].any() and ink[1::7].all()


def test_augment_copies_in_parallel_are_byte_identical(
    two_workers: None, monkeypatch: pytest.MonkeyPatch, tiny_mnist_dir
) -> None:
    digits = read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")[:100]
    params = AugmentParams(copies=3, noise=0.4, blur=0.7, thickness=1, lowres=10, effects_share=0.5, seed=3)
    np.testing.assert_array_equal(
        augment_copies(digits, params), serially(monkeypatch, augment_copies, digits, params)
    )


def test_generate_all_matches_generate(two_workers: None) -> None:
    jobs = [(family, 5, generator(9, "test", family)) for family in negatives.FAMILIES]
    expected = [negatives.generate(f, n, generator(9, "test", f)) for f, n, _ in jobs]
    for got, want in zip(negatives.generate_all(jobs), expected, strict=True):
        np.testing.assert_array_equal(got, want)
