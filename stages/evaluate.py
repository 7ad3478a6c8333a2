"""Evaluate the trained model on the untouched test split.

Reads models/model.keras and data/prepared/test.npz; writes metrics/evaluate.json, metrics/per_class.json,
plots/confusion.csv, plots/per_class.csv and the pictures plots/confusion.png, plots/misclassified.png.
"""

from digits.cli import log, run_stage, write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits.models import load_model
    from digits.preprocess import load_split, to_model_input
    from digits.report import write_report

    images, labels = load_split("data/prepared/test.npz")
    model = load_model("models/model.keras")
    probs = model.predict(to_model_input(images), batch_size=1000, verbose=0)
    summary, per_class = write_report("plots", images, labels, probs, params.evaluate.gallery)
    write_json("metrics/evaluate.json", summary)
    write_json("metrics/per_class.json", per_class)
    log(f"evaluate: test accuracy {summary['accuracy']:.4%}, {summary['errors']} errors of {summary['n']}")


if __name__ == "__main__":
    run_stage("evaluate", main)
