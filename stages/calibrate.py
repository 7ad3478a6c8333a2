"""Calibrate the model's confidence and choose its rejection thresholds, on validation data only.

Reads models/model.keras, data/prepared/{val,test}.npz and data/negatives/val.npz; every picture is seen
as the server prepares it (digits.mnistify). Writes models/calibration.json (temperature, the two
thresholds, unsure_mass: what the export stage puts in the serving bundle), metrics/calibrate.json (ECE on
the test digits, calibrated; test being for the report only), plots/calibration.csv (the report:
ECE / NLL / Brier before and after, the validation pictures rejected, AUROC) and the reliability diagram:
plots/reliability/{before,after}.csv and plots/reliability.png.
"""

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_csv, write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits import confidence
    from digits.models import load_model, predict_probs
    from digits.plots import save_reliability
    from digits.served import served_probs
    from digits.splits import load_split

    p = params.calibrate
    model = load_model(paths.MODEL)
    val_x, val_y = load_split(paths.prepared("val"))
    val_probs = served_probs(model, val_x)
    calibration = confidence.fit_calibration(val_probs, val_y, p.false_rejection, p.unsure, p.unsure_mass)
    val = calibration.apply(val_probs)
    write_json(paths.CALIBRATION, calibration.as_dict())

    negatives, _ = load_split(paths.negatives("val"))
    neg = calibration.apply(predict_probs(model, negatives))
    test_x, test_y = load_split(paths.prepared("test"))
    test_probs = served_probs(model, test_x)
    before, after = test_probs, calibration.apply(test_probs)
    metrics = {
        "val_false_rejection": round(float(1 - calibration.decide(val)[0].mean()), 5),
        "val_negatives_rejected": round(float(1 - calibration.decide(neg)[0].mean()), 5),
        "val_auroc": round(confidence.auroc(calibration.score(val), calibration.score(neg)), 5),
        "test_before": confidence.calibration_metrics(before, test_y, p.bins),
        "test_after": confidence.calibration_metrics(after, test_y, p.bins),
    }
    write_json(
        paths.metrics("calibrate"),
        {"ece": metrics["test_after"]["ece"]},
    )
    write_csv(
        paths.CALIBRATION_REPORT,
        [
            {"set": "test, uncalibrated", **metrics["test_before"], "rejected": None, "auroc": None},
            {"set": "test, calibrated", **metrics["test_after"], "rejected": None, "auroc": None},
            {"set": "val digits", "rejected": metrics["val_false_rejection"]},
            {
                "set": "val non-digits",
                "rejected": metrics["val_negatives_rejected"],
                "auroc": metrics["val_auroc"],
            },
        ],
    )
    curves = {
        "before": confidence.reliability(before, test_y, p.bins),
        "after": confidence.reliability(after, test_y, p.bins),
    }
    for name, rows in curves.items():
        write_csv(paths.RELIABILITY / f"{name}.csv", rows)
    save_reliability(paths.RELIABILITY_PICTURE, curves, p.bins)
    log(
        f"calibrate: temperature {calibration.temperature:.3f}, thresholds {calibration.digit_threshold:.4f} "
        f"on the probability of any digit, {calibration.threshold:.4f} on the top one (val digits rejected "
        f"{metrics['val_false_rejection']:.2%}, val non-digits {metrics['val_negatives_rejected']:.2%}); "
        f"test ECE {metrics['test_before']['ece']:.4f} -> {metrics['test_after']['ece']:.4f}"
    )


if __name__ == "__main__":
    run_stage("calibrate", main)
