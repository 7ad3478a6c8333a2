"""Export the trained model for serving: the bundle of a TFLite file that LiteRT runs without TensorFlow.

Reads models/model.keras; writes models/serving/ (model.tflite and model.json, its sha256 and probe outputs)
after checking that its probabilities match Keras (within 1e-4 on synthetic probe pictures). Serve it with
`python -m digits.serve` (the default) or `--model models/serving`.
"""

from pathlib import Path

from digits.cli import log, run_stage
from digits.params import Params

MODEL = Path("models/model.keras")
OUT = Path("models/serving")


def main(params: Params) -> None:
    from digits.export import export_bundle

    result = export_bundle(MODEL, OUT)
    log(
        f"export: {result.path} ({result.size / 1e3:.0f} KB) and its metadata, largest probability "
        f"difference from Keras {result.max_difference:.1e}"
    )


if __name__ == "__main__":
    run_stage("export", main)
