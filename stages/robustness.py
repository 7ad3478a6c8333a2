"""Accuracy of the trained model on seeded, MNIST-C-style corruptions of the test split.

Reads models/model.keras and data/prepared/test.npz; writes metrics/robustness.json (clean and per-corruption
accuracy, their mean and the mean relative drop), plots/robustness.csv (a bar per corruption) and
plots/robustness_examples.png (the same test digits under every corruption, with the model's predictions).
"""

import numpy as np

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_csv, write_json
from digits.params import Params

EXAMPLES = 10  # digits per row of the examples picture, one of each class


def main(params: Params) -> None:
    from digits import plots, robustness
    from digits.augment import preview_indices
    from digits.models import load_model, predict_probs
    from digits.splits import load_split

    p = params.robustness
    images, labels = load_split(paths.prepared("test"))
    keep = robustness.subset(len(labels), p.samples, p.seed)
    images, labels = images[keep], labels[keep]
    model = load_model(paths.MODEL)
    log(f"robustness: {len(robustness.CORRUPTIONS)} corruptions of {len(labels)} test digits (seed {p.seed})")

    sets = {"clean": images, **robustness.corrupt_all(images, p.seed)}
    predicted, accuracy = {}, {}
    for name, x in sets.items():
        predicted[name] = predict_probs(model, x).argmax(axis=1)
        accuracy[name] = float(np.mean(predicted[name] == labels))
        log(f"robustness: {name:<15} {accuracy[name]:.2%}")

    clean = accuracy.pop("clean")
    metrics = robustness.robustness_metrics(accuracy, clean)
    # The headline numbers; every corruption's accuracy is in plots/robustness.csv.
    noise = metrics["corruptions"]["gaussian_noise"]
    write_json(
        paths.metrics("robustness"),
        {"mean_corrupted": metrics["mean_corrupted"], "corruptions": {"gaussian_noise": noise}},
    )
    bars = {"clean": metrics["clean"], **metrics["corruptions"]}
    write_csv(paths.ROBUSTNESS_REPORT, [{"corruption": k, "accuracy": v} for k, v in bars.items()])
    shown = preview_indices(labels, EXAMPLES)
    plots.save_robustness_examples(
        paths.ROBUSTNESS_EXAMPLES,
        {name: x[shown] for name, x in sets.items()},
        labels[shown],
        {name: pred[shown] for name, pred in predicted.items()},
    )
    log(f"robustness: clean {clean:.2%}, mean over corruptions {metrics['mean_corrupted']:.2%}")


if __name__ == "__main__":
    run_stage("robustness", main)
