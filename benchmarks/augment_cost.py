"""Seconds per training epoch: materialised augmented copies (the pipeline) vs augmenting on the fly.

    python benchmarks/augment_cost.py [--preset deep] [--batches 60] [--json PATH]

Times `--batches` training steps of the same model three ways and scales to a 54,000-digit epoch:
  materialised  the augment stage's copies, fed by digits.feeds.EpochCopies (augmentation cost: zero here)
  keras-layers  Keras RandomRotation/RandomZoom/RandomTranslation layers in front of the model
  numpy-batch   digits.augment.augment applied to every batch inside the data feeder
Needs data/prepared/train.npz (run `dvc repro preprocess` first).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from digits.augment import augment
from digits.feeds import EpochCopies
from digits.models import build_model
from digits.params import AugmentParams, ModelParams
from digits.shapes import one_hot, to_model_input
from digits.splits import load_split

EPOCH = 54_000


class OnTheFly(keras.utils.PyDataset):
    def __init__(
        self, images: np.ndarray, labels: np.ndarray, batch_size: int, params: AugmentParams
    ) -> None:
        super().__init__()
        self.images, self.targets, self.batch_size, self.params = images, one_hot(labels), batch_size, params
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return to_model_input(augment(self.images[s], self.params, self.rng)), self.targets[s]


def keras_augmenting(model: keras.Model, params: AugmentParams) -> keras.Model:
    layers = keras.layers
    front = [
        layers.RandomRotation(params.rotation / 360, fill_mode="constant"),
        layers.RandomZoom(params.zoom, fill_mode="constant"),
        layers.RandomTranslation(params.shift, params.shift, fill_mode="constant"),
    ]
    wrapped = keras.Sequential([keras.Input((28, 28, 1)), *front, *model.layers])
    wrapped.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return wrapped


def seconds_per_epoch(
    model: keras.Model, data: keras.utils.PyDataset, batches: int, batch_size: int
) -> float:
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=batches, verbose=0)
    return (time.perf_counter() - start) / (batches * batch_size) * EPOCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="deep", choices=["seed", "deep", "best"])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every round's numbers here")
    args = parser.parse_args()

    images, labels = load_split("data/prepared/train.npz")
    n = args.batches * args.batch_size + 5 * args.batch_size
    images, labels = images[:n], labels[:n]
    aug = AugmentParams()
    keras.utils.set_random_seed(0)
    setups = {}
    for name in ["materialised", "keras-layers", "numpy-batch"]:
        model = build_model(ModelParams(preset=args.preset))
        if name == "materialised":
            data = EpochCopies(images[None], labels, args.batch_size, seed=0)
        elif name == "keras-layers":
            model = keras_augmenting(model, aug)
            data = EpochCopies(images[None], labels, args.batch_size, seed=0)
        else:
            data = OnTheFly(images, labels, args.batch_size, aug)
        model.fit(data, epochs=1, steps_per_epoch=5, verbose=0)  # trace and warm up
        setups[name] = (model, data)
    # Alternating rounds, so a busy neighbour slows every variant alike rather than one of them.
    times: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(args.repeats):
        for name, (model, data) in setups.items():
            times[name].append(seconds_per_epoch(model, data, args.batches, args.batch_size))
            print(f"round {r + 1} {name:>13}: {times[name][-1]:6.1f} s/epoch", file=sys.stderr, flush=True)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    print(
        f"preset {args.preset}, s per 54,000-digit epoch (median of {args.repeats}): "
        + ", ".join(f"{k} {v:.1f}" for k, v in medians.items())
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "json"}
        report = {"config": config, "seconds_per_epoch": times, "median_seconds_per_epoch": medians}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
