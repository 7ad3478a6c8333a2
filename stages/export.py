"""Export the trained model for serving: a TFLite file that LiteRT runs without TensorFlow.

Reads models/model.keras; writes models/model.tflite, after checking that its probabilities match Keras
(within 1e-4 on synthetic probe pictures). Serve it with `python -m digits.serve --model models/model.tflite`.
"""

from pathlib import Path

from digits.cli import log, run_stage
from digits.params import Params

MODEL = Path("models/model.keras")
OUT = Path("models/model.tflite")


def main(params: Params) -> None:
    from digits.export import export_tflite

    result = export_tflite(MODEL, OUT)
    log(
        f"export: {OUT} ({result.size / 1e3:.0f} KB), largest probability difference from Keras "
        f"{result.max_difference:.1e}"
    )


if __name__ == "__main__":
    run_stage("export", main)
