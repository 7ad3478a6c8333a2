"""Generate the pictures that are not digits: for training, for choosing the threshold, and for the report.

Writes data/negatives/{train,val,test}.npz (x: uint8 (n, 28, 28) as the server would show them to the
model, y: the family's index in digits.negatives.FAMILIES). train and val hold the training families only
(val: other seeds); test holds `negatives.test` of every family, the held-out one included, with seeds of
their own. See digits/negatives.py for the families. The training ones are degraded (noise, blur, stroke
thickness) like the augmented digits, so that a degradation never tells a digit from a non-digit.
"""

import numpy as np

from digits import paths
from digits.cli import log, run_stage
from digits.params import Params


def main(params: Params) -> None:
    from digits.augment import degrade
    from digits.negatives import FAMILIES, generate_all, spread
    from digits.seeding import generator
    from digits.splits import save_split

    p = params.negatives
    names = list(FAMILIES)
    trained = [f for f in names if f != p.heldout]
    plan = {
        "train": {f: n for f, n in zip(trained, spread(p.train, len(trained)), strict=True)},
        "val": {f: n for f, n in zip(trained, spread(p.val, len(trained)), strict=True)},
        "test": dict.fromkeys(names, p.test),
    }
    jobs = {
        (split, f): (f, n, generator(p.seed, split, f)) for split, c in plan.items() for f, n in c.items()
    }
    drawn = dict(zip(jobs, generate_all(list(jobs.values())), strict=True))
    for split, counts in plan.items():
        parts = [drawn[split, f] for f in counts]
        families = np.repeat([names.index(f) for f in counts], list(counts.values()))
        x = np.concatenate(parts)
        if split == "train" and len(x):
            x = degrade(x, params.augment, generator(p.seed, split, "degrade"))
        save_split(paths.negatives(split), x, families)
        log(f"negatives: {split}: " + ", ".join(f"{n} {f}" for f, n in counts.items()))


if __name__ == "__main__":
    run_stage("negatives", main)
