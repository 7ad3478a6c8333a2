"""Why int8 parity holds or breaks: the int8 file against the float32 one for several representative sets.

    python benchmarks/int8_parity.py --out benchmarks/results/int8_parity.json [models/model.keras ...]

For each model (default: models/model.keras, with models/calibration.json) and each representative set it
converts an int8 file and compares it with the float32 file on the validation digits + validation non-digits
(what the export stage decides on) and on the test digits (reported only): predictions changed, accuracy
change, accept/reject decisions changed, and how many pictures sit within the largest score change of a
threshold (the neighbourhood where a decision can flip at all). Needs the pipeline's data and model
(`dvc repro calibrate`). Timing is not measured: run it alongside other work if need be.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digits.confidence import Calibration
from digits.export import convert, convert_int8, predict_all, representative_pictures
from digits.mnistify import as_served
from digits.models import load_model
from digits.params import ExportParams
from digits.runtime import LiteRTPredictor
from digits.shapes import to_model_input
from digits.splits import load_split

# name -> (training digits, training non-digits) in the representative set
SETS = {
    "1000 digits (before)": (1000, 0),
    "1000 digits + 100 non-digits": (1000, 100),
    "3000 digits": (3000, 0),
    "3000 digits + 300 non-digits": (3000, 300),
}


def figures(f32: np.ndarray, i8: np.ndarray, labels: np.ndarray, calibration: Calibration, n_digits: int):
    """Parity figures; rows past n_digits are non-digits (labels ignored)."""
    c32, c8 = calibration.apply(f32), calibration.apply(i8)
    accept32, accept8 = calibration.decide(c32)[0], calibration.decide(c8)[0]
    d = slice(0, n_digits)
    # A decision can flip only where a score lies within the largest change of its threshold.
    sum32, sum8 = c32.sum(1), c8.sum(1)
    top32, top8 = c32.max(1), c8.max(1)
    near = (np.abs(sum32 - calibration.digit_threshold) <= np.abs(sum8 - sum32).max()) | (
        np.abs(top32 - calibration.threshold) <= np.abs(top8 - top32).max()
    )
    return {
        "digits": n_digits,
        "pictures": len(f32),
        "changed": int((f32[d].argmax(1) != i8[d].argmax(1)).sum()),
        "accuracy_change": float((i8[d].argmax(1) == labels).mean() - (f32[d].argmax(1) == labels).mean()),
        "decisions_changed": int((accept32 != accept8).sum()),
        "max_score_change": float(max(np.abs(sum8 - sum32).max(), np.abs(top8 - top32).max())),
        "near_a_threshold": int(near.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, default=[Path("models/model.keras")])
    ap.add_argument(
        "--calibration", nargs="*", type=Path, help="one per model (default: models/calibration.json)"
    )
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    calibrations = args.calibration or [Path("models/calibration.json")] * len(args.models)

    train, _ = load_split("data/prepared/train.npz")
    train_neg, _ = load_split("data/negatives/train.npz")
    val, val_y = load_split("data/prepared/val.npz")
    val_neg, _ = load_split("data/negatives/val.npz")
    test, test_y = load_split("data/prepared/test.npz")
    decide_on = to_model_input(np.concatenate([as_served(val)[0], val_neg]))
    report_on = to_model_input(as_served(test)[0])

    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="int8-parity-"))
    for model_path, cal_path in zip(args.models, calibrations, strict=True):
        model = load_model(model_path)
        calibration = Calibration.from_dict(json.loads(cal_path.read_text()))
        float32 = scratch / f"{model_path.stem}.tflite"
        float32.write_bytes(convert(model))
        f32 = LiteRTPredictor(float32)
        f32_val, f32_test = predict_all(f32, decide_on), predict_all(f32, report_on)
        for name, (n_digits, n_neg) in SETS.items():
            drawn = ExportParams(representative=n_digits, representative_non_digits=n_neg)
            rep = to_model_input(representative_pictures(train, train_neg, drawn))
            int8 = float32.with_suffix(".int8.tflite")
            int8.write_bytes(convert_int8(model, rep))
            i8 = LiteRTPredictor(int8)
            row = {
                "model": str(model_path),
                "representative": name,
                "val": figures(f32_val, predict_all(i8, decide_on), val_y, calibration, len(val)),
                "test": figures(f32_test, predict_all(i8, report_on), test_y, calibration, len(test)),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        "| model | representative set | val changed | val decisions changed | test changed | "
        "test decisions changed | test accuracy change | test near a threshold |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        v, t = r["val"], r["test"]
        print(
            f"| {r['model']} | {r['representative']} | {v['changed']} | {v['decisions_changed']} of "
            f"{v['pictures']} | {t['changed']} | {t['decisions_changed']} | "
            f"{t['accuracy_change'] * 100:+.2f} points | {t['near_a_threshold']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
