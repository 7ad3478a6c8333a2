"""Materialise `augment.copies` randomly rotated, zoomed and shifted copies of the training split.

Reads data/prepared/train.npz; writes data/augmented/train.npz (x: uint8 (copies, n, 28, 28), y: the n
labels once) and plots/augment_preview.png (originals on top, augmented versions of them below).
"""

from digits import paths
from digits.augment import augment_copies, preview_indices
from digits.cli import log, run_stage
from digits.params import Params
from digits.plots import save_augment_preview
from digits.splits import load_split, save_split

PREVIEW_ROWS = 4


def main(params: Params) -> None:
    p = params.augment
    images, labels = load_split(paths.prepared("train"))
    log(
        f"augment: {p.copies} copies of {len(labels)} digits (rotation ±{p.rotation}°, zoom ±{p.zoom}, "
        f"shift ±{p.shift}, elastic alpha {p.elastic_alpha} sigma {p.elastic_sigma})"
    )
    copies = augment_copies(images, p)
    save_split(paths.AUGMENTED, copies, labels)
    shown = preview_indices(labels, p.preview)
    save_augment_preview(
        paths.AUGMENT_PREVIEW, images[shown], copies[:PREVIEW_ROWS, shown], labels=labels[shown]
    )


if __name__ == "__main__":
    run_stage("augment", main)
