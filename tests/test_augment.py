"""digits.augment: seeded affine + elastic augmentation, checked on tiny synthetic digits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT
from scipy import ndimage

from digits.augment import augment, augment_copies, elastic_field, preview_indices, random_affine, warp
from digits.params import AugmentParams
from digits.plots import save_augment_preview

# Geometry only: noise, blur and thickness have tests of their own below.
OFF = AugmentParams(
    copies=2, rotation=0.0, zoom=0.0, shift=0.0, elastic_alpha=0.0, noise=0.0, blur=0.0, lowres=0
)
STRONG = AugmentParams(
    copies=3, rotation=15.0, zoom=0.15, shift=0.1, elastic_alpha=20.0, elastic_sigma=3.0, noise=0.0
)


def blob(row: float, col: float, radius: float = 2.0) -> np.ndarray:
    r, c = np.mgrid[:28, :28]
    return np.round(255 * np.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * radius**2))).astype(np.uint8)


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(image.astype(float)))


@pytest.fixture
def digits() -> np.ndarray:
    """Twenty random strokes: a few blobs each, so every image has structure and an interior."""
    rng = np.random.default_rng(3)
    images = [
        np.maximum.reduce([blob(*rng.uniform(8, 20, 2), rng.uniform(1, 3)) for _ in range(3)])
        for _ in range(20)
    ]
    return np.stack(images)


def unchanged(images: np.ndarray, **angles_scales_shifts) -> np.ndarray:
    n = len(images)
    args = {"angles": np.zeros(n), "scales": np.ones(n), "shifts": np.zeros((n, 2)), **angles_scales_shifts}
    return warp(images, **args)


def test_same_seed_gives_identical_bytes(digits: np.ndarray) -> None:
    first, again = augment_copies(digits, STRONG), augment_copies(digits, STRONG)
    assert np.array_equal(first, again)
    assert np.array_equal(
        augment(digits, STRONG, np.random.default_rng(5)), augment(digits, STRONG, np.random.default_rng(5))
    )


def test_different_seed_or_copy_gives_different_digits(digits: np.ndarray) -> None:
    base = augment_copies(digits, STRONG)
    other = augment_copies(digits, STRONG.model_copy(update={"seed": STRONG.seed + 1}))
    assert not np.array_equal(base, other)
    assert not np.array_equal(base[0], base[1])  # each copy draws its own transforms


def test_zero_ranges_are_the_identity(digits: np.ndarray) -> None:
    assert np.array_equal(augment(digits, OFF, np.random.default_rng(0)), digits)
    assert np.array_equal(augment_copies(digits, OFF), np.stack([digits, digits]))


def test_output_dtype_shape_and_range(digits: np.ndarray) -> None:
    out = augment(digits, STRONG, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == digits.shape
    assert 0 < out.max() <= 255 and not np.array_equal(out, digits)
    with pytest.raises(ValueError):
        augment(digits.astype(np.float32), STRONG, np.random.default_rng(1))


def test_augment_copies_shape_keeps_digit_order(digits: np.ndarray) -> None:
    labels = np.arange(len(digits)) % 10
    copies = augment_copies(digits, STRONG)
    assert copies.shape == (STRONG.copies, len(labels), 28, 28) and copies.dtype == np.uint8
    assert augment_copies(digits, OFF.model_copy(update={"copies": 0})).shape == (0, len(labels), 28, 28)
    # Copy i of digit j is still digit j: its ink stays near the original's (small transforms).
    mild = STRONG.model_copy(update={"rotation": 5.0, "zoom": 0.05, "shift": 0.03, "elastic_alpha": 0.0})
    moved = [
        np.linalg.norm(centre_of_mass(a) - centre_of_mass(d))
        for a, d in zip(augment_copies(digits, mild)[0], digits, strict=True)
    ]
    assert max(moved) < 2.5


def test_rotation_by_90_degrees_is_rot90_counter_clockwise() -> None:
    image = np.zeros((28, 28), np.uint8)
    image[4:12, 13:15] = 255  # a bar above the centre
    image[12, 20] = 100  # and a marker to break symmetry
    out = unchanged(image[None], angles=np.array([90.0]))[0]
    assert np.array_equal(out, np.rot90(image))
    row, col = centre_of_mass(out)
    assert abs(row - 13.5) < 1.5 and col < 10  # the bar now lies left of the centre


def test_small_rotation_turns_mass_around_the_centre() -> None:
    image = blob(6.0, 13.5)  # above the centre, 7.5 px away
    out = unchanged(image[None], angles=np.array([30.0]))[0]
    row, col = centre_of_mass(out)
    # Counter-clockwise: up goes up-left. Expected (13.5 - 7.5 cos 30°, 13.5 - 7.5 sin 30°).
    assert row == pytest.approx(13.5 - 7.5 * np.cos(np.pi / 6), abs=0.15)
    assert col == pytest.approx(13.5 - 7.5 * np.sin(np.pi / 6), abs=0.15)


def test_shift_moves_the_centre_of_mass() -> None:
    image = blob(13.0, 15.0)
    out = unchanged(image[None], shifts=np.array([[3.0, -2.5]]))[0]
    assert centre_of_mass(out) - centre_of_mass(image) == pytest.approx([3.0, -2.5], abs=0.1)


def test_zoom_scales_about_the_centre() -> None:
    image = blob(13.5, 17.5, radius=1.5)  # 4 px right of the centre
    out = unchanged(image[None], scales=np.array([1.5]))[0]
    assert centre_of_mass(out) == pytest.approx([13.5, 13.5 + 4 * 1.5], abs=0.1)
    assert (out > 0).sum() > 2 * (image > 0).sum()  # and the ink grows (area x 1.5^2)


def test_random_shifts_stay_within_range(digits: np.ndarray) -> None:
    params = OFF.model_copy(update={"shift": 0.1})
    angles, scales, shifts = random_affine(1000, params, np.random.default_rng(0))
    assert np.all(angles == 0) and np.all(scales == 1)
    assert np.abs(shifts).max() <= 2.8 and np.abs(shifts).max() > 2.5
    image = blob(13.5, 13.5)
    out = augment(np.repeat(image[None], 50, 0), params, np.random.default_rng(0))
    moves = np.array([centre_of_mass(o) for o in out]) - centre_of_mass(image)
    assert np.abs(moves).max() <= 2.9


def test_warp_agrees_with_scipy(digits: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    n = len(digits)
    angles, scales, shifts = rng.uniform(-30, 30, n), rng.uniform(0.8, 1.2, n), rng.uniform(-3, 3, (n, 2))
    out = warp(digits, angles, scales, shifts)
    c = np.array([13.5, 13.5])
    for i in range(n):
        t = np.deg2rad(angles[i])
        inverse = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / scales[i]
        ref = ndimage.affine_transform(
            digits[i].astype(float),
            inverse,
            offset=c - inverse @ (c + shifts[i]),
            order=1,
            mode="grid-constant",
        )
        assert np.abs(out[i].astype(int) - np.clip(np.rint(ref), 0, 255)).max() <= 1


def test_elastic_field_is_smoothed_uniform_noise() -> None:
    field = elastic_field(4, alpha=30.0, sigma=3.0, rng=np.random.default_rng(9))
    noise = np.random.default_rng(9).random((4, 2, 28, 28), dtype=np.float32) * 2 - 1
    expected = 30.0 * ndimage.gaussian_filter(noise.astype(float), sigma=(0, 0, 3.0, 3.0), mode="constant")
    assert field.shape == (4, 2, 28, 28) and field.dtype == np.float32
    assert np.abs(field - expected).max() < 1e-4


def test_elastic_distortion_changes_digits_but_keeps_them_in_place(digits: np.ndarray) -> None:
    params = OFF.model_copy(update={"elastic_alpha": 34.0, "elastic_sigma": 4.0})
    out = augment(digits, params, np.random.default_rng(0))
    assert not np.array_equal(out, digits)
    moved = [np.linalg.norm(centre_of_mass(a) - centre_of_mass(d)) for a, d in zip(out, digits, strict=True)]
    assert max(moved) < 4.0  # fields of alpha 34, sigma 4 displace by about 1.3 px (std)


def test_preview_indices_cycle_through_classes() -> None:
    y = np.array([3, 1, 0, 1, 2, 0, 3, 2, 1])
    assert preview_indices(y, 6).tolist() == [2, 1, 4, 0, 5, 3]
    assert preview_indices(y, 100).tolist() == [2, 1, 4, 0, 5, 3, 7, 6, 8]


def test_preview_png(tmp_path, digits: np.ndarray) -> None:
    path = tmp_path / "plots" / "preview.png"
    save_augment_preview(path, digits[:5], augment_copies(digits[:5], STRONG), labels=np.arange(5))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["preview.png"]


# --- degradations: noise, blur, thickness ------------------------------------------------------------


def test_degradations_off_leave_the_copies_as_before(digits: np.ndarray) -> None:
    plain = AugmentParams(copies=1, noise=0.0, blur=0.0, thickness=0, lowres=0)
    noisy = AugmentParams(copies=1, noise=0.4, blur=0.0, thickness=0, lowres=0, effects_share=0.0)
    a = augment(digits, plain, np.random.default_rng(0))
    b = augment(digits, noisy, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)  # the affine draws come first, and a share of 0 changes nothing


@pytest.mark.parametrize(
    ("option", "value"),
    [("noise", 0.4), ("blur", 1.5), ("thickness", 1), ("lowres", 8)],
    ids=["noise", "blur", "thickness", "lowres"],
)
def test_each_degradation_is_seeded_and_changes_its_share(
    digits: np.ndarray, option: str, value: float
) -> None:
    p = OFF.model_copy(update={"noise": 0.0, option: value, "effects_share": 0.5})
    a, b = augment(digits, p, np.random.default_rng(1)), augment(digits, p, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == digits.shape
    changed = (a != digits).any(axis=(1, 2))
    assert 0 < changed.sum() < len(digits)  # about half of them, never all


def test_noise_blur_and_thickness_do_what_they_say(digits: np.ndarray) -> None:
    every = {"effects_share": 1.0, "noise": 0.0}
    noisy = augment(digits, OFF.model_copy(update={**every, "noise": 0.5}), np.random.default_rng(2))
    background = digits == 0
    assert noisy[background].mean() > 5  # noise lands on the black background too
    blurred = augment(digits, OFF.model_copy(update={**every, "blur": 2.0}), np.random.default_rng(2))
    assert (
        np.abs(np.diff(blurred.astype(float), axis=2)).mean()
        < np.abs(np.diff(digits.astype(float), axis=2)).mean()
    )
    thick = augment(digits, OFF.model_copy(update={**every, "thickness": 1}), np.random.default_rng(2))
    ink = (digits > 127).sum(axis=(1, 2))
    new_ink = (thick > 127).sum(axis=(1, 2))
    assert (new_ink != ink).all() and (new_ink > ink).any() and (new_ink < ink).any()  # thicker or thinner
    coarse = augment(digits, OFF.model_copy(update={**every, "lowres": 8}), np.random.default_rng(2))
    edges = np.abs(np.diff(coarse.astype(float), axis=2)).mean()
    assert edges < 0.9 * np.abs(np.diff(digits.astype(float), axis=2)).mean()  # strokes soften ...
    for before, after in zip(digits, coarse, strict=True):  # ... where they were: not moved
        assert np.abs(np.subtract(ndimage.center_of_mass(after), ndimage.center_of_mass(before))).max() < 1


# --- the same bytes on every CPU ----------------------------------------------------------------------

# Augments 6,000 real digits with every effect on, and degrades every negatives family; prints a sha256.
_DATA_STAGES = """
import hashlib, numpy as np
from digits.augment import augment_copies, degrade
from digits.idx import read_idx
from digits.negatives import FAMILIES, generate
from digits.params import AugmentParams
from digits.seeding import generator
x = np.concatenate([read_idx("tests/fixtures/mnist-tiny/train-images-idx3-ubyte.gz")] * 5)
p = AugmentParams(copies=2, elastic_alpha=20.0, noise=0.4, blur=0.7, thickness=1, lowres=8, effects_share=1.0)
h = hashlib.sha256(augment_copies(x, p).tobytes())
negatives = np.concatenate([generate(f, 100, generator(1, "test", f)) for f in FAMILIES])
h.update(degrade(negatives, p, generator(1, "degrade")).tobytes())
print(h.hexdigest())
"""
# What another CPU would pick: OpenBLAS's Haswell kernels, and numpy without its AVX-512 loops.
_OTHER_CPU = {
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
}


def test_data_stages_give_the_same_bytes_whatever_the_cpu_kernels() -> None:
    def digest(extra: dict[str, str]) -> str:
        env = {**os.environ, **extra}
        result = subprocess.run(
            [sys.executable, "-c", _DATA_STAGES],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert digest({}) == digest(_OTHER_CPU)
