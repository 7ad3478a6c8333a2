"""Read a whole number: split a picture of several handwritten digits into one MNIST-like input per digit.

The ink (digits.mnistify.ink_on_black) is cut into connected marks, 8-connected. Marks are grouped into
digits: a mark under or over another one (a 5's flag, a 4 or a 7 drawn in two strokes) joins it, and specks
too small to be a digit join their neighbour or are dropped. A group may be digits that touch: it is read as
1, 2, ... digits, cut where its column profile holds the least ink near evenly spaced points or right at
them, and the model chooses (the reading whose pieces it finds most likely digits, all at once); without a
model, only a group much wider than tall is cut, by its width. Each digit is then prepared as a single one
is (crop, fit 20x20, centre of mass at the centre), from its own ink only, so a neighbour reaching into its
box does not show.

NumPy and Pillow only, as the rest of the server: marks are found as runs of ink per row, joined across rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from PIL import Image, ImageFilter

from digits.mnistify import INK, MIN_INK_PIXELS, BadInput, EmptyInput, fit_box, ink_on_black, paste_centered

MAX_DIGITS = 20  # a picture holding more is refused: a number, not a page of text
MAX_RUNS = 100_000  # ink runs (row pieces) a picture may hold: a noisy photo has far more, a number ~5,000
MAX_MARKS = 2_000  # separate marks, specks included: bounds the grouping's cost (marks x groups)
SPECK = 0.02  # a mark with less than this share of the largest one's pixels is a speck, not a digit
OVERLAP = 0.5  # marks whose columns overlap by this share of the narrower one belong to one digit
WIDE = 1.25  # a group wider than this times its height is touching digits ...
DIGIT_WIDTH = 0.8  # ... as many as its width holds digits this many times its height wide (at least 2)
# With the model's confidence to choose: a group is read as 1 up to this many digits ...
MAX_PIECES = 6
NARROWEST = 0.3  # ... or as many as fit if digits were this many times its height wide, if fewer
# Where a cut may go, in digit widths either side of its evenly spaced point: at the thinnest column within a
# third, or right at the point (digits that overlap have no thin column); the model reads both.
REACHES = (1 / 3, 0.0)
WHOLE = 0.8  # a mark with this share of its pixels on one side of a cut goes to that side whole

# (n, 28, 28) model inputs -> how much each looks like one digit, in [0, 1] (the calibrated confidence)
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Digit:
    """One digit of a number: where it is in the picture and the 28x28 model input made from its ink."""

    box: tuple[int, int, int, int]  # left, top, width, height, in the picture's pixels
    image: np.ndarray  # float32 (28, 28) in [0, 1]


def label_marks(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 8-connected marks of a boolean picture: an int32 label per pixel (0 = background, 1..n), and n.

    Runs of True per row are the units: a run joins each run of the row above that it touches (diagonals
    included), through a union-find over runs, so the cost follows the number of runs, not of pixels.
    """
    h, w = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; same row order as the starts
    if len(starts) > MAX_RUNS:
        raise BadInput(f"the picture is too noisy to read a number from: {len(starts)} runs of ink")
    parent = list(range(len(starts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(h + 1))  # runs of row r are first[r]:first[r + 1]
    for r in range(1, h):
        above, here = range(first[r - 1], first[r]), range(first[r], first[r + 1])
        j = above.start
        for i in here:
            while j < above.stop and ends[j] < starts[i]:  # ends before this run, diagonal excluded
                j += 1
            k = j
            while k < above.stop and starts[k] <= ends[i]:  # starts at most one column past its end
                parent[root(k)] = root(i)
                k += 1
            j = max(j, k - 1)  # the last run above touching this one may touch the next too
    roots = np.array([root(i) for i in range(len(starts))], dtype=np.int64)
    ids, run_labels = np.unique(roots, return_inverse=True)
    labels = np.zeros((h, w), np.int32)
    for r, s, e, lab in zip(rows, starts, ends, run_labels + 1, strict=True):
        labels[r, s:e] = lab
    return labels, len(ids)


@dataclass
class _Group:
    """Marks taken for one digit: their labels and the box around them (columns end-exclusive)."""

    labels: list[int]
    left: int
    right: int
    top: int
    bottom: int
    pixels: int

    def overlap(self, other: _Group) -> float:
        shared = min(self.right, other.right) - max(self.left, other.left)
        return shared / min(self.right - self.left, other.right - other.left)

    def absorb(self, other: _Group) -> None:
        self.labels += other.labels
        self.left, self.right = min(self.left, other.left), max(self.right, other.right)
        self.top, self.bottom = min(self.top, other.top), max(self.bottom, other.bottom)
        self.pixels += other.pixels


def _groups(labels: np.ndarray, n: int) -> list[_Group]:
    """One group per mark, then marks over one another merged and specks joined or dropped, left to right."""
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols]
    top, left = np.full(n + 1, labels.shape[0]), np.full(n + 1, labels.shape[1])
    bottom, right = np.zeros(n + 1, np.int64), np.zeros(n + 1, np.int64)
    np.minimum.at(top, lab, rows)
    np.minimum.at(left, lab, cols)
    np.maximum.at(bottom, lab, rows + 1)
    np.maximum.at(right, lab, cols + 1)
    pixels = np.bincount(lab, minlength=n + 1)
    groups = [
        _Group([i], int(left[i]), int(right[i]), int(top[i]), int(bottom[i]), int(pixels[i]))
        for i in range(1, n + 1)
    ]
    largest = max(g.pixels for g in groups)
    marks = sorted((g for g in groups if g.pixels >= SPECK * largest), key=lambda g: g.left)
    merged: list[_Group] = []
    for g in marks:
        if merged and merged[-1].overlap(g) >= OVERLAP:
            merged[-1].absorb(g)
        else:
            merged.append(g)
    for speck in (g for g in groups if g.pixels < SPECK * largest):
        home = max(
            merged, key=lambda g: g.overlap(speck)
        )  # a dot of a broken stroke, inside a digit's columns
        if home.overlap(speck) > 0:
            home.absorb(speck)
    return merged


def _cuts(profile: np.ndarray, pieces: int, reach: float = 1 / 3) -> list[int]:
    """Where to cut a group of `pieces` touching digits: near each evenly spaced point, the column with the
    least ink (the nearest to the point among equals), searched within `reach` of a digit's width."""
    width = len(profile)
    step = width / pieces
    cuts = []
    for j in range(1, pieces):
        nominal = j * step
        lo, hi = max(1, round(nominal - step * reach)), min(width - 1, round(nominal + step * reach))
        columns = np.arange(lo, hi + 1)
        cuts.append(int(columns[np.lexsort((np.abs(columns - nominal), profile[columns]))[0]]))
    return cuts


def split_number(gray: np.ndarray, score: Scorer | None = None) -> list[Digit]:
    """A grayscale picture (h, w) in [0, 1] of a number written on one line -> its digits, left to right.

    `score`: the model's confidence per candidate digit; with it, each group of marks is read as the
    count of digits (1 up to what its width could hold) whose pieces the model finds most digit-like.
    Without it, only a group wider than WIDE times its height is cut, by its width. Raises EmptyInput
    for a blank picture and BadInput for one holding more than MAX_DIGITS digits.
    """
    ink = ink_on_black(np.asarray(gray, dtype=np.float32))
    labels, n = label_marks(ink >= INK)
    if n == 0:
        raise EmptyInput("the picture is blank: no ink stands out from the background")
    if n > MAX_MARKS:
        raise BadInput(f"the picture is too noisy to read a number from: {n} separate marks")
    digits: list[Digit] = []
    for group in _groups(labels, n):
        digits += _digits_of(group, labels, ink, score)
        if len(digits) > MAX_DIGITS:
            raise BadInput(f"the picture holds more than {MAX_DIGITS} digits: at most {MAX_DIGITS} are read")
    return digits


def _digits_of(group: _Group, labels: np.ndarray, ink: np.ndarray, score: Scorer | None) -> list[Digit]:
    """A group cut into the count of digits that reads best (see split_number)."""
    top, left = max(group.top - 2, 0), max(group.left - 2, 0)  # room for the 2 px of faint edges
    region = (slice(top, group.bottom + 2), slice(left, group.right + 2))
    height, width = group.bottom - group.top, group.right - group.left
    if score is None:
        counts = [max(2, round(width / (DIGIT_WIDTH * height))) if width > WIDE * height else 1]
    else:
        counts = list(range(1, min(MAX_PIECES, max(1, round(width / (NARROWEST * height)))) + 1))
    profile = np.isin(labels[group.top : group.bottom, group.left : group.right], group.labels).sum(axis=0)
    candidates = []
    for count in counts:
        for reach in REACHES if count > 1 and score is not None else REACHES[:1]:
            cuts = [c + group.left - left for c in _cuts(profile, count, reach)]
            masks = _pieces(labels[region], group.labels, cuts)
            candidates.append([d for m in masks if (d := _digit(m, labels[region], ink[region], left, top))])
    if len(candidates) == 1:
        return candidates[0]
    confidence = score(np.stack([d.image for c in candidates for d in c]))
    # The reading whose digits are all likely at once (a sum of logs: an extra piece must earn its place).
    logs = np.log(np.maximum(np.asarray(confidence, np.float64), 1e-4))
    bounds = np.cumsum([0] + [len(c) for c in candidates])
    totals = [logs[a:b].sum() if b > a else -np.inf for a, b in pairwise(bounds)]
    return candidates[int(np.argmax(totals))]


def _pieces(labels: np.ndarray, marks: list[int], cuts: list[int]) -> list[np.ndarray]:
    """The group's pixels in len(cuts) + 1 pieces: a mark that lies mostly (WHOLE) on one side of the cuts
    goes there whole, so a neighbour reaching into a digit's columns is not cut off; the rest by column."""
    side = np.searchsorted(np.asarray(cuts), np.arange(labels.shape[1]), side="right")
    owner = np.where(np.isin(labels, marks), side[None, :], -1)
    for mark in marks:
        at = labels == mark
        shares = np.bincount(owner[at], minlength=len(cuts) + 1)
        if shares.max() >= WHOLE * shares.sum():
            owner[at] = shares.argmax()
    return [owner == i for i in range(len(cuts) + 1)]


def _digit(own: np.ndarray, labels: np.ndarray, ink: np.ndarray, left: int, top: int) -> Digit | None:
    """One piece's ink -> its Digit: its pixels grown by 2 px for their faint antialiased edges (other marks
    left out), cropped to the ink; None if a cut left too little ink in it."""
    grown = np.asarray(Image.fromarray(own.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))) > 0
    piece = np.where(grown & ((labels == 0) | own), ink, 0).astype(np.float32)
    mask = piece >= INK
    if mask.sum() < MIN_INK_PIXELS:
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = (left + int(cols[0]), top + int(rows[0]), crop.shape[1], crop.shape[0])
    return Digit(box, paste_centered(fit_box(crop)))


