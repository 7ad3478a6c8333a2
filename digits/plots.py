"""PNG pictures for `dvc plots`: each function draws one figure from arrays and writes it atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from digits.files import atomic_path


def _save(fig: plt.Figure, path: str | Path) -> None:
    """Write fig as PNG through a temp file, then close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def _show_digit(ax: plt.Axes, image: np.ndarray) -> None:
    """A 28x28 uint8 digit, ink dark on white, in a frame without ticks."""
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_augment_preview(
    path: str | Path,
    originals: np.ndarray,
    augmented_rows: np.ndarray,
    labels: np.ndarray | None = None,
) -> None:
    """Grid of digits: originals (k, 28, 28) on the top row, then one row per augmented copy (r, k, 28, 28).

    Column titles show `labels` when given. Ink is drawn dark on white, pixel values 0..255.
    """
    rows = [("original", originals)] + [(f"copy {i + 1}", row) for i, row in enumerate(augmented_rows)]
    k = len(originals)
    fig, axes = plt.subplots(len(rows), k, figsize=(0.9 * k + 0.8, 0.95 * len(rows) + 0.5), squeeze=False)
    for r, (name, digits) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            _show_digit(ax, digits[c])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0 and labels is not None:
                ax.set_title(str(labels[c]), fontsize=10)
        if r == 0:  # a thicker frame sets the originals apart from their augmented versions
            for ax in axes[0]:
                for spine in ax.spines.values():
                    spine.set_linewidth(1.5)
    fig.suptitle("Augmentation preview: originals (top) and augmented copies", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def save_confusion(path: Path, matrix: np.ndarray) -> None:
    """Confusion matrix heat map with counts; the diagonal dominates, so colour a log scale."""
    fig, ax = plt.subplots(figsize=(6, 5.2), dpi=100)
    im = ax.imshow(matrix, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(2, int(matrix.max()))))
    n = len(matrix)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                dark = matrix[i, j] > matrix.max() ** 0.5
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="actual")
    ax.set_title(f"Confusion matrix: {int(np.trace(matrix))}/{int(matrix.sum())} correct")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def save_gallery(path: Path, images: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    """Misclassified digits, each titled 'true -> predicted (confidence)'."""
    cols = 6
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            pred = int(probs[k].argmax())
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"{labels[k]}→{pred} ({probs[k, pred]:.0%})", fontsize=8)
    if len(images) == 0:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Misclassified test digits: true→predicted (confidence)", fontsize=9)
    _save(fig, path)


def save_robustness_examples(
    path: str | Path,
    rows: dict[str, np.ndarray],
    labels: np.ndarray,
    predictions: dict[str, np.ndarray] | None = None,
) -> None:
    """One row per corruption (name -> uint8 (k, 28, 28)), the same k test digits in each row.

    Column titles show the true labels; with `predictions` (name -> (k,) predicted digits), each digit is
    captioned with the model's prediction, red where it is wrong. Ink is drawn dark on white, 0..255.
    """
    k = len(labels)
    fig, axes = plt.subplots(len(rows), k, figsize=(0.8 * k + 1.4, 0.95 * len(rows) + 0.6), squeeze=False)
    for r, (name, digits) in enumerate(rows.items()):
        for c in range(k):
            ax = axes[r, c]
            _show_digit(ax, digits[c])
            if c == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(str(labels[c]), fontsize=10)
            if predictions is not None:
                pred = int(predictions[name][c])
                wrong = pred != int(labels[c])
                ax.set_xlabel(f"→{pred}", fontsize=7, labelpad=1, color="red" if wrong else "dimgray")
    caption = "true digit on top" + (
        "; prediction under each, red if wrong" if predictions is not None else ""
    )
    fig.suptitle(f"Corrupted test digits ({caption})", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def save_reliability(path: str | Path, curves: dict[str, list[dict]], bins: int) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one line per curve (name -> rows of
    digits.confidence.reliability), the diagonal being perfect calibration; marker area ~ digits in bin."""
    fig, ax = plt.subplots(figsize=(5.2, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="lightgray", lw=1, label="perfectly calibrated")
    for name, rows in curves.items():
        conf = [r["confidence"] for r in rows]
        acc = [r["accuracy"] for r in rows]
        size = [10 + 90 * np.sqrt(r["count"] / max(x["count"] for x in rows)) for r in rows]
        ax.plot(conf, acc, marker=None, lw=1)
        ax.scatter(conf, acc, s=size, label=name)
    ax.set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="confidence (top probability)", ylabel="accuracy")
    ax.set_title(f"Reliability on the test digits ({bins} bins)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, path)


def save_score_histograms(
    path: str | Path,
    scores: dict[str, np.ndarray],
    threshold: float,
    what: str = "calibrated top probability",
) -> None:
    """Distribution of a score (`what`) per set (name -> scores), its threshold marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    edges = np.linspace(0, 1, 51)
    for name, s in scores.items():
        weights = np.full(len(s), 1 / max(len(s), 1))
        ax.hist(s, bins=edges, weights=weights, histtype="step", lw=1.5, label=f"{name} ({len(s)})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel=what, ylabel="share of the set", yscale="log")
    ax.set_title("Digits against non-digits: accepted right of the threshold", fontsize=10)
    ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    _save(fig, path)
