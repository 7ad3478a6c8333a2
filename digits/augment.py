"""Seeded augmentation of uint8 digits: random rotation, zoom and shift, plus optional elastic distortion,
stroke thickness, a low-resolution capture, blur and noise.

Each digit gets one affine map (rotate about the centre, scale, shift) and, when `elastic_alpha > 0`, a
smooth random displacement field (Simard et al. 2003). Both are composed into a single source coordinate
per output pixel and sampled bilinearly with zeros outside the digit, for a whole chunk of digits at once
in numpy: several times faster than scipy.ndimage's map_coordinates or a per-digit affine_transform loop,
with the same pixels +-1 (benchmarks/README.md). The same params and seed always give the same bytes, on
any CPU: nothing here goes through BLAS (gaussian_smooth).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from digits.parallel import map_ordered
from digits.params import AugmentParams
from digits.shapes import SIDE, check_uint8_digits

_CENTRE = (SIDE - 1) / 2  # rotation and zoom pivot: the middle of the 28x28 pixel grid
_PAD = 2  # zero border: clipped coordinates land in it, so outside samples read 0
_CHUNK = 512  # digits warped at once: bounds memory (~20 MB); elastic noise is drawn per chunk of this size
_GRID = np.arange(SIDE, dtype=np.float32) - np.float32(_CENTRE)
THICKER = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)[None]  # thicker: +1 px on each side
THINNER = np.ones((1, 2, 2), dtype=bool)  # thinner: -1 px across a stroke
INK_SIDE = 20  # MNIST's digits were scaled to fit 20x20 (digits.mnistify.BOX)


def random_affine(
    n: int, params: AugmentParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n uniform draws in params' ranges: angles (degrees), scales, shifts (n, 2) in pixels (down, right)."""
    angles = rng.uniform(-params.rotation, params.rotation, n)
    scales = rng.uniform(1 - params.zoom, 1 + params.zoom, n)
    shifts = rng.uniform(-params.shift, params.shift, (n, 2)) * SIDE
    return angles, scales, shifts


def _gaussian_taps(sigma: float) -> list[float]:
    """scipy.ndimage.gaussian_filter1d's taps for sigma (radius 4 sigma), normalised and rounded to 12
    decimals, so that a last-bit difference in exp between CPUs never reaches the pictures."""
    radius = int(4.0 * sigma + 0.5)
    weights = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]
    return [round(w / math.fsum(weights), 12) for w in weights]