def compose_number(
    images: np.ndarray, rng: np.random.Generator, touching: float = 0.2
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """MNIST digits (k, 28, 28) uint8 written as one number: float32 picture in [0, 1] and each digit's box.

    What a benchmark reads back: digits 40-100 px tall, each scaled 0.8-1.2x, baselines a few pixels
    apart, gaps of 5-60% of the height, and with probability `touching` a neighbour pushed up to 20% of
    the height into the previous digit's columns, so strokes may touch or cross.
    """
    base = rng.uniform(40, 100)
    placed = []
    x = 0.0
    for image in images:
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        scale = base * rng.uniform(0.8, 1.2) / crop.shape[0]
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        big = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR), np.float32) / 255
        if placed:
            x += base * (-rng.uniform(0, 0.2) if rng.random() < touching else rng.uniform(0.05, 0.6))
        bottom = base * (1.3 + rng.normal(0, 0.06))
        placed.append((big, round(x), round(bottom) - big.shape[0]))
        x += big.shape[1]
    margin = round(0.3 * base)
    shift = margin - min(0, min(top for _, _, top in placed))
    width = max(left + b.shape[1] for b, left, _ in placed) + 2 * margin
    height = max(top + b.shape[0] for b, _, top in placed) + shift + margin
    picture = np.zeros((height, width), np.float32)
    boxes = []
    for big, left, top in placed:
        area = picture[top + shift : top + shift + big.shape[0], left + margin : left + margin + big.shape[1]]
        np.maximum(area, big, out=area)
        boxes.append((left + margin, top + shift, big.shape[1], big.shape[0]))
    return picture, boxes
