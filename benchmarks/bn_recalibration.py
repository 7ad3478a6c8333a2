"""What batch-norm recalibration costs per epoch: digits.train's pass against the earlier one, which ran
every layer before each batch norm again from the input (kept below for the comparison).

    python benchmarks/bn_recalibration.py [--model models/model.keras] [--rounds 3]

Both run on the train stage's recalibration pictures (`train.bn_digits` clean digits and their share of
non-digits, from data/; `dvc repro negatives` first) and the trained model, in alternating rounds; prints
the median seconds of each and whether they set the same statistics, bit for bit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from digits import paths
from digits.params import load_params
from digits.shapes import to_model_input
from digits.train import load_training_data, recalibrate_batch_norm


def recalibrate_recomputing(model: keras.Model, images: np.ndarray, chunk: int = 1000) -> None:
    """The earlier pass: for each batch norm, every layer before it run again on every chunk."""
    layers_ = model.layers
    for k, layer in enumerate(layers_):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(images), chunk):
            h = keras.ops.convert_to_tensor(to_model_input(images[start : start + chunk]))
            for before in layers_[:k]:
                h = before(h, training=False)
            h = keras.ops.convert_to_numpy(h).astype(np.float64)
            flat = h.reshape(-1, h.shape[-1])
            total, total_sq, count = total + flat.sum(0), total_sq + (flat**2).sum(0), count + len(flat)
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / count - mean**2, 0).astype(np.float32))


def statistics_of(model: keras.Model) -> list[np.ndarray]:
    return [
        np.asarray(w)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in (layer.moving_mean, layer.moving_variance)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=paths.MODEL)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bn_digits = load_params().train.bn_digits
    data = load_training_data(
        paths.prepared("train"), paths.AUGMENTED, paths.negatives("train"), paths.prepared("val"), bn_digits
    )
    model = keras.models.load_model(args.model, compile=False)
    print(f"{len(data.bn_images)} pictures, {len(statistics_of(model)) // 2} batch norms")
    passes = {"recomputing (before)": recalibrate_recomputing, "carried (now)": recalibrate_batch_norm}
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    results = {}
    for _ in range(args.rounds):
        for name, recalibrate in passes.items():
            start = time.perf_counter()
            recalibrate(model, data.bn_images)
            seconds[name].append(time.perf_counter() - start)
            results[name] = statistics_of(model)
    for name, times in seconds.items():
        print(f"{name}: median {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})")
    before, now = results.values()
    same = all(np.array_equal(a, b) for a, b in zip(before, now, strict=True))
    print(f"same statistics, bit for bit: {same}")


if __name__ == "__main__":
    main()
