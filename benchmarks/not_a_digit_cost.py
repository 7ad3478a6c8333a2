"""What the "not a digit" class costs in training time: the train stage's fit with and without the
generated non-digits, side by side, runs interleaved (A B A B ...) so that a machine whose speed drifts
charges both alike.

    python benchmarks/not_a_digit_cost.py --repeat 2 --out benchmarks/results/not_a_digit_cost.json

"10 classes" is `-S negatives.train=0` (no non-digits, no batch norm recalibration); "11 classes" is the
default: each epoch's share of data/negatives/train.npz and, at every epoch's end, batch norm statistics
measured afresh (train.bn_digits). Same params.yaml otherwise, same seed, same code as stages/train.py.
Prints train seconds and best validation accuracy per run and the median ratio. Needs the pipeline's data
up to the negatives stage (`dvc repro negatives`). Run nothing else on the machine while it times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digits import paths
from digits.params import load_params
from digits.splits import load_split
from digits.train import TrainingData, build_and_train, load_training_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="also write the runs here as JSON")
    args = ap.parse_args()

    params = load_params("params.yaml")
    mixed = load_training_data(
        paths.prepared("train"),
        paths.AUGMENTED,
        paths.negatives("train"),
        paths.prepared("val"),
        params.train.bn_digits,
    )
    digits, digit_y = load_split(paths.AUGMENTED)
    setups = {
        "10 classes": TrainingData(digits, digit_y, mixed.val_images, mixed.val_labels),
        "11 classes": mixed,
    }
    runs = []
    for r in range(args.repeat):
        for name, data in setups.items():
            result = build_and_train(params.model, params.train, data)
            summary = result.summary()
            runs.append({"setup": name, "run": r + 1, **summary})
            print(
                f"{name}, run {r + 1}: {summary['train_seconds']} s, best val accuracy "
                f"{summary['best_val_accuracy']}",
                file=sys.stderr,
                flush=True,
            )
    median = {
        name: statistics.median(x["train_seconds"] for x in runs if x["setup"] == name) for name in setups
    }
    print("| setup | train seconds (median) | runs | best val accuracy |")
    print("|---|---|---|---|")
    for name in setups:
        mine = [x for x in runs if x["setup"] == name]
        seconds = ", ".join(f"{x['train_seconds']:.0f}" for x in mine)
        accuracy = ", ".join(f"{x['best_val_accuracy']:.2%}" for x in mine)
        print(f"| {name} | {median[name]:.0f} | {seconds} | {accuracy} |")
    print(f"\n11 classes / 10 classes: {median['11 classes'] / median['10 classes']:.2f}x the training time")
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "median_seconds": median}, indent=2) + "\n")


if __name__ == "__main__":
    main()
