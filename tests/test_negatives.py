"""digits.negatives: the seeded generators of pictures that are not digits."""

from __future__ import annotations

import numpy as np
import pytest

from digits import negatives
from digits.mnistify import as_served
from digits.seeding import generator
from digits.shapes import SIDE


@pytest.mark.parametrize("family", list(negatives.FAMILIES))
def test_each_family_is_seeded_shaped_and_looks_served(family: str) -> None:
    a = negatives.generate(family, 12, generator(5, "test", family))
    b = negatives.generate(family, 12, generator(5, "test", family))
    other = negatives.generate(family, 12, generator(6, "test", family))
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
    first = negatives.generate("letters", 4, generator(1, "train", "letters"))
    second = negatives.generate("letters", 4, generator(1, "val", "letters"))
    assert not np.array_equal(first, second)


def test_blobs_are_filled_and_never_thin() -> None:
    blobs = negatives.generate("blobs", 60, generator(3, "test", "blobs"))
    for blob in blobs:
        rows, cols = np.nonzero(blob > 64)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert min(height, width) >= 0.3 * max(height, width)  # not a sliver, which would be a 1
        assert (blob > 64).sum() > 0.4 * height * width  # filled, unlike pen strokes


def test_letters_leave_out_digit_look_alikes() -> None:
    assert not set("OoIlSsZzBbgqDGQ") & set(negatives.LETTERS)


def test_font_digits_and_pure_noise() -> None:
    images, labels = negatives.font_digits(20, generator(0, "font digits"))
    assert images.shape == (20, SIDE, SIDE) and labels.tolist() == [i % 10 for i in range(20)]
    noise = negatives.pure_noise(9, np.random.default_rng(0))
    assert noise.shape == (9, SIDE, SIDE) and noise.dtype == np.uint8 and noise.std() > 40


def test_a_split_drawn_alone_has_the_bytes_it_has_among_all() -> None:
    from digits.params import Params

    def update(params: Params, section: str, **values) -> Params:
        return params.model_copy(update={section: getattr(params, section).model_copy(update=values)})

    params = update(Params(), "negatives", train=25, val=10, test=3)
    every = negatives.draw_splits(params)
    x, families, counts = negatives.draw_splits(params, ("train",))["train"]
    np.testing.assert_array_equal(x, every["train"][0])
    np.testing.assert_array_equal(families, every["train"][1])
    assert sum(counts.values()) == 25 and params.negatives.heldout not in counts
    assert set(every["test"][2]) == set(negatives.FAMILIES) and len(every["test"][0]) == 3 * len(
        negatives.FAMILIES
    )
    # The training pictures are degraded as the digits are: without the degradations, other bytes.
    plain = update(params, "augment", noise=0, blur=0, lowres=0)
    assert not np.array_equal(negatives.draw_splits(plain, ("train",))["train"][0], x)
    np.testing.assert_array_equal(negatives.draw_splits(plain, ("val",))["val"][0], every["val"][0])
