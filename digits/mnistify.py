"""Make any digit picture look like MNIST before the model sees it.

MNIST digits are white ink on black, size-normalised to fit a 20x20 box (keeping the aspect ratio, with
antialiasing) and pasted into 28x28 so the ink's centre of mass is at the centre. A drawing, photo or scan
that skips these steps is a different distribution and gets mispredicted, so every input goes through
`mnistify`: the browser canvas (PNG), uploads (PNG, JPEG, WebP, GIF or BMP) and 28x28 / 784 pixel arrays.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from digits import DigitsError
from digits.parallel import map_ordered, workers
from digits.shapes import SIDE  # the model's input is SIDE x SIDE

BOX = 20  # the ink is scaled to fit BOX x BOX, as MNIST's was
INK = 0.2  # after normalisation, pixels at least this bright count as ink for the bounding box
MIN_CONTRAST = 0.1  # ink must differ from the background by this much (of the full range)
MIN_INK_PIXELS = 3  # fewer ink pixels than this is a stray speck, not a digit
MAX_PIXELS = 4096 * 4096  # decoding bigger images could take gigabytes (a small PNG can be huge)
# The formats read, and no other: each decodes in-process within bounded memory. Pillow would otherwise open
# EPS/PS/PDF by running Ghostscript, and a dozen rarer formats through parsers nobody here needs.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# WebP has no reduced-size decode (JPEG's draft) and goes through two full RGBA buffers: a 4096x4096 one
# costs about 260 MiB, a 2048x2048 one 70 MiB, as a 4096x4096 PNG does.
MAX_FORMAT_PIXELS = {"WEBP": 2048 * 2048}
# Text chunks are read while a PNG is opened, up to 64 MB of them by Pillow's default: a 1.5 MB file of
# zTXt chunks costs that much before a pixel is decoded. A digit's picture needs none.
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024
WORK_SIDE = 1024  # decoded pictures are shrunk to this before float work: 4 MB arrays, not 64 MB
PARALLEL_FROM = 2000  # as_served of this many pictures or more shares them among the cores


class BadInput(DigitsError):
    """The input is not a usable picture: not an image, wrong shape, NaN or out-of-range values."""


class EmptyInput(BadInput):
    """The picture is blank (or nearly): there is no digit to recognise."""


def open_image(data: bytes) -> Image.Image:
    """Parse an image's header only (no pixels decoded yet), refusing sizes over MAX_PIXELS.

    Cheap, so a request can add up its pictures' pixels before decoding any (digits.serve does).
    """
    # Pillow reads a BMP's signed width as unsigned, so a negative one looks like 4 billion pixels.
    bmp = data[:2] == b"BM" and len(data) >= 26 and int.from_bytes(data[14:18], "little") >= 40
    if bmp and int.from_bytes(data[18:22], "little", signed=True) <= 0:
        raise BadInput("damaged image: the BMP header gives a width of zero or less")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"image is too large: more than {MAX_PIXELS} pixels") from None
    except UnidentifiedImageError:
        raise BadInput(f"not an image in a format read here ({', '.join(FORMATS)})") from None
    except Exception as e:  # Pillow's parsers raise OSError, ValueError, SyntaxError, ... on corrupt headers
        raise BadInput(f"damaged image: {type(e).__name__}: {e}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadInput(f"damaged image: the header gives a size of {width}x{height}")
    limit = MAX_FORMAT_PIXELS.get(image.format, MAX_PIXELS)
    if width * height > limit:
        raise BadInput(f"image is {width}x{height}: more than {limit} pixels (for {image.format})")
    return image


def decode_image(data: bytes | Image.Image) -> np.ndarray:
    """PNG/JPEG/... bytes (or an open_image) -> float32 (h, w) grayscale in [0, 1], at most WORK_SIDE a side.

    Transparency is flattened. Memory stays near one copy of the decoded picture: JPEGs decode at a reduced
    scale straight to grayscale, others are shrunk by an integer factor before any float array exists.
    """
    image = open_image(data) if isinstance(data, bytes) else data
    try:
        if image.format == "JPEG":
            image.draft("L", _fit(image.size, WORK_SIDE))  # DCT scaling: 1/2, 1/4 or 1/8 of the pixels
        image.load()
        sixteen_bit = image.mode.startswith("I;16")
        small = _shrink(image)
        if small is not image:
            image.close()  # the full-size pixels go now, before the float arrays are made
        ImageOps.exif_transpose(small, in_place=True)  # phone photos are often stored sideways
        return _to_gray(small, sixteen_bit)
    except Exception as e:  # Pillow's decoders raise OSError, ValueError, SyntaxError, ... on corrupt data
        raise BadInput(f"damaged image: {type(e).__name__}: {e}") from None


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _shrink(image: Image.Image) -> Image.Image:
    """At most WORK_SIDE pixels a side, by box averaging (antialiased, and what fit_box would do anyway).

    A band of rows at a time: Pillow's reduce() of a whole RGBA picture first makes a premultiplied copy
    as big as the picture, and widening a 1-bit or palette picture would copy it too.
    """
    widen = None  # reduce() cannot average bits, palette indices or 16-bit words
    if image.mode in ("1", "P", "PA"):
        widen = "LA" if _has_alpha(image) else "L"
    elif image.mode.startswith("I;16"):
        widen = "I"
    factor = -(-max(image.size) // WORK_SIDE)  # ceil
    if factor == 1 and widen is None:
        return image
    width, height = image.size
    out = Image.new(widen or image.mode, (-(-width // factor), -(-height // factor)))
    band = factor * max(1, 256 // factor)  # rows per step, a multiple of the factor
    for top in range(0, height, band):
        strip = image.crop((0, top, width, min(height, top + band)))
        if widen:
            strip = strip.convert(widen)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    out.info = {k: v for k, v in image.info.items() if not (widen and k == "transparency")}  # EXIF stays
    return out


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _to_gray(image: Image.Image, sixteen_bit: bool = False) -> np.ndarray:
    if sixteen_bit:  # widened to mode I by _shrink
        return (np.asarray(image, dtype=np.float32) / 65535).clip(0, 1)
    if _has_alpha(image):
        gray, alpha = (np.asarray(b, dtype=np.float32) / 255 for b in image.convert("LA").split())
        return _flatten_alpha(gray, alpha)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def _flatten_alpha(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # Put the ink on the background that contrasts with it: a white stroke on a transparent canvas
    # goes on black, black text on a transparent background goes on white.
    if alpha.min() >= 1 or alpha.sum() == 0:
        return gray
    ink_is_light = float((gray * alpha).sum() / alpha.sum()) > 0.5
    background = 0.0 if ink_is_light else 1.0
    return gray * alpha + background * (1 - alpha)


def pixels_to_array(values: object) -> np.ndarray:
    """A 28x28 or 784 array of numbers in [0, 1] or 0..255 -> float32 (28, 28) in [0, 1].

    Values above 1 mean the 0..255 scale. Only numbers count: numpy would read "255" and true as numbers.
    """
    numeric = isinstance(values, np.ndarray) and values.dtype.kind in "iuf"
    try:
        x = values if numeric else np.asarray(values, dtype=object)
    except ValueError:  # nesting numpy cannot make an array of, even of objects
        raise BadInput("pixels must be numbers in a 28x28 array or a flat list of 784") from None
    if x.shape not in ((SIDE, SIDE), (SIDE * SIDE,)):
        raise BadInput(f"pixels must be a 28x28 array or a flat list of 784, got shape {x.shape}")
    if not numeric and not set(map(type, x.flat)) <= {int, float}:  # the set: fast for 784 good values
        for index, value in np.ndenumerate(x):
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
                where = "".join(f"[{i}]" for i in index)
                raise BadInput(f"pixels must be numbers, got {_json_kind(value)} at pixels{where}")
    try:
        x = np.asarray(x, dtype=np.float64)
    except OverflowError:
        raise BadInput(
            "pixel values must lie in [0, 1] or 0..255, got a number too big for a float"
        ) from None
    if not np.isfinite(x).all():
        raise BadInput("pixels contain NaN or infinite values")
    if x.min() < 0 or x.max() > 255:
        raise BadInput(f"pixel values must lie in [0, 1] or 0..255, got {x.min():g}..{x.max():g}")
    if x.max() > 1:
        x = x / 255
    return x.reshape(SIDE, SIDE).astype(np.float32)


def _json_kind(value: object) -> str:
    """How a JSON client would name this value."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:20]!r}"
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def ink_on_black(gray: np.ndarray) -> np.ndarray:
    """White ink on a black background with the background at 0 and the brightest ink at 1.

    Dark-on-light pictures (paper, scans) are inverted: the border is mostly background, so a bright
    border means dark ink. Subtracting the background level and stretching handles grey paper and
    faint pencil.
    """
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    if np.median(border) > 0.5:
        gray = 1 - gray
        border = 1 - border
    background = float(np.median(border))
    contrast = float(gray.max()) - background
    if contrast < MIN_CONTRAST:
        raise EmptyInput("the picture is blank: no ink stands out from the background")
    return ((gray - background) / contrast).clip(0, 1).astype(np.float32)


