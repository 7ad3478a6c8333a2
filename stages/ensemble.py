"""Evaluate the ensemble: the main model plus one member per seed in `ensemble.seeds`, softmax averaged.

Reads data/predictions.npz (the main model's probabilities, from evaluate), models/members/seed-<s>.keras
and data/prepared/{val,test}.npz; writes metrics/ensemble.json (the number of models and, with members, the
ensemble's test accuracy) and plots/ensemble/ (evaluate's plots for the ensemble, and members.csv: every
model's and the ensemble's accuracy). With no seeds the ensemble is the main model alone: its plots equal
evaluate's, and no model is loaded (nor TensorFlow). With `evaluate.tta`, every model and the ensemble are
also scored with test-time augmentation (tta_* column).
"""

from functools import partial
from pathlib import Path

import numpy as np

from digits import DigitsError, paths
from digits.cli import log, run_stage
from digits.files import write_csv, write_json
from digits.params import EvaluateParams, Params


def member_probs(path: Path, images: np.ndarray, val_images: np.ndarray, tta: EvaluateParams | None) -> dict:
    """A member's probabilities, as evaluate writes the main model's: val, test and, with TTA, tta_test."""
    from digits.evaluate import tta_probs
    from digits.models import load_model, predict_probs

    model = load_model(path)
    probs = {"val": predict_probs(model, val_images), "test": predict_probs(model, images)}
    if tta:
        probs["tta_test"] = tta_probs(partial(predict_probs, model), images, tta)
    return probs


def main(params: Params) -> None:
    from digits.evaluate import accuracy, average_softmax, member_spread, tta_metrics
    from digits.report import write_report
    from digits.splits import load_split

    images, labels = load_split(paths.prepared("test"))
    val_images, val_labels = load_split(paths.prepared("val"))
    tta = params.evaluate if params.evaluate.tta else None
    with np.load(paths.PREDICTIONS) as f:
        main_probs = dict(f)
    if tta and "tta_test" not in main_probs:
        raise DigitsError(f"{paths.PREDICTIONS} holds no test-time augmentation: rerun evaluate")
    models = {f"main (seed {params.train.seed})": main_probs}
    for s in params.ensemble.seeds:
        models[f"seed {s}"] = member_probs(paths.member(s), images, val_images, tta)
    rows = []
    for name, probs in models.items():
        rows.append(
            {
                "model": name,
                "val_accuracy": accuracy(val_labels, probs["val"]),
                "test_accuracy": accuracy(labels, probs["test"]),
            }
        )
        if tta:
            rows[-1]["tta_test_accuracy"] = accuracy(labels, probs["tta_test"])
        log(f"ensemble: {name}: test accuracy {rows[-1]['test_accuracy']:.4%}")

    def averaged(key: str) -> np.ndarray:
        return average_softmax([p[key] for p in models.values()])

    summary = write_report(paths.ENSEMBLE_PLOTS, images, labels, averaged("test"), params.evaluate.gallery)
    rows.append(
        {
            "model": f"ensemble of {len(models)}",
            "val_accuracy": accuracy(val_labels, averaged("val")),
            "test_accuracy": summary["accuracy"],
        }
    )
    if tta:
        summary |= tta_metrics(labels, averaged("tta_test"))
        rows[-1]["tta_test_accuracy"] = summary["tta_accuracy"]
        log(f"ensemble: with test-time augmentation {summary['tta_accuracy']:.4%}")
    write_csv(paths.ENSEMBLE_MEMBERS, rows)
    spread = member_spread([r["test_accuracy"] for r in rows[:-1]])
    # Without members the ensemble is the main model: its accuracy would repeat evaluate's. The rest of the
    # figures are in plots/ensemble/members.csv.
    metrics = {"members": len(models)}
    if len(models) > 1:
        metrics["ensemble_accuracy"] = summary["accuracy"]
    write_json(paths.metrics("ensemble"), metrics)
    log(
        f"ensemble: {len(models)} models, test accuracy {summary['accuracy']:.4%} "
        f"(single models {spread['member_accuracy_mean']:.4%} ± {spread['member_accuracy_std']:.4%})"
    )


if __name__ == "__main__":
    run_stage("ensemble", main)
