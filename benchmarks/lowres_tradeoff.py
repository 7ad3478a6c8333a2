"""Why low-resolution digits and clothes trade against each other: the served bundle's rejection at every
threshold, and which Fashion-MNIST clothes it accepts as which digit.

    python benchmarks/lowres_tradeoff.py --out benchmarks/results/lowres_tradeoff.json

Reads the workspace's serving bundle, data/prepared/{val,test}.npz, data/negatives/val.npz and data/fashion.
Sets, each seen as the server sees it: validation digits and non-digits (what thresholds are chosen on),
MNIST test digits, Fashion-MNIST's test set, and benchmarks/handwriting.py's low-resolution MNIST test
digits and font digits (same seed, same pictures). For thresholds on the calibrated probability of any digit
(the bundle's own first), prints the share of each set below it (rejected); then, per clothing class, the
share the bundle accepts (both thresholds) and the digits it takes them for. Compare two models by running
it after `dvc exp apply` of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from handwriting import lowres_sets

from digits import paths
from digits.idx import read_idx
from digits.mnistify import as_served, mnistify
from digits.runtime import bundle_calibration, load_predictor
from digits.served import FASHION_CLASSES
from digits.splits import load_split

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def served(images: np.ndarray) -> np.ndarray:
    return as_served(images)[0].astype(np.float32) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/serving/model_int8.tflite"))
    ap.add_argument("--digits", type=int, default=3000, help="low-resolution MNIST test digits")
    ap.add_argument("--seed", type=int, default=0, help="handwriting.py's: the same pictures")
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()

    model, calibration = load_predictor(args.bundle), bundle_calibration(args.bundle)
    test_x, test_y = load_split(paths.prepared("test"))
    lowres = lowres_sets(test_x, test_y, np.random.default_rng(args.seed), args.digits, per_font=250)
    fashion_x = read_idx(paths.FASHION / "t10k-images-idx3-ubyte")
    fashion_y = read_idx(paths.FASHION / "t10k-labels-idx1-ubyte")
    sets = {
        "val digits": served(load_split(paths.prepared("val"))[0]),
        "val non-digits": served(load_split(paths.negatives("val"))[0]),
        "MNIST test": served(test_x),
        "Fashion-MNIST": served(fashion_x),
        "low-res MNIST": np.stack([mnistify(p) for p in lowres["mnist-lowres"][0]]),
        "low-res fonts": np.stack([mnistify(p) for p in lowres["fonts-lowres"][0]]),
    }
    probs = {name: calibration.apply(model(x)) for name, x in sets.items()}

    thresholds = (calibration.digit_threshold, *THRESHOLDS)
    sweep = [
        {"threshold": round(t, 6)}
        | {name: round(float((p.sum(axis=1) < t).mean()), 4) for name, p in probs.items()}
        for t in thresholds
    ]
    print("rejected below a threshold on the probability of any digit (the bundle's own first)")
    print("threshold " + " ".join(f"{name:>14s}" for name in probs))
    for row in sweep:
        print(f"{row['threshold']:9.3f} " + " ".join(f"{row[name]:14.2%}" for name in probs))

    accepted = calibration.decide(probs["Fashion-MNIST"])[0]
    answer = probs["Fashion-MNIST"].argmax(axis=1)
    clothes = {}
    print("\nFashion-MNIST accepted as a digit, per class (as which digits, most often first)")
    for c, name in enumerate(FASHION_CLASSES):
        mine = (fashion_y == c) & accepted
        counts = np.bincount(answer[mine], minlength=10)[:10]
        taken = {str(d): int(counts[d]) for d in np.argsort(-counts, kind="stable")[:3] if counts[d]}
        clothes[name] = {"accepted": round(float(mine.sum() / (fashion_y == c).sum()), 4), "as": taken}
        print(f"{name:10s} {clothes[name]['accepted']:6.1%}  {taken}")
    print(f"all        {accepted.mean():6.2%}")
    if args.out:
        setup = {"bundle": str(args.bundle), "digits": args.digits, "seed": args.seed}
        result = {"setup": setup, "sweep": sweep, "fashion_accepted": round(float(accepted.mean()), 4)}
        args.out.write_text(json.dumps(result | {"clothes": clothes}, indent=2) + "\n")


if __name__ == "__main__":
    main()
