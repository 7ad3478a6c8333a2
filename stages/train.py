"""Train the CNN on the augmented training split, selecting weights on the validation split.

Reads data/prepared/{train,val}.npz and data/augmented/train.npz. The main model (no arguments) writes
models/model.keras, metrics/train.json and the per-epoch DVCLive curves under plots/training/.
`--member SEED` trains an ensemble member with that seed instead: models/members/seed-SEED.{keras,json}.
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
    from digits.train import TrainResult, build_and_train

    copies, train_y = load_training_copies()
    val_x, val_y = load_split("data/prepared/val.npz")
    train_params = params.train if member is None else params.train.model_copy(update={"seed": member})
    name = "main model" if member is None else f"ensemble member seed {member}"
    log(f"train: {name}, {len(train_y)} digits x {len(copies)} copies, {len(val_y)} for validation")

    def fit(callbacks: list) -> TrainResult:
        return build_and_train(params.model, train_params, copies, train_y, val_x, val_y, callbacks=callbacks)

    if member is None:
        with Live("plots/training", dvcyaml=False, save_dvc_exp=False) as live:
            result = fit([DVCLiveCallback(live=live)])
        model_path, metrics_path = Path("models/model.keras"), Path("metrics/train.json")
    else:
        result = fit([])
        model_path = Path(f"models/members/seed-{member}.keras")
        metrics_path = model_path.with_suffix(".json")
    save_model(result.model, model_path)
    summary = result.summary()
    write_json(metrics_path, summary)
    log(
        f"train: best val accuracy {summary['best_val_accuracy']} at epoch {summary['best_epoch']}, "
        f"{summary['images_per_second']:.0f} images/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--member", type=int, metavar="SEED", help="train ensemble member SEED")
    args = parser.parse_args()
    run_stage("train", lambda params: main(params, args.member))
