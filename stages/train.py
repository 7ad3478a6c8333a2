"""Train the CNN on the augmented training split, selecting weights on the validation split.

Reads data/prepared/{train,val}.npz, data/augmented/train.npz, data/negatives/train.npz (generated
non-digits: with any, the model learns an 11th class, "not a digit", and each epoch sees its own share)
and, with train.feedback_weight, data/feedback.npz (users' reviewed corrections).
The main model (no arguments) writes models/model.keras, metrics/train.json and the per-epoch DVCLive
curves under plots/training/.
`--member SEED` trains an ensemble member with that seed instead: models/members/seed-SEED.{keras,json}.
With train.distribute=multi_host, every host runs this script and only process 0 writes the outputs
(docs/scaling.md, "Several hosts").
"""

import argparse

from digits import paths
from digits.cli import log, run_stage
from digits.files import save_model, write_json
from digits.params import Params

HEADLINE = ("best_val_accuracy", "epochs_run", "train_seconds")  # a member keeps them all (best_epoch, ...)


def main(params: Params, member: int | None) -> None:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from digits.distribute import process_index, weights_digest
    from digits.splits import load_split
    from digits.train import build_and_train, load_training_data

    rank = process_index(params.train.distribute)  # 0 unless another host of a multi_host run
    train = params.train if member is None else params.train.model_copy(update={"seed": member})
    data = load_training_data(
        paths.prepared("train"),
        paths.AUGMENTED,
        paths.negatives("train"),
        paths.prepared("val"),
        train.bn_digits,
    )
    if train.feedback_weight:
        data = data.with_feedback(*load_split(paths.FEEDBACK_SET), train.feedback_weight)
    log(f"train: {'main model' if member is None else f'ensemble member seed {member}'}, {data.describe()}")
    if member is None and rank == 0:
        with Live(str(paths.TRAINING_CURVES), dvcyaml=False, save_dvc_exp=False) as live:
            result = build_and_train(params.model, train, data, [DVCLiveCallback(live=live)])
    else:
        result = build_and_train(params.model, train, data)
    if train.distribute == "multi_host":  # every process must end with the same weights: compare the logs
        log(f"train: process {rank}, weights sha256 {weights_digest(result.model)}")
    if rank:
        return  # process 0 (the host DVC runs on) writes the outputs; the others write nothing
    model_path = paths.MODEL if member is None else paths.member(member)
    save_model(result.model, model_path)
    summary = result.summary()
    metrics = {k: summary[k] for k in HEADLINE} if member is None else summary
    write_json(paths.metrics("train") if member is None else model_path.with_suffix(".json"), metrics)
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
