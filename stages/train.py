"""Train the CNN on the augmented training split, selecting weights on the validation split.

Reads data/prepared/{train,val}.npz, data/augmented/train.npz and data/negatives/train.npz (generated
non-digits: with any, the model learns an 11th class, "not a digit", and each epoch sees its own share).
The main model (no arguments) writes models/model.keras, metrics/train.json and the per-epoch DVCLive
curves under plots/training/.
`--member SEED` trains an ensemble member with that seed instead: models/members/seed-SEED.{keras,json}.
With train.distribute=multi_host, every host runs this script and only process 0 writes the outputs
(README: Training across hosts).
"""

import argparse
from pathlib import Path

from digits.cli import log, run_stage
from digits.files import save_model, write_json
from digits.params import Params


def main(params: Params, member: int | None) -> None:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from digits.preprocess import load_split, load_training_copies
    from digits.train import (
        TrainResult,
        batch_norm_images,
        build_and_train,
        process_index,
        weights_digest,
        with_negatives,
    )

    rank = process_index(params.train.distribute)  # 0 unless another host of a multi_host run
    copies, digit_y = load_training_copies()
    negatives, _ = load_split("data/negatives/train.npz")
    copies, train_y = with_negatives(copies, digit_y, negatives)  # each copy (epoch) its own share
    val_x, val_y = load_split("data/prepared/val.npz")
    train_params = params.train if member is None else params.train.model_copy(update={"seed": member})
    name = "main model" if member is None else f"ensemble member seed {member}"
    log(
        f"train: {name}, {len(digit_y)} digits + {len(train_y) - len(digit_y)} non-digits x {len(copies)} "
        f"copies, {len(val_y)} digits for validation"
    )

    # With a "not a digit" class, batch norm's moving statistics lag far behind the weights: measure them
    # afresh on unaugmented digits and, in the share training saw, non-digits (RecalibratedValidation).
    # Without, that changes nothing but the time.
    bn = params.train.bn_digits if len(negatives) else 0
    clean = load_split("data/prepared/train.npz")[0][:bn] if bn else None
    bn_images = batch_norm_images(clean, copies, len(digit_y)) if bn else None

    def fit(callbacks: list) -> TrainResult:
        return build_and_train(
            params.model, train_params, copies, train_y, val_x, val_y, callbacks, bn_images
        )

    if member is None and rank == 0:
        with Live("plots/training", dvcyaml=False, save_dvc_exp=False) as live:
            result = fit([DVCLiveCallback(live=live)])
    else:
        result = fit([])
    if train_params.distribute == "multi_host":
        # Every process must end with the same weights: this line lets one compare the hosts' logs.
        log(f"train: process {rank}, weights sha256 {weights_digest(result.model)}")
    if rank:
        return  # process 0 (the host DVC runs on) writes the outputs; the others write nothing
    if member is None:
        model_path, metrics_path = Path("models/model.keras"), Path("metrics/train.json")
    else:
        model_path = Path(f"models/members/seed-{member}.keras")
        metrics_path = model_path.with_suffix(".json")
    save_model(result.model, model_path)
    summary = result.summary()
    # The headline numbers for the main model (a member's file keeps the whole summary).
    headline = ("best_val_accuracy", "best_epoch", "epochs_run", "train_seconds")
    write_json(metrics_path, summary if member is not None else {k: summary[k] for k in headline})
    log(
        f"train: best val accuracy {summary['best_val_accuracy']} at epoch {summary['best_epoch']}, "
        f"{summary['train_seconds']} s, {summary['images_per_second']:.0f} images/s, "
        f"{summary['params']} parameters"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--member", type=int, metavar="SEED", help="train ensemble member SEED")
    args = parser.parse_args()
    run_stage("train", lambda params: main(params, args.member))
