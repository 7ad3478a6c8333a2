"""Export the trained model for serving: the bundle of TFLite files that LiteRT runs without TensorFlow.

Reads models/model.keras, models/calibration.json (the temperature and threshold, put in model.json for
the server), data/prepared/train.npz (the int8 file's calibration digits) and test.npz (its parity check,
accept/reject decisions included); writes models/serving/: model.tflite (float32, its probabilities
within 1e-4 of Keras on synthetic probe pictures), model_int8.tflite (int8, within the export.* limits
of the float32 file on every test digit) and model.json (sha256, probe outputs, parity figures, the
calibration). Fails, writing nothing, if either check fails. Serve it with `python -m digits.serve`.
"""

import json
from pathlib import Path

import numpy as np

from digits.cli import log, run_stage
from digits.params import Params

MODEL = Path("models/model.keras")
CALIBRATION = Path("models/calibration.json")  # the calibrate stage's temperature and threshold
OUT = Path("models/serving")


def main(params: Params) -> None:
    from digits.confidence import Calibration
    from digits.export import Int8Inputs, export_bundle
    from digits.preprocess import load_split

    calibration = Calibration.from_dict(json.loads(CALIBRATION.read_text()))
    train, _ = load_split("data/prepared/train.npz")
    test, labels = load_split("data/prepared/test.npz")

    def accept(probs: np.ndarray) -> np.ndarray:
        return calibration.decide(calibration.apply(probs))[0]

    inputs = Int8Inputs(train, test, labels, params.export, accept)
    result = export_bundle(MODEL, OUT, inputs, calibration)
    f, p = result.float32, result.parity
    log(
        f"export: {f.path} ({f.size / 1e3:.0f} KB), largest probability difference from Keras "
        f"{f.max_difference:.1e}; {result.int8} ({result.int8_size / 1e3:.0f} KB), {p.changed} of {p.digits} "
        f"test predictions changed, accuracy {p.accuracy_int8:.2%} (float32 {p.accuracy_float32:.2%})"
    )


if __name__ == "__main__":
    run_stage("export", main)
