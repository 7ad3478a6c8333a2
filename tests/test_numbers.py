"""Reading whole numbers (digits.numbers) and the occlusion map (digits.occlusion), on real MNIST digits."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from digits.mnistify import BadInput, EmptyInput, mnistify
from digits.numbers import MAX_DIGITS, compose_number, label_marks, split_number
from digits.occlusion import PATCH, occlusion_map
from digits.runtime import KerasPredictor


@pytest.fixture(scope="module")
def digits(test_digits):
    """The tiny test digits as uint8 (200, 28, 28), as MNIST stores them, and their labels."""
    return np.rint(test_digits[0] * 255).astype(np.uint8), test_digits[1]


@pytest.fixture(scope="module")
def model(small_model_path):
    return KerasPredictor(small_model_path)


def score_with(model):
    return lambda x: model(x).max(axis=1)


def flood_labels(mask: np.ndarray) -> np.ndarray:
    """8-connected labels by flood fill, pixel by pixel: slow and obviously right."""
    labels = np.zeros(mask.shape, int)
    n = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        n += 1
        stack = [start]
        labels[start] = n
        while stack:
            r, c = stack.pop()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    inside = 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1]
                    if inside and mask[rr, cc] and not labels[rr, cc]:
                        labels[rr, cc] = n
                        stack.append((rr, cc))
    return labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.ravel(), b.ravel(), strict=True))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


@pytest.mark.parametrize("seed", range(5))
def test_marks_are_the_8_connected_components(seed):
    mask = np.random.default_rng(seed).random((40, 50)) < 0.3 + 0.05 * seed  # many touching blobs
    labels, n = label_marks(mask)
    expected = flood_labels(mask)
    assert n == expected.max() and ((labels > 0) == mask).all()
    assert same_partition(labels, expected)


def test_diagonal_touch_joins_and_a_gap_of_one_pixel_does_not():
    mask = np.zeros((4, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one mark
    mask[0, 3] = mask[0, 5] = True  # a column apart: two
    labels, n = label_marks(mask)
    assert n == 3 and labels[0, 0] == labels[1, 1] and labels[0, 3] != labels[0, 5]


def test_a_number_of_separate_digits_is_read_in_order(digits, model):
    images, labels = digits
    rng = np.random.default_rng(0)
    right = 0
    for i in range(0, 60, 3):
        picture, boxes = compose_number(images[i : i + 3], rng, touching=0)
        found = split_number(picture, score_with(model))
        assert len(found) == 3  # apart, each digit is one group
        for digit, box in zip(found, boxes, strict=True):  # the ink's box lies within the pasted digit's
            left, top, width, height = digit.box
            assert box[0] <= left and left + width <= box[0] + box[2]
            assert box[1] <= top and top + height <= box[1] + box[3]
        read = model(np.stack([d.image for d in found])).argmax(axis=1)
        right += (read == labels[i : i + 3]).all()
    assert right >= 17  # of 20 numbers (the small model alone reads ~99% of single digits)


def test_each_digit_is_prepared_from_its_own_ink_as_a_single_one_is(digits):
    images = digits[0][:2]
    picture = np.zeros((28, 70), np.float32)
    picture[:, 4:32], picture[:, 38:66] = images[0] / 255, images[1] / 255
    found = split_number(picture)
    assert len(found) == 2
    for digit, image in zip(found, images, strict=True):
        alone = mnistify(image / 255)
        assert np.abs(digit.image - alone).max() < 0.02


def test_touching_digits_are_cut_where_the_model_reads_them(digits, model):
    """Two digits whose strokes touch are one mark: the model's confidence picks the cut."""
    images, labels = digits
    right = cut = 0
    for i in range(0, 40, 2):
        a, b = (crop(image) for image in images[i : i + 2])
        height = max(a.shape[0], b.shape[0])
        picture = np.zeros((height + 20, a.shape[1] + b.shape[1] + 16), np.float32)
        picture[10 : 10 + a.shape[0], 10 : 10 + a.shape[1]] = a
        left = 10 + a.shape[1] - 4  # overlapping by 4 px: most such pairs touch
        area = picture[10 : 10 + b.shape[0], left : left + b.shape[1]]
        np.maximum(area, b, out=area)
        found = split_number(picture, score_with(model))
        cut += len(found) == 2
        right += (
            len(found) == 2
            and (model(np.stack([d.image for d in found])).argmax(1) == labels[i : i + 2]).all()
        )
    assert cut >= 15 and right >= 12  # of 20 pairs


def crop(image: np.ndarray) -> np.ndarray:
    """A digit cropped to its ink, scaled to 60 px tall, in [0, 1]."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    part = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    scale = 60 / part.height
    return np.asarray(part.resize((max(1, round(part.width * scale)), 60), Image.BILINEAR), np.float32) / 255


def test_a_speck_and_a_broken_stroke_stay_with_their_digit(digits):
    seven = crop(digits[0][0])  # the first test digit is a 7
    picture = np.zeros((100, 200), np.float32)
    picture[20:80, 20 : 20 + seven.shape[1]] = seven
    picture[28:31] = 0  # a gap under the 7's bar: two marks, one over the other
    picture[5, 150] = picture[5, 151] = 1  # a speck far away: dropped
    assert label_marks(picture >= 0.2)[1] >= 3
    found = split_number(picture)
    assert len(found) == 1
    assert found[0].box[0] == pytest.approx(20, abs=2)


def test_blank_and_overfull_pictures_are_refused():
    with pytest.raises(EmptyInput):
        split_number(np.zeros((50, 100), np.float32))
    strokes = np.zeros((40, 12 * (MAX_DIGITS + 1)), np.float32)
    strokes[5:35, 4::12] = 1  # MAX_DIGITS + 1 "ones"
    with pytest.raises(BadInput, match=f"more than {MAX_DIGITS} digits"):
        split_number(strokes)
    noise = (np.random.default_rng(0).random((1000, 1000)) < 0.3).astype(np.float32)
    with pytest.raises(BadInput, match="too noisy"):
        split_number(noise)  # too many runs of ink
    dots = np.zeros((300, 300), np.float32)
    dots[::6, ::6] = 1  # 2,500 separate dots
    with pytest.raises(BadInput, match="2500 separate marks"):
        split_number(dots)


def test_occlusion_map_lights_the_ink_not_the_background(digits, model):
    images, labels = digits
    for image, label in zip(images[:6] / 255, labels[:6], strict=True):
        why = occlusion_map(model, image.astype(np.float32), int(label))
        ink = image > 0.2
        assert why[ink].mean() > 3 * max(why[~ink].mean(), 1e-6)
        # A pixel farther from the ink than a patch reaches: every patch over it covers black only.
        near = Image.fromarray((image > 0).astype(np.uint8) * 255).filter(
            ImageFilter.MaxFilter(2 * PATCH + 1)
        )
        assert np.abs(why[np.asarray(near) == 0]).max() < 1e-6
