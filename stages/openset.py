"""How well the served model knows when a picture is not a digit, on sets never used to train or choose.

Every picture goes through the server's preprocessing (digits.drawing) and the calibration the export
stage ships (models/calibration.json), so these are the answers the app would give. Reads models/model.keras,
models/calibration.json, data/prepared/test.npz, data/fashion/ and data/negatives/test.npz. Writes
metrics/openset.json (the headline shares: MNIST test digits rejected, Fashion-MNIST and the held-out family
rejected, Fashion-MNIST's AUROC), plots/openset.csv (the report: per set, the share rejected and, for digits,
accuracy, for non-digits, AUROC and the share accepted at 95% of the digits) and plots/openset_scores.png.

Sets: the MNIST test digits (false rejections must stay rare), digits rendered from fonts (a style MNIST
lacks: must still be accepted), Fashion-MNIST's test set, every generated family on seeds of its own (the
held-out family never trained on), pure noise, and each robustness corruption of the test digits.
"""

import json
from pathlib import Path

import numpy as np

from digits.cli import log, run_stage
from digits.files import write_csv, write_json
from digits.params import Params

FONT_DIGITS = NOISE = 1000  # pictures generated for each of these sets (at most openset.samples)


def main(params: Params) -> None:
    from digits import confidence as c
    from digits import negatives, robustness
    from digits.drawing import as_served
    from digits.idx import read_idx
    from digits.models import load_model, predict_probs
    from digits.plots import save_score_histograms
    from digits.preprocess import load_split

    p = params.openset
    calibration = c.Calibration.from_dict(json.loads(Path("models/calibration.json").read_text()))
    model = load_model("models/model.keras")

    def judge(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated probabilities, accepted or not, and scores (calibration.score); a picture the server
        would refuse as blank is not accepted and scores 0."""
        served, ink = as_served(images)
        probs = calibration.apply(predict_probs(model, served))
        return probs, ink & calibration.decide(probs)[0], np.where(ink, calibration.score(probs), 0.0)

    def digits_report(probs: np.ndarray, accepted: np.ndarray, labels: np.ndarray) -> dict:
        correct = probs.argmax(axis=1) == labels
        return {
            "accuracy": round(float(correct.mean()), 5),
            "rejected": round(float((~accepted).mean()), 5),
            "accepted_and_correct": round(float((accepted & correct).mean()), 5),
            "n": len(labels),
        }

    test_x, test_y = load_split("data/prepared/test.npz")
    keep = robustness.subset(len(test_y), p.samples, p.seed)
    test_x, test_y = test_x[keep], test_y[keep]
    probs, digit_accepted, digit_scores = judge(test_x)
    report = {"mnist": digits_report(probs, digit_accepted, test_y)}
    font_rng = negatives.generator(p.seed, "font digits")
    font_x, font_y = negatives.font_digits(min(FONT_DIGITS, p.samples), font_rng)
    font_probs, font_accepted, font_scores = judge(font_x)
    report["font_digits"] = digits_report(font_probs, font_accepted, font_y)

    judged = {}  # name -> (accepted, scores)
    fashion = read_idx("data/fashion/t10k-images-idx3-ubyte")[: p.samples]
    judged["Fashion-MNIST"] = judge(fashion)[1:]
    neg_x, neg_family = load_split("data/negatives/test.npz")
    _, neg_accepted, neg_scores = judge(neg_x)
    for i, family in enumerate(negatives.FAMILIES):
        held = " (held out)" if family == params.negatives.heldout else ""
        judged[family + held] = neg_accepted[neg_family == i], neg_scores[neg_family == i]
    noise = negatives.pure_noise(min(NOISE, p.samples), negatives.generator(p.seed, "noise"))
    judged["pure noise"] = judge(noise)[1:]
    report["non_digits"] = {
        name: c.rejection_metrics(digit_scores, s, accepted) | {"n": len(s)}
        for name, (accepted, s) in judged.items()
    }

    report["corruptions"] = {}
    for name, x in robustness.corrupt_all(test_x, params.robustness.seed).items():
        corrupted, accepted, _ = judge(x)
        report["corruptions"][name] = digits_report(corrupted, accepted, test_y)

    fashion, heldout = report["non_digits"]["Fashion-MNIST"], f"{params.negatives.heldout} (held out)"
    write_json(
        "metrics/openset.json",
        {
            "mnist_rejected": report["mnist"]["rejected"],
            "fashion_rejected": fashion["rejected"],
            "fashion_auroc": fashion["auroc"],
            "heldout_rejected": report["non_digits"][heldout]["rejected"],
        },
    )
    sets = {"MNIST test": report["mnist"], "font digits": report["font_digits"], **report["non_digits"]}
    sets |= {f"MNIST {k}": m for k, m in report["corruptions"].items()}
    columns = ("rejected", "accuracy", "accepted_and_correct", "auroc", "fpr_at_95_tpr", "n")
    rows = [{"set": name, **{k: m.get(k) for k in columns}} for name, m in sets.items()]
    write_csv("plots/openset.csv", rows)
    scores = {"MNIST test": digit_scores, **{name: s for name, (_, s) in judged.items()}}
    if calibration.digit_threshold:
        line, what = calibration.digit_threshold, "calibrated probability of any digit"
    else:
        line, what = calibration.threshold, "calibrated top probability"
    save_score_histograms("plots/openset_scores.png", scores | {"font digits": font_scores}, line, what)
    for row in rows:
        log(f"openset: {row['set']:<22} rejected {row['rejected']:.2%}")


if __name__ == "__main__":
    run_stage("openset", main)