def gaussian_smooth(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (..., 28, 28) over its last two axes, zero outside (gaussian_filter1d's "constant"
    mode along each), float64 out.

    Shifted multiply-adds in a fixed order rather than a matrix product: BLAS picks its kernel, and so its
    summation order, by CPU, which would make the augmented data differ from one machine to the next.
    """
    taps = _gaussian_taps(sigma)
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(-1, SIDE, SIDE)
    out = np.empty_like(flat)
    for start in range(0, len(flat), _CHUNK):  # chunks that stay in cache
        out[start : start + _CHUNK] = _smooth_chunk(flat[start : start + _CHUNK], taps)
    return out.reshape(x.shape)


def _smooth_chunk(x: np.ndarray, taps: list[float]) -> np.ndarray:
    radius = len(taps) // 2
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad)
        window = [slice(None)] * 3
        out, term = np.zeros_like(x), np.empty_like(x)
        for k, w in enumerate(taps):
            window[axis] = slice(k, k + SIDE)
            out += np.multiply(padded[tuple(window)], w, out=term)
        x = out
    return x


def elastic_field(n: int, alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Simard's displacement fields: uniform(-1, 1) noise, Gaussian-smoothed with sigma, times alpha.

    Returns float32 (n, 2, 28, 28): per output pixel, the (down, right) offset in pixels of where it samples.
    """
    noise = rng.random((n, 2, SIDE, SIDE), dtype=np.float32)
    noise *= 2
    noise -= 1
    return (gaussian_smooth(noise, sigma) * alpha).astype(np.float32)


def warp(
    images: np.ndarray,
    angles: np.ndarray,
    scales: np.ndarray,
    shifts: np.ndarray,
    displacement: np.ndarray | None = None,
    shears: np.ndarray | None = None,
) -> np.ndarray:
    """Rotate (degrees, counter-clockwise), scale about the centre, then shift (pixels, (down, right)).

    images: uint8 (n, 28, 28); angles, scales: (n,); shifts: (n, 2); displacement: optional float
    (n, 2, 28, 28) added to each output pixel's source coordinate; shears: optional (n,) horizontal shear
    factors applied first: a pixel d rows below the centre moves shears * d columns right (0.4: a slant of
    about 22°). Bilinear, zero outside; uint8 out. Zero angle, unit scale, zero shift and no displacement
    or shear return exactly the input.
    """
    fields = None if displacement is None else lambda chunk: displacement[chunk]
    return _warp(np.asarray(images), angles, scales, shifts, fields, shears)


def augment(images: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """One randomly transformed version of each uint8 digit (n, 28, 28), drawn from rng; uint8 out."""
    images = check_uint8_digits(images, "images")
    angles, scales, shifts = random_affine(len(images), params, rng)
    fields = None
    if params.elastic_alpha > 0:  # drawn chunk by chunk, after the affine draws, so memory stays bounded

        def fields(chunk: slice) -> np.ndarray:
            return elastic_field(chunk.stop - chunk.start, params.elastic_alpha, params.elastic_sigma, rng)

    out = _warp(images, angles, scales, shifts, fields)
    degraded = params.noise or params.blur or params.thickness or params.lowres
    return degrade(out, params, rng) if degraded else out


def degrade(images: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Stroke thickness, a low-resolution capture, blur and noise, each on its own random `effects_share`
    of the uint8 digits.

    Uniform noise, not the robustness stage's Gaussian: its `gaussian_noise` then tests a noise the model
    never saw. Per digit: thickness +1 px (3x3 cross dilation) or -1 px (2x2 erosion) with equal chance;
    the capture shrinks the picture so that MNIST's 20 px of ink become lowres..19 px (area average) and
    blows it up again (bilinear), as a coarse camera or scanner sees a digit; blur sigma uniform in (0, blur]
    px; noise amplitude uniform in (0, noise] x 255.
    """
    from scipy import ndimage  # only this option needs it

    out = images.astype(np.float32)
    n = len(out)
    if params.thickness:
        chosen, thicker = rng.random(n) < params.effects_share, rng.random(n) < 0.5
        for pick, op, footprint in (
            (chosen & thicker, ndimage.grey_dilation, THICKER),
            (chosen & ~thicker, ndimage.grey_erosion, THINNER),
        ):
            if pick.any():
                out[pick] = op(out[pick], footprint=footprint, mode="constant", cval=0)
    if params.lowres:
        chosen = np.flatnonzero(rng.random(n) < params.effects_share)
        inks = rng.integers(params.lowres, INK_SIDE, len(chosen))
        for i, ink in zip(chosen, inks, strict=True):
            out[i] = low_resolution(out[i], round(SIDE * ink / INK_SIDE))
    if params.blur:
        chosen = np.flatnonzero(rng.random(n) < params.effects_share)
        sigmas = rng.uniform(0, params.blur, len(chosen))
        levels = np.ceil(sigmas / params.blur * 8)  # 8 sigma levels: one smoothing per level
        for level in np.unique(levels):
            pick = chosen[levels == level]
            out[pick] = gaussian_smooth(out[pick], float(level) / 8 * params.blur)
    if params.noise:
        chosen = rng.random(n) < params.effects_share
        amplitude = rng.uniform(0, params.noise, n).astype(np.float32) * np.float32(255)
        noise = rng.uniform(-1, 1, out.shape).astype(np.float32) * amplitude[:, None, None]
        out += np.where(chosen[:, None, None], noise, np.float32(0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def low_resolution(image: np.ndarray, side: int) -> np.ndarray:
    """A float32 (28, 28) picture captured at side x side pixels (area average) and blown up again."""
    small = Image.fromarray(image).resize((side, side), Image.BOX)
    return np.asarray(small.resize(image.shape[::-1], Image.BILINEAR), np.float32)


def _warp(
    images, angles, scales, shifts, fields: Callable[[slice], np.ndarray] | None, shears=None
) -> np.ndarray:
    """warp(), chunk by chunk; fields(chunk) gives that chunk's displacement, called in order."""
    n = len(images)
    rad = np.deg2rad(np.asarray(angles, dtype=np.float64))
    cos, sin = np.cos(rad) / scales, np.sin(rad) / scales
    # Inverse map, output (row, col) -> source (row, col): src = centre + A @ (out - centre - shift).
    a = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # (n, 2, 2)
    if shears is not None:  # the shear acts first, so its inverse [[1, 0], [-k, 1]] multiplies A on the left
        a[:, 1] -= np.asarray(shears, dtype=np.float64)[:, None] * a[:, 0]
    origin = _CENTRE + _PAD - np.einsum("nij,nj->ni", a, np.asarray(shifts, dtype=np.float64))
    a, origin = a.astype(np.float32), origin.astype(np.float32)

    side = SIDE + 2 * _PAD
    out = np.empty_like(images)
    for start in range(0, n, _CHUNK):
        chunk = slice(start, min(start + _CHUNK, n))
        m = chunk.stop - chunk.start
        padded = np.zeros((m, side, side), np.uint8)
        padded[:, _PAD:-_PAD, _PAD:-_PAD] = images[chunk]
        flat = padded.reshape(-1)

        ac, oc = a[chunk, :, :, None, None], origin[chunk, :, None, None]
        rows = oc[:, 0] + ac[:, 0, 0] * _GRID[:, None] + ac[:, 0, 1] * _GRID[None, :]
        cols = oc[:, 1] + ac[:, 1, 0] * _GRID[:, None] + ac[:, 1, 1] * _GRID[None, :]
        if fields is not None:
            field = fields(chunk)
            rows += field[:, 0]
            cols += field[:, 1]
        # Anything beyond the 28x28 digit clips into the zero border, so it samples 0.
        np.clip(rows, 0, side - 2, out=rows)
        np.clip(cols, 0, side - 2, out=cols)
        r0, c0 = np.floor(rows), np.floor(cols)
        fr, fc = rows - r0, cols - c0
        idx = (np.arange(m) * side * side)[:, None, None] + r0.astype(np.intp) * side + c0.astype(np.intp)
        v00, v01 = flat[idx].astype(np.float32), flat[idx + 1].astype(np.float32)
        v10, v11 = flat[idx + side].astype(np.float32), flat[idx + side + 1].astype(np.float32)
        top = v00 + fc * (v01 - v00)
        value = top + fr * (v10 + fc * (v11 - v10) - top)
        np.rint(value, out=value)
        out[chunk] = np.clip(value, 0, 255, out=value)
    return out


def augment_copies(images: np.ndarray, params: AugmentParams) -> np.ndarray:
    """params.copies augmented versions of all digits, uint8 (copies, n, 28, 28), bit-identical per seed.

    Copy i draws from its own generator, spawned from params.seed, so copies are independent of each other
    (and made on all the cores at once).
    """
    images = np.asarray(images)
    out = np.empty((params.copies, *images.shape), np.uint8)
    seeds = np.random.SeedSequence(params.seed).spawn(params.copies)
    jobs = [(images, params, seed, f"{i + 1}/{params.copies}") for i, seed in enumerate(seeds)]
    for i, copy in enumerate(map_ordered(_augment_copy, jobs)):
        out[i] = copy
    return out


def _augment_copy(job: tuple[np.ndarray, AugmentParams, np.random.SeedSequence, str]) -> np.ndarray:
    images, params, seed, which = job
    start = time.perf_counter()
    out = augment(images, params, np.random.default_rng(seed))
    took = time.perf_counter() - start
    print(f"augment: copy {which} of {len(images)} digits in {took:.1f}s", file=sys.stderr, flush=True)
    return out


def preview_indices(y: np.ndarray, k: int) -> np.ndarray:
    """k digit indices for a preview, cycling through the classes: first 0, first 1, ..., second 0, ..."""
    y = np.asarray(y)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    picked = []
    for rank in range(len(y)):
        for members in by_class:
            if rank < len(members) and len(picked) < k:
                picked.append(members[rank])
        if len(picked) == k:
            break
    return np.array(picked, dtype=np.intp)
