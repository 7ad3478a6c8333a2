"""Split the training digits into train/val (stratified, seeded) and store every split compactly.

Reads data/raw/*-ubyte, each checked against the sha256 in data/raw/manifest.json; writes
data/prepared/{train,val,test}.npz (uint8 x, labels y) and data/prepared/summary.json (digits per class
per split). The test split is copied through untouched.
"""

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_json
from digits.idx import read_fetched
from digits.params import Params
from digits.preprocess import data_summary, stratified_split
from digits.splits import check_digits, save_split

RAW = paths.RAW


def main(params: Params) -> None:
    x, y = read_fetched(RAW, "train-images-idx3-ubyte"), read_fetched(RAW, "train-labels-idx1-ubyte")
    x_test, y_test = read_fetched(RAW, "t10k-images-idx3-ubyte"), read_fetched(RAW, "t10k-labels-idx1-ubyte")
    check_digits(x, y, "training set")
    check_digits(x_test, y_test, "test set")
    x_train, y_train, x_val, y_val = stratified_split(
        x, y, params.preprocess.val_fraction, params.preprocess.seed
    )
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    for name, (images, labels) in splits.items():
        save_split(paths.prepared(name), images, labels)
    write_json(
        paths.PREPARED / "summary.json", data_summary({name: labels for name, (_, labels) in splits.items()})
    )
    log("preprocess: " + ", ".join(f"{name} {len(labels)}" for name, (_, labels) in splits.items()))


if __name__ == "__main__":
    run_stage("preprocess", main)
