"""Seeded generators of pictures that are not digits, seen the way the server sees any picture.

Each family draws on a 112x112 canvas, white ink on black with pen-like strokes about as wide, relative to
the canvas, as the web page's brush, and then goes through digits.mnistify.mnistify, exactly as a drawing
sent to the server does. So a threshold chosen on these carries over to the app.

| family    | what                                                                                   |
|-----------|----------------------------------------------------------------------------------------|
| letters   | a letter rendered from the DejaVu fonts in digits/fonts, turned and slanted a little;    |
|           | letters that look like digits (O o I l S s Z z B b g q D G Q J T y i j L Y) are left out |
| strokes   | 3-5 separate smooth pen strokes (Bézier curves) across the canvas                       |
| shapes    | triangles, stars, grids, hatching, asterisks, zig-zags (no ovals, polygons of 4 or more |
|           | sides or spirals: drawn by hand they are 0s)                                            |
| noise     | uniform or Gaussian noise, speckles, blotches                                          |
| scribbles | one long tangled pen path (a random walk with momentum)                                |
| blobs     | one or two filled polygons, round to oblong, shaded or striped: a coloured-in area, a    |
|           | stamp, a photo of a thing (at least a third as wide as long: a filled sliver is a 1)   |

`font_digits` renders the digits themselves from the same fonts: digits in a style unlike MNIST, which
must still be accepted. Every generator is deterministic given its numpy Generator.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digits.mnistify import as_served
from digits.parallel import map_ordered
from digits.shapes import SIDE

if TYPE_CHECKING:
    from digits.params import Params

CANVAS = 112
FONTS_DIR = Path(__file__).parent / "fonts"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf")
LETTERS = "ACEFHKMNPRUVWXacdefhkmnprtuvwx"  # no O o I l S s Z z B b g q D G Q J T y i j L Y: like digits

Generator = Callable[[np.random.Generator], Image.Image]


def _pen(rng: np.random.Generator) -> int:
    # The page's brush is 22 px on its 280 px canvas (7.9%); drawings vary in size, so vary the width.
    return int(rng.integers(8, 17))


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (CANVAS, CANVAS), 0)
    return image, ImageDraw.Draw(image)


def _polyline(draw: ImageDraw.ImageDraw, points: np.ndarray, width: int) -> None:
    """A round-capped, round-joined stroke through the points, like a pen on the page's canvas."""
    xy = [(float(x), float(y)) for x, y in points]
    draw.line(xy, fill=255, width=width)
    r = width / 2
    # Round caps and joins: a disc at every point. Pillow's joint="curve" draws the same discs as pie slices,
    # at three times the cost, and adds no pixel to these.
    for x, y in xy:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)


def _bezier(rng: np.random.Generator, steps: int = 24) -> np.ndarray:
    """A cubic Bézier curve with four random control points on the canvas: (steps, 2)."""
    p = rng.uniform(8, CANVAS - 8, (4, 2))
    t = np.linspace(0, 1, steps)[:, None]
    return (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]


def letters(rng: np.random.Generator) -> Image.Image:
    font = _random_font(rng)  # drawn before the letter: the committed negatives depend on this order
    return _glyph(rng, LETTERS[rng.integers(len(LETTERS))], font)


def font_digit(rng: np.random.Generator, digit: int) -> Image.Image:
    return _glyph(rng, str(digit), _random_font(rng))


def _random_font(rng: np.random.Generator) -> ImageFont.FreeTypeFont:
    return _font(FONTS[rng.integers(len(FONTS))], int(rng.integers(60, 90)))


