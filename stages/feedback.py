"""The reviewed corrections as training digits: data/feedback (PNGs + labels.jsonl, kept in git) prepared
as the server prepares a picture, into data/feedback.npz (x: uint8 (n, 28, 28), y: 0..9, 10 for "not a
digit"). train.feedback_weight says how often train shows each; at 0 (the default) none are used and the
file holds none, so adding corrections changes nothing downstream until the weight is set.
"""

import numpy as np

from digits import paths
from digits.cli import log, run_stage
from digits.params import Params


def main(params: Params) -> None:
    from digits.feedback import load_feedback
    from digits.splits import save_split

    images, labels = load_feedback(paths.FEEDBACK)
    if not params.train.feedback_weight:
        log(
            f"feedback: {len(labels)} corrections in {paths.FEEDBACK}, none used (train.feedback_weight is 0)"
        )
        images, labels = images[:0], labels[:0]
    save_split(paths.FEEDBACK_SET, images, labels)
    counts = {"not a digit" if d == 10 else str(d): int((labels == d).sum()) for d in np.unique(labels)}
    log(f"feedback: {len(labels)} corrections for training" + (f" {counts}" if counts else ""))


if __name__ == "__main__":
    run_stage("feedback", main)
