"""Reading whole numbers: generated numbers of 2-8 MNIST digits read back through the server's path.

    python benchmarks/read_numbers.py --split test --numbers 2000 --out benchmarks/results/read_numbers.json

Each number is MNIST digits of one split written on a line (digits.numbers.compose_number: 40-100 px tall,
varied sizes and baselines, random gaps, and with probability --touching each neighbour pushed into the
previous digit's columns, so strokes may touch). Read as /api/read reads it: split (digits.numbers) with
the served model choosing the cuts, each digit prepared and classified, accepted or not by the bundle's
calibration. The splitting was tuned on numbers from the validation digits (`--split val`); `--split test`
measures it. Also runs the splitting without the model (cuts by width only), for what the model adds.

Prints, per setting: whole numbers read right (every digit, and the count), digit accuracy (the longest
common subsequence of read and true digits over the true digits, so a missed or extra digit costs one),
the share of numbers with every digit accepted and their accuracy, and milliseconds per number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digits import paths
from digits.numbers import compose_number, split_number
from digits.runtime import bundle_calibration, load_predictor
from digits.splits import load_split


def common(a: str, b: str) -> int:
    """Length of the longest common subsequence."""
    row = [0] * (len(b) + 1)
    for ch in a:
        prev = 0
        for j, other in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if ch == other else max(row[j + 1], row[j])
    return row[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("train", "val", "test"), default="test")
    ap.add_argument("--numbers", type=int, default=2000, help="numbers read (default: %(default)s)")
    ap.add_argument(
        "--touching", type=float, default=0.2, help="chance a gap is closed (default: %(default)s)"
    )
    ap.add_argument("--bundle", type=Path, default=Path("models/serving/model_int8.tflite"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()

    images, labels = load_split(paths.prepared(args.split))[:2]
    model = load_predictor(args.bundle)
    calibration = bundle_calibration(args.bundle)

    def score(x: np.ndarray) -> np.ndarray:  # what digits.serve's /api/read gives split_number
        return calibration.apply(model(x)).max(axis=1)

    rng = np.random.default_rng(args.seed)
    numbers = []
    for _ in range(args.numbers):
        chosen = rng.choice(len(images), rng.integers(2, 9), replace=False)
        picture, _ = compose_number(images[chosen], rng, args.touching)
        numbers.append((picture, "".join(str(int(d)) for d in labels[chosen])))

    results = {}
    for name, scorer in (("model chooses the cuts", score), ("cuts by width only", None)):
        whole = count = matched = total = all_accepted = accepted_right = 0
        start = time.perf_counter()
        for picture, truth in numbers:
            found = split_number(picture, scorer)
            calibrated = calibration.apply(model(np.stack([d.image for d in found])))
            read = "".join(str(int(d)) for d in calibrated.argmax(axis=1))
            accepted = calibration.decide(calibrated)[0].all()
            whole += read == truth
            count += len(read) == len(truth)
            matched += common(read, truth)
            total += len(truth)
            all_accepted += accepted
            accepted_right += accepted and read == truth
        n = len(numbers)
        results[name] = {
            "whole_number_accuracy": round(whole / n, 4),
            "count_right": round(count / n, 4),
            "digit_accuracy": round(matched / total, 4),
            "all_digits_accepted": round(all_accepted / n, 4),
            "accuracy_when_all_accepted": round(accepted_right / max(all_accepted, 1), 4),
            "ms_per_number": round((time.perf_counter() - start) / n * 1000, 1),
        }
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
        args.out.write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
