"""Write submission.csv for Kaggle's Digit Recognizer from the trained model.

Reads models/model.keras and data/raw/kaggle-test-images-idx3-ubyte, which fetch writes when it used the
`kaggle` source and data/kaggle/test.csv exists. Without them (MNIST, Fashion-MNIST) the file holds only
its header, so the stage always has its output.
"""

from digits import paths
from digits.cli import log, run_stage
from digits.params import Params
from digits.sources.kaggle import KAGGLE_TEST_IMAGES
from digits.submission import write_submission

RAW = paths.RAW
KAGGLE_TEST = RAW / KAGGLE_TEST_IMAGES
OUT = paths.SUBMISSION


def main(params: Params) -> None:
    import numpy as np

    if not KAGGLE_TEST.is_file():
        write_submission(OUT, np.zeros(0, np.uint8))
        log(f"submission: no {KAGGLE_TEST} (fetch did not use Kaggle's test.csv); {OUT} has only its header")
        return
    from digits.idx import read_fetched
    from digits.models import load_model, predict_probs

    images = read_fetched(RAW, KAGGLE_TEST.name)
    probs = predict_probs(load_model(paths.MODEL), images)
    write_submission(OUT, probs.argmax(axis=1))
    log(f"submission: {len(images)} predictions -> {OUT} (upload it on the competition's page)")


if __name__ == "__main__":
    run_stage("submission", main)
