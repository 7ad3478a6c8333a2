"""Evaluate the ensemble: the main model plus one member per seed in `ensemble.seeds`, softmax averaged.

Reads models/model.keras, models/members/seed-<s>.keras and data/prepared/{val,test}.npz; writes
metrics/ensemble.json (the number of models and, with members, the ensemble's test accuracy) and
plots/ensemble/ (evaluate's plots for the ensemble, and members.csv: every model's and the ensemble's
accuracy). With no seeds the ensemble is the main model alone: its plots equal evaluate's. With
`evaluate.tta`, every model and the ensemble are also scored with test-time augmentation (tta_* column).
"""

from functools import partial

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_csv, write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits.evaluate import accuracy, average_softmax, member_spread, tta_metrics, tta_probs
    from digits.models import load_model, predict_probs
    from digits.report import write_report
    from digits.splits import load_split

    images, labels = load_split(paths.prepared("test"))
    val_images, val_labels = load_split(paths.prepared("val"))
    models = {f"main (seed {params.train.seed})": paths.MODEL}
    models |= {f"seed {s}": paths.member(s) for s in params.ensemble.seeds}
    tta = params.evaluate.tta
    rows, test_probs, val_probs, tta_test_probs = [], [], [], []
    for name, path in models.items():
        model = load_model(path)
        test_probs.append(predict_probs(model, images))
        val_probs.append(predict_probs(model, val_images))
        rows.append(
            {
                "model": name,
                "val_accuracy": accuracy(val_labels, val_probs[-1]),
                "test_accuracy": accuracy(labels, test_probs[-1]),
            }
        )
        if tta:
            tta_test_probs.append(tta_probs(partial(predict_probs, model), images, params.evaluate))
            rows[-1]["tta_test_accuracy"] = accuracy(labels, tta_test_probs[-1])
        log(f"ensemble: {name}: test accuracy {rows[-1]['test_accuracy']:.4%}")
    probs = average_softmax(test_probs)
    summary = write_report(paths.ENSEMBLE_PLOTS, images, labels, probs, params.evaluate.gallery)
    val_accuracy = accuracy(val_labels, average_softmax(val_probs))
    rows.append(
        {
            "model": f"ensemble of {len(models)}",
            "val_accuracy": val_accuracy,
            "test_accuracy": summary["accuracy"],
        }
    )
    if tta:
        summary |= tta_metrics(labels, average_softmax(tta_test_probs))
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
