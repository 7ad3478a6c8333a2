"""Real handwriting, not MNIST's capture: digits captured at low resolution, blurred, thick, touching the
frame, read through the server's path, and how many the served model calls "not a digit".

    python benchmarks/handwriting.py --out benchmarks/results/handwriting.json

Two sets, built here with a fixed seed and never used for training or for choosing a threshold:
- `mnist-lowres`: MNIST **test** digits, their ink shrunk to 8-14 px (area average, as a coarse camera or
  scanner would capture them), blown up again to 28-112 px, then with a chance each thickened (a 3-5 px max
  filter) and blurred (Gaussian, radius up to 2% of the side), cropped tight so the ink touches the frame;
- `fonts-lowres`: the digits 0-9 of the four DejaVu fonts in digits/fonts, turned up to +-8 degrees, through
  the same capture.
Each picture goes through digits.mnistify and the served bundle (int8 by default) with its calibration.
Prints, per set: accepted and right, accepted and wrong, "not a digit", unsure; and clean MNIST test as
the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digits import paths
from digits.confidence import NOT_A_DIGIT
from digits.mnistify import mnistify
from digits.runtime import bundle_calibration, load_predictor
from digits.splits import load_split

FONTS = Path(__file__).resolve().parent.parent / "digits" / "fonts"


def capture(image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """A grey picture (white ink on black) as a low-resolution capture: float32 (h, w) in [0, 1]."""
    image = image.crop(image.getbbox())  # the ink, 8-14 px tall once captured
    small = rng.integers(8, 15)
    scale = small / max(image.size)
    shrunk = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BOX
    )
    side = rng.integers(28, 113)
    up = side / max(shrunk.size)
    big = shrunk.resize((max(1, round(shrunk.width * up)), max(1, round(shrunk.height * up))), Image.BILINEAR)
    if rng.random() < 0.5:
        big = big.filter(ImageFilter.MaxFilter(int(rng.choice([3, 5]))))
    if rng.random() < 0.5:
        big = big.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 2.0) * side / 100)))
    x = np.asarray(big, np.float32) / 255
    ink = x > 0.2
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if len(rows) else x


def font_digits(rng: np.random.Generator, per_font: int) -> tuple[list[Image.Image], list[int]]:
    images, labels = [], []
    for font_file in sorted(FONTS.glob("*.ttf")):
        font = ImageFont.truetype(str(font_file), 80)
        for _ in range(per_font):
            digit = int(rng.integers(10))
            canvas = Image.new("L", (120, 120))
            ImageDraw.Draw(canvas).text((60, 60), str(digit), fill=255, font=font, anchor="mm")
            images.append(canvas.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR))
            labels.append(digit)
    return images, labels


def lowres_sets(
    test_x: np.ndarray, test_y: np.ndarray, rng: np.random.Generator, digits: int, per_font: int
) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """The two low-resolution sets, pictures (before mnistify) and labels, drawn from rng in a fixed order."""
    chosen = rng.choice(len(test_y), digits, replace=False)
    fonts, font_labels = font_digits(rng, per_font)
    return {
        "mnist-lowres": ([capture(Image.fromarray(test_x[i]), rng) for i in chosen], test_y[chosen]),
        "fonts-lowres": ([capture(f, rng) for f in fonts], np.asarray(font_labels)),
    }


def read(model, calibration, pictures: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    x = np.stack([mnistify(p) for p in pictures])
    calibrated = calibration.apply(model(x))
    accepted, reasons = calibration.decide(calibrated)
    right = calibrated.argmax(axis=1) == labels
    n = len(labels)
    return {
        "pictures": n,
        "accepted_right": round(float((accepted & right).sum() / n), 4),
        "accepted_wrong": round(float((accepted & ~right).sum() / n), 4),
        "not_a_digit": round(sum(r == NOT_A_DIGIT for r in reasons) / n, 4),
        "unsure": round(sum(r is not None and r != NOT_A_DIGIT for r in reasons) / n, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/serving/model_int8.tflite"))
    ap.add_argument(
        "--digits", type=int, default=3000, help="MNIST test digits captured (default: %(default)s)"
    )
    ap.add_argument("--per-font", type=int, default=250, help="font digits per font (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()

    model, calibration = load_predictor(args.bundle), bundle_calibration(args.bundle)
    test_x, test_y = load_split(paths.prepared("test"))
    sets = {
        "mnist-test": ([x.astype(np.float32) / 255 for x in test_x], test_y),
        **lowres_sets(test_x, test_y, np.random.default_rng(args.seed), args.digits, args.per_font),
    }
    results = {}
    for name, (pictures, labels) in sets.items():
        results[name] = read(model, calibration, pictures, np.asarray(labels))
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
        args.out.write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
