"""Generate the pictures that are not digits: for training, for choosing the threshold, and for the report.

Writes data/negatives/{train,val,test}.npz (x: uint8 (n, 28, 28) as the server would show them to the
model, y: the family's index in digits.negatives.FAMILIES). train and val hold the training families only
(val: other seeds); test holds `negatives.test` of every family, the held-out one included, with seeds of
their own. See digits/negatives.py for the families. The training ones are degraded (noise, blur, stroke
thickness, low resolution) like the augmented digits, so that a degradation never tells a digit from a
non-digit.
"""

from digits import paths
from digits.cli import log, run_stage
from digits.params import Params


def main(params: Params) -> None:
    from digits.negatives import draw_splits
    from digits.splits import save_split

    for split, (x, families, counts) in draw_splits(params).items():
        save_split(paths.negatives(split), x, families)
        log(f"negatives: {split}: " + ", ".join(f"{n} {f}" for f, n in counts.items()))


if __name__ == "__main__":
    run_stage("negatives", main)
