"""Evaluate the trained model on the untouched test split.

Reads models/model.keras and data/prepared/test.npz; writes metrics/evaluate.json, metrics/per_class.json,
plots/confusion.csv, plots/per_class.csv and the pictures plots/confusion.png, plots/misclassified.png.
"""

from pathlib import Path

from digits.cli import log, run_stage, write_csv, write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits import evaluate, plots
    from digits.models import load_model
    from digits.preprocess import load_split, to_model_input

    images, labels = load_split("data/prepared/test.npz")
    model = load_model("models/model.keras")
    probs = model.predict(to_model_input(images), batch_size=1000, verbose=0)

    summary = evaluate.summary_metrics(labels, probs)
    per_class = evaluate.per_class_metrics(labels, probs)
    write_json("metrics/evaluate.json", summary)
    write_json("metrics/per_class.json", per_class)
    write_csv("plots/confusion.csv", evaluate.confusion_rows(labels, probs))
    write_csv("plots/per_class.csv", [{"digit": int(d), **m} for d, m in per_class.items()])
    plots.save_confusion(Path("plots/confusion.png"), evaluate.confusion(labels, probs))
    wrong = evaluate.misclassified(labels, probs, params.evaluate.gallery)
    plots.save_gallery(Path("plots/misclassified.png"), images[wrong], labels[wrong], probs[wrong])
    log(f"evaluate: test accuracy {summary['accuracy']:.4%}, {summary['errors']} errors of {summary['n']}")


if __name__ == "__main__":
    run_stage("evaluate", main)
