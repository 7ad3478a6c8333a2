"""Export the trained model for serving: the bundle of TFLite files that LiteRT runs without TensorFlow.

Reads models/model.keras, models/calibration.json (the temperature and threshold, put in model.json for
the server), the training digits and non-digits (the int8 file's calibration pictures), the validation ones
(its parity check, accept/reject decisions included) and the test ones (its parity, reported); writes
models/serving/: model.tflite (float32, its probabilities within 1e-4 of Keras on synthetic probe
pictures; always), model_int8.tflite (int8, only when its parity with the float32 file holds within the
export.* limits) and model.json (sha256, probe outputs, parity figures, why int8 is missing if it is, the
calibration), and metrics/export.json. Serve it with `python -m digits.serve`.
"""

import json

import numpy as np

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_json
from digits.params import Params


def main(params: Params) -> None:
    from digits.confidence import Calibration
    from digits.export import Int8Inputs, ParitySet, export_bundle, representative_pictures
    from digits.mnistify import as_served
    from digits.splits import load_split

    calibration = Calibration.from_dict(json.loads(paths.CALIBRATION.read_text()))

    def pictures(split: str) -> ParitySet:  # digits as the server prepares them, then the non-digits
        digits, labels = load_split(paths.prepared(split))
        return ParitySet(as_served(digits)[0], labels, load_split(paths.negatives(split))[0])

    def accept(probs: np.ndarray) -> np.ndarray:
        return calibration.decide(calibration.apply(probs))[0]

    representative = representative_pictures(
        load_split(paths.prepared("train"))[0], load_split(paths.negatives("train"))[0], params.export
    )
    inputs = Int8Inputs(representative, pictures("val"), pictures("test"), params.export, accept)
    result = export_bundle(paths.MODEL, paths.SERVING, inputs, calibration)
    f, p, t = result.float32, result.parity, result.test_parity
    write_json(
        paths.metrics("export"),
        # Whether the bundle serves int8, and how many test predictions it changes; model.json has the rest.
        {"int8": int(result.int8 is not None), "int8_changed": t.changed},
    )
    log(
        f"export: {f.path} ({f.size / 1e3:.0f} KB), largest probability difference from Keras "
        f"{f.max_difference:.1e}; int8 on the validation pictures: {p.changed} of {p.digits} predictions and "
        f"{p.decisions_changed} of {p.pictures} decisions changed; on the test pictures: {t.changed} of "
        f"{t.digits} and {t.decisions_changed} of {t.pictures}, accuracy {t.accuracy_int8:.2%} "
        f"(float32 {t.accuracy_float32:.2%})"
    )
    if result.int8 is None:
        log(f"export: int8 left out, the bundle serves float32: {result.int8_refused}")
    else:
        log(f"export: {result.int8} ({result.int8_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    run_stage("export", main)
