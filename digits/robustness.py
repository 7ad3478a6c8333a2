"""Seeded, MNIST-C-style corruptions of uint8 digits, and the robustness metrics computed from them.

Each corruption maps uint8 digits (n, 28, 28) and a numpy Generator to uint8 digits of the same shape; the
same generator state always gives the same bytes. Severities are fixed, chosen like MNIST-C's (Mu & Gilmer
2019, https://arxiv.org/abs/1906.02337): hard enough to separate models, mild enough that a person still
reads every digit. Random magnitudes are drawn per digit, with a random sign where direction matters.

| corruption     | severity here                                  | MNIST-C (its chosen severity)          |
|----------------|------------------------------------------------|----------------------------------------|
| rotate         | 15-30°, either way                             | rotate: 0.4 rad = 23°, either way      |
| shear          | horizontal shear factor 0.3-0.5, either way    | shear: 0.4 rad (factor sin 0.4 = 0.39) |
| scale          | zoom out x0.6-0.8 or in x1.2-1.3 (half each)   | scale: x0.7 (out only)                 |
| translate      | whole-pixel shift 4-6 px long, any direction   | translate: 3 px on both axes (4.2 px)  |
| gaussian_noise | + N(0, 0.2 x 255) per pixel, clipped           | gaussian_noise: 0.18-0.26 (sev. 3-4)   |
| gaussian_blur  | Gaussian filter, sigma 1 px                    | gaussian_blur: sigma 1 (sev. 1)        |
| thicken        | grey dilation, 3x3 cross: +1 px on each side   | (Morpho-MNIST's thickening)            |
| thin           | grey erosion, 2x2 square: -1 px across strokes | (Morpho-MNIST's thinning)              |
| lowres         | ink shrunk to 8-14 px of its 20 (area average) | (none: a coarse camera or scanner)     |
|                | and blown up again (bilinear); then half the   |                                        |
|                | digits +1 px thicker, half blurred (0.3-1 px)  |                                        |

MNIST-C's `inverse` (255 - x) is left out, as in MNIST-C's own headline set: every MNIST model fails it,
so it would only lower the mean by a constant. The geometric ones reuse digits.augment.warp (bilinear).
`lowres` is the capture that `augment.lowres` teaches, but coarser (8-14 px; the default teaches 14-19 px)
and with thickening and blur drawn per digit: it measures what that option is for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import ndimage

from digits.augment import INK_SIDE, THICKER, THINNER, low_resolution, warp
from digits.seeding import generator
from digits.shapes import SIDE, check_uint8_digits

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]

NOISE_SIGMA = 0.2 * 255  # gaussian_noise, in pixel units
BLUR_SIGMA = 1.0  # gaussian_blur, in pixels
# Whole-pixel shifts (down, right) 4 to 6 px long: the digit moves without being resampled.
_SHIFTS = np.array([(r, c) for r in range(-6, 7) for c in range(-6, 7) if 16 <= r * r + c * c <= 36], float)


def _signed(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """n magnitudes uniform in [low, high), each with a random sign."""
    return rng.uniform(low, high, n) * rng.choice([-1.0, 1.0], n)


def _affine(images: np.ndarray, angles=None, scales=None, shifts=None, shears=None) -> np.ndarray:
    n = len(images)
    return warp(
        images,
        np.zeros(n) if angles is None else angles,
        np.ones(n) if scales is None else scales,
        np.zeros((n, 2)) if shifts is None else shifts,
        shears=shears,
    )


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(images, angles=_signed(rng, len(images), 15.0, 30.0))


def shear(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(images, shears=_signed(rng, len(images), 0.3, 0.5))


def scale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(images)
    zoom_in, up, down = rng.random(n) < 0.5, rng.uniform(1.2, 1.3, n), rng.uniform(0.6, 0.8, n)
    return _affine(images, scales=np.where(zoom_in, up, down))


def translate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(images, shifts=_SHIFTS[rng.integers(len(_SHIFTS), size=len(images))])


def gaussian_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(images.shape, dtype=np.float32) * np.float32(NOISE_SIGMA)
    return _to_uint8(images + noise)


def gaussian_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blurred = ndimage.gaussian_filter(
        images.astype(np.float32), sigma=(0, BLUR_SIGMA, BLUR_SIGMA), mode="constant"
    )
    return _to_uint8(blurred)


def thicken(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ndimage.grey_dilation(images, footprint=THICKER, mode="constant", cval=0)


def thin(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ndimage.grey_erosion(images, footprint=THINNER, mode="constant", cval=0)


def lowres(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(images)
    inks, thicker = rng.integers(8, 15, n), rng.random(n) < 0.5
    sigmas = np.where(rng.random(n) < 0.5, rng.uniform(0.3, 1.0, n), 0.0)
    out = np.stack(
        [low_resolution(x, round(SIDE * ink / INK_SIDE)) for x, ink in zip(images, inks, strict=True)]
    )
    out[thicker] = ndimage.grey_dilation(out[thicker], footprint=THICKER, mode="constant", cval=0)
    for i in np.flatnonzero(sigmas):
        out[i] = ndimage.gaussian_filter(out[i], sigma=sigmas[i], mode="constant")
    return _to_uint8(out)


CORRUPTIONS: dict[str, Corruption] = {
    "rotate": rotate,
    "shear": shear,
    "scale": scale,
    "translate": translate,
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "thicken": thicken,
    "thin": thin,
    "lowres": lowres,
}


def corrupt_all(
    images: np.ndarray, seed: int, corruptions: Mapping[str, Corruption] = CORRUPTIONS
) -> dict[str, np.ndarray]:
    """Every corruption of uint8 digits (n, 28, 28): {name: uint8 (n, 28, 28)}, bit-identical per seed."""
    images = check_uint8_digits(images, "images")
    return {name: corrupt(images, generator(seed, name)) for name, corrupt in corruptions.items()}


def subset(n: int, samples: int, seed: int) -> np.ndarray:
    """Ascending indices of `samples` of n digits, a seeded random choice (all n when samples >= n)."""
    if samples >= n:
        return np.arange(n)
    return np.sort(generator(seed, "subset").choice(n, samples, replace=False))


def robustness_metrics(per_corruption_accuracy: Mapping[str, float], clean_accuracy: float) -> dict:
    """Clean accuracy, mean accuracy over corruptions, mean relative drop from clean, and each accuracy.

    The relative drop of one corruption is (clean - corrupted) / clean; it is None when clean is 0.
    """
    if not per_corruption_accuracy:
        raise ValueError("no corruptions to summarise")
    accuracies = {name: float(a) for name, a in per_corruption_accuracy.items()}
    mean = float(np.mean(list(accuracies.values())))
    drop = None
    if clean_accuracy > 0:
        drop = round(float(np.mean([(clean_accuracy - a) / clean_accuracy for a in accuracies.values()])), 5)
    return {
        "clean": round(float(clean_accuracy), 5),
        "mean_corrupted": round(mean, 5),
        "mean_relative_drop": drop,
        "corruptions": {name: round(a, 5) for name, a in accuracies.items()},
    }
