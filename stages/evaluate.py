"""Evaluate the trained model on the untouched test split.

Reads models/model.keras and data/prepared/test.npz; writes metrics/evaluate.json,
plots/confusion.csv, plots/per_class.csv (precision, recall, F1 per digit) and the pictures
plots/confusion.png, plots/misclassified.png.
"""

from digits.cli import log, run_stage
from digits.files import write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits.models import load_model, predict_probs
    from digits.preprocess import load_split
    from digits.report import write_report

    images, labels = load_split("data/prepared/test.npz")
    model = load_model("models/model.keras")
    probs = predict_probs(model, images)
    summary = write_report("plots", images, labels, probs, params.evaluate.gallery)
    write_json("metrics/evaluate.json", summary)
    log(f"evaluate: test accuracy {summary['accuracy']:.4%}, {summary['errors']} errors of {summary['n']}")


if __name__ == "__main__":
    run_stage("evaluate", main)