def crop_to_ink(image: np.ndarray, threshold: float = INK) -> np.ndarray:
    """The smallest box holding every pixel at least `threshold` bright (fainter noise does not count)."""
    ink = image >= threshold
    if ink.sum() < MIN_INK_PIXELS:
        raise EmptyInput(f"the picture is blank: only {int(ink.sum())} ink pixel(s)")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_box(image: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is `box` pixels, keeping the aspect ratio, with antialiasing."""
    h, w = image.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow sizes are (width, height)
    # LANCZOS filters over the whole source footprint when shrinking, so thin strokes fade rather
    # than alias away; it can overshoot slightly at edges, hence the clip.
    resized = Image.fromarray(image.astype(np.float32)).resize(size, Image.LANCZOS)
    return np.asarray(resized, dtype=np.float32).clip(0, 1)


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, col) of the brightness-weighted mean position, in pixel-index coordinates."""
    total = image.sum()
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def paste_centered(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Paste into a side x side black image so the centre of mass lands on pixel (side/2, side/2).

    That is where MNIST's is over its test set, in index coordinates, not at the geometric 13.5
    (benchmarks/README.md). Whole-pixel shift, as MNIST did, so it ends within half a pixel of there; the box
    is kept inside the frame if a lopsided digit would push it out.
    """
    h, w = image.shape
    cy, cx = center_of_mass(image)
    centre = side // 2
    top = min(max(round(centre - cy), 0), side - h)
    left = min(max(round(centre - cx), 0), side - w)
    out = np.zeros((side, side), dtype=np.float32)
    out[top : top + h, left : left + w] = image
    return out


def mnistify(gray: np.ndarray) -> np.ndarray:
    """Any grayscale picture (h, w) in [0, 1] -> float32 (28, 28) in [0, 1] laid out like MNIST."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise BadInput(f"expected a 2-D picture at least 2x2, got shape {gray.shape}")
    if not np.isfinite(gray).all() or gray.min() < 0 or gray.max() > 1:
        raise BadInput("picture values must be finite and lie in [0, 1]")
    return paste_centered(fit_box(crop_to_ink(ink_on_black(gray))))


def prepare_pixels(values: object) -> np.ndarray:
    """A raw 28x28 / 784 pixel array -> the model's (28, 28) input."""
    return mnistify(pixels_to_array(values))


def as_served(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 pictures (n, h, w) as the server prepares them (mnistify), back in uint8 (n, 28, 28).

    Also returns whether each had ink: the server refuses a blank picture (its row here stays black), so a
    measurement counts it as not accepted. Many pictures are shared among the cores (digits.parallel).
    """
    if len(images) < PARALLEL_FROM or workers() < 2:
        return _as_served(images)
    parts = map_ordered(_as_served, np.array_split(images, 4 * workers()))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _as_served(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(images), SIDE, SIDE), np.uint8)
    ink = np.ones(len(images), bool)
    for i, image in enumerate(images):
        try:
            out[i] = np.rint(mnistify(np.asarray(image, np.float32) / 255) * 255)
        except EmptyInput:
            ink[i] = False
    return out, ink
