"""Evaluate the trained model on the untouched test split.

Reads models/model.keras and data/prepared/{val,test}.npz; writes metrics/evaluate.json (accuracy, errors),
plots/confusion.csv, plots/per_class.csv (precision, recall, F1 per digit) and the pictures
plots/confusion.png, plots/misclassified.png. With `evaluate.tta` the metrics also hold tta_accuracy and
tta_errors (softmax averaged over shifted and rotated views); the plots stay the plain model's.
The model's probabilities go to data/predictions.npz (`val`, `test`, with TTA `tta_test`): the ensemble
stage averages them with its members' and, with no members, needs no model of its own to load.
"""

from functools import partial

from digits import paths
from digits.cli import log, run_stage
from digits.files import save_arrays, write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits.evaluate import tta_metrics, tta_probs
    from digits.models import load_model, predict_probs
    from digits.report import write_report
    from digits.splits import load_split

    images, labels = load_split(paths.prepared("test"))
    model = load_model(paths.MODEL)
    probs = predict_probs(model, images)
    summary = write_report(paths.PLOTS, images, labels, probs, params.evaluate.gallery)
    log(f"evaluate: test accuracy {summary['accuracy']:.4%}, {summary['errors']} errors of {summary['n']}")
    metrics = {"accuracy": summary["accuracy"], "errors": summary["errors"]}  # loss, F1: the log, per_class
    log(f"evaluate: test loss {summary['loss']:.4f}, macro F1 {summary['macro_f1']:.4%}")
    predictions = {"val": predict_probs(model, load_split(paths.prepared("val"))[0]), "test": probs}
    if params.evaluate.tta:
        predictions["tta_test"] = tta_probs(partial(predict_probs, model), images, params.evaluate)
        tta = tta_metrics(labels, predictions["tta_test"])
        metrics |= {"tta_accuracy": tta["tta_accuracy"], "tta_errors": tta["tta_errors"]}
        log(f"evaluate: test-time augmentation {tta['tta_accuracy']:.4%}, {tta['tta_errors']} errors")
    save_arrays(paths.PREDICTIONS, **predictions)
    write_json(paths.metrics("evaluate"), metrics)


if __name__ == "__main__":
    run_stage("evaluate", main)