def _glyph(rng: np.random.Generator, text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """`text` in `font`, centred, then slanted."""
    image, draw = _canvas()
    draw.text((CANVAS / 2, CANVAS / 2), text, fill=255, font=font, anchor="mm")
    return _slant(image, rng)


def _slant(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turn by up to 12 degrees and shear by up to 0.25, about the centre."""
    shear = rng.uniform(-0.25, 0.25)
    c = CANVAS / 2
    image = image.transform(image.size, Image.AFFINE, (1, shear, -shear * c, 0, 1, 0), Image.BILINEAR)
    return image.rotate(rng.uniform(-12, 12), Image.BILINEAR)


def strokes(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    width = _pen(rng)
    for _ in range(int(rng.integers(3, 6))):
        _polyline(draw, _bezier(rng), width)
    return image


def scribbles(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    n = int(rng.integers(60, 160))
    heading = rng.uniform(0, 2 * np.pi)
    turn = rng.normal(0, 0.5, n).cumsum() * 0.3 + rng.normal(0, 0.35, n)  # smooth, sometimes sharp, turning
    angles = heading + np.cumsum(turn)
    steps = np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(3, 7)
    path = np.cumsum(steps, 0)
    path -= path.min(0)
    path *= (CANVAS - 20) / max(float(path.max()), 1.0)  # the whole tangle fills the canvas
    _polyline(draw, path + 10, _pen(rng))
    return image


def shapes(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    width, c = _pen(rng), CANVAS / 2
    radius = rng.uniform(30, 50)
    kind = rng.integers(6)
    turn = rng.uniform(0, 2 * np.pi)
    if kind in (0, 1):  # triangle or star (5-7 points)
        sides = 3 if kind == 0 else int(rng.integers(5, 8))
        if kind == 0:
            angles = turn + np.arange(sides + 1) * 2 * np.pi / sides
            r = np.full(sides + 1, radius)
        else:
            angles = turn + np.arange(2 * sides + 1) * np.pi / sides
            r = np.where(np.arange(2 * sides + 1) % 2, radius * 0.4, radius)
        _polyline(draw, np.stack([c + r * np.cos(angles), c + r * np.sin(angles)], 1), width)
    elif kind == 2:  # grid (#): two lines each way
        for offset in (-radius / 3, radius / 3):
            _polyline(draw, np.array([[c + offset, c - radius], [c + offset, c + radius]]), width)
            _polyline(draw, np.array([[c - radius, c + offset], [c + radius, c + offset]]), width)
    elif kind == 3:  # hatching: 3-6 parallel slanted lines
        lines = int(rng.integers(3, 7))
        for offset in np.linspace(-radius, radius, lines):
            d = np.array([np.cos(turn), np.sin(turn)]) * radius
            n = np.array([-np.sin(turn), np.cos(turn)]) * offset
            _polyline(draw, np.array([c + n - d, c + n + d]), width)
    elif kind == 4:  # asterisk: 3-4 lines through the centre
        spokes = int(rng.integers(3, 5))
        for a in turn + np.arange(spokes) * np.pi / spokes:
            d = np.array([np.cos(a), np.sin(a)]) * radius
            _polyline(draw, np.array([c - d, c + d]), width)
    else:  # zig-zag of 4-8 teeth
        teeth = int(rng.integers(4, 9))
        xs = np.linspace(c - radius, c + radius, teeth + 1)
        ys = c + np.where(np.arange(teeth + 1) % 2, radius, -radius) * rng.uniform(0.3, 0.7)
        _polyline(draw, np.stack([xs, ys], 1), width)
    return image


def noise(rng: np.random.Generator) -> Image.Image:
    kind = rng.integers(4)
    if kind == 0:  # uniform
        field = rng.random((CANVAS, CANVAS))
    elif kind == 1:  # Gaussian around grey
        field = np.clip(rng.normal(0.5, 0.25, (CANVAS, CANVAS)), 0, 1)
    elif kind == 2:  # sparse speckles
        field = (rng.random((CANVAS, CANVAS)) < rng.uniform(0.01, 0.1)).astype(float)
    else:  # blotches: coarse noise, blown up and thresholded
        coarse = rng.random((int(rng.integers(4, 12)),) * 2)
        big = np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize((CANVAS, CANVAS), Image.BICUBIC)
        )
        field = (big > 255 * rng.uniform(0.5, 0.7)).astype(float)
    return Image.fromarray((field * 255).astype(np.uint8))


def blobs(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    for _ in range(1 if rng.random() < 0.6 else 2):
        corners = int(rng.integers(5, 13))
        # Corners spread all the way round, radii within 0.65-1 of each other, axes 0.35-1: never a sliver.
        angles = rng.uniform(0, 2 * np.pi) + (np.arange(corners) + rng.uniform(-0.3, 0.3, corners)) * (
            2 * np.pi / corners
        )
        radii = rng.uniform(25, 50) * rng.uniform(0.65, 1.0, corners)
        axes = rng.permutation([1.0, rng.uniform(0.35, 1.0)])
        centre = CANVAS / 2 + rng.uniform(-10, 10, 2)
        corners_xy = centre + axes * radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
        draw.polygon([(float(x), float(y)) for x, y in corners_xy], fill=int(rng.integers(110, 256)))
    field = np.asarray(image, np.float32) / 255
    kind = rng.integers(3)
    if kind == 0:  # shaded: coarse noise, blown up
        coarse = rng.random((int(rng.integers(3, 10)),) * 2)
        big = Image.fromarray((coarse * 255).astype(np.uint8)).resize((CANVAS, CANVAS), Image.BICUBIC)
        field *= 0.5 + 0.5 * np.asarray(big, np.float32) / 255
    elif kind == 1:  # striped
        frequency, turn = rng.uniform(0.1, 0.4), rng.uniform(0, np.pi)
        y, x = np.mgrid[:CANVAS, :CANVAS]
        field *= 0.7 + 0.3 * np.sin(frequency * (x * np.cos(turn) + y * np.sin(turn)))
    return Image.fromarray((np.clip(field, 0, 1) * 255).astype(np.uint8))


FAMILIES: dict[str, Generator] = {
    "letters": letters,
    "strokes": strokes,
    "shapes": shapes,
    "noise": noise,
    "scribbles": scribbles,
    "blobs": blobs,  # last: the families' indices (y in data/negatives) of the others stay what they were
}


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS_DIR / name), size)


def as_model_input(image: Image.Image) -> np.ndarray:
    """A canvas through the server's preprocessing, as uint8 28x28 (what the model sees, 0..255)."""
    return as_served(np.asarray(image)[None])[0][0]


def generate(family: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n pictures of one family as the model sees them: uint8 (n, 28, 28)."""
    draw = FAMILIES[family]
    out = np.empty((n, SIDE, SIDE), np.uint8)
    for i in range(n):
        out[i] = as_model_input(draw(rng))
    return out


def spread(total: int, parts: int) -> list[int]:
    """total split into `parts` counts differing by at most one: the pictures of each family."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def generate_all(jobs: list[tuple[str, int, np.random.Generator]]) -> list[np.ndarray]:
    """`generate(*job)` for each (family, n, rng), the jobs spread over the cores (each rng is its own)."""
    return map_ordered(_generate, jobs)


def _generate(job: tuple[str, int, np.random.Generator]) -> np.ndarray:
    return generate(*job)


def draw_splits(params: Params, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, tuple]:
    """The negatives stage's pictures: {split: (uint8 (n, 28, 28), family index (n,), {family: count})}.

    train and val hold the training families only (val: other seeds); test holds `negatives.test` of every
    family, the held-out one included. Every (split, family) draws from its own seeded generator, so a split
    drawn alone has the bytes it has among all three. The training ones are degraded like the augmented
    digits (`augment` params), so that a degradation never tells a digit from a non-digit.
    """
    from digits.augment import degrade
    from digits.seeding import generator

    p = params.negatives
    names = list(FAMILIES)
    trained = [f for f in names if f != p.heldout]
    plan = {
        "train": dict(zip(trained, spread(p.train, len(trained)), strict=True)),
        "val": dict(zip(trained, spread(p.val, len(trained)), strict=True)),
        "test": dict.fromkeys(names, p.test),
    }
    plan = {split: plan[split] for split in splits}
    jobs = {
        (split, f): (f, n, generator(p.seed, split, f)) for split, c in plan.items() for f, n in c.items()
    }
    drawn = dict(zip(jobs, generate_all(list(jobs.values())), strict=True))
    out = {}
    for split, counts in plan.items():
        x = np.concatenate([drawn[split, f] for f in counts])
        families = np.repeat([names.index(f) for f in counts], list(counts.values()))
        if split == "train" and len(x):
            x = degrade(x, params.augment, generator(p.seed, split, "degrade"))
        out[split] = (x, families, counts)
    return out


def font_digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n digits rendered from the fonts (labels cycle 0..9), as the model sees them: uint8 images, labels."""
    labels = np.arange(n) % 10
    return np.stack([as_model_input(font_digit(rng, int(d))) for d in labels]), labels


def pure_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """n 28x28 noise pictures, half uniform, half Gaussian (mean 0.5, sd 0.25), before any preprocessing."""
    uniform = rng.random((n // 2, SIDE, SIDE))
    gaussian = np.clip(rng.normal(0.5, 0.25, (n - n // 2, SIDE, SIDE)), 0, 1)
    return np.rint(np.concatenate([uniform, gaussian]) * 255).astype(np.uint8)
