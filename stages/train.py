"""Train the CNN on the augmented training split, selecting weights on the validation split.

Reads data/prepared/{train,val}.npz and data/augmented/train.npz; writes models/model.keras,
metrics/train.json and the per-epoch DVCLive curves under plots/training/.
"""

from pathlib import Path

import numpy as np

from digits import DigitsError
from digits.cli import log, run_stage, write_json
from digits.params import Params

MODEL = Path("models/model.keras")


def main(params: Params) -> None:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from digits.preprocess import load_split
    from digits.train import build_and_train

    train_x, train_y = load_split("data/prepared/train.npz")
    val_x, val_y = load_split("data/prepared/val.npz")
    copies, copy_y = load_split("data/augmented/train.npz")
    if not np.array_equal(copy_y, train_y):
        raise DigitsError("data/augmented/train.npz does not match data/prepared/train.npz; rerun augment")
    if len(copies) == 0:
        log("train: augment.copies is 0, training on the original digits")
        copies = train_x[None]
    log(f"train: {len(train_y)} digits x {len(copies)} copies, {len(val_y)} for validation")

    with Live("plots/training", dvcyaml=False, save_dvc_exp=False) as live:
        result = build_and_train(
            params.model, params.train, copies, train_y, val_x, val_y, callbacks=[DVCLiveCallback(live=live)]
        )
    MODEL.parent.mkdir(exist_ok=True)
    result.model.save(MODEL)
    summary = result.summary()
    write_json("metrics/train.json", summary)
    log(
        f"train: best val accuracy {summary['best_val_accuracy']} at epoch {summary['best_epoch']}, "
        f"{summary['images_per_second']:.0f} images/s"
    )


if __name__ == "__main__":
    run_stage("train", main)
