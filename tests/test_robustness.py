"""digits.robustness: seeded MNIST-C-style corruptions, their metrics, and the robustness stage end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT
from pipeline_repo import run_stage_script
from scipy import ndimage

from digits import robustness
from digits.augment import warp
from digits.idx import read_idx
from digits.plots import save_robustness_examples
from digits.robustness import CORRUPTIONS, corrupt_all, robustness_metrics, subset
from digits.seeding import generator
from digits.splits import save_split

# The rest ignore their generator.
RANDOM = ["rotate", "shear", "scale", "translate", "gaussian_noise", "lowres"]


@pytest.fixture(scope="module")
def digits(tiny_mnist_dir: Path) -> np.ndarray:
    """40 real MNIST test digits."""
    return read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")[:40]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ink(images: np.ndarray) -> float:
    return float(images.astype(np.float64).sum())


def test_the_corruptions_and_their_order() -> None:
    assert list(CORRUPTIONS) == [
        "rotate",
        "shear",
        "scale",
        "translate",
        "gaussian_noise",
        "gaussian_blur",
        "thicken",
        "thin",
        "lowres",
    ]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_keeps_shape_dtype_range(name: str, digits: np.ndarray) -> None:
    corrupt = CORRUPTIONS[name]
    out = corrupt(digits, rng(1))
    assert out.dtype == np.uint8 and out.shape == digits.shape
    assert out.max() > 100  # digits are still there
    assert np.array_equal(out, corrupt(digits, rng(1)))
    assert np.array_equal(digits, read_idx(ROOT / "tests/fixtures/mnist-tiny/t10k-images-idx3-ubyte.gz")[:40])
    if name in RANDOM:
        assert not np.array_equal(out, corrupt(digits, rng(2)))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_changes_every_digit(name: str, digits: np.ndarray) -> None:
    out = CORRUPTIONS[name](digits, rng(3))
    changed = np.any(out != digits, axis=(1, 2))
    assert changed.all(), f"{name} left digits {np.flatnonzero(~changed)} unchanged"
    # ... substantially: on average more than 2% of the pixels move by more than 32 grey levels.
    assert np.mean(np.abs(out.astype(int) - digits) > 32) > 0.02


def test_thicken_adds_ink_and_thin_removes_it(digits: np.ndarray) -> None:
    thick, thin = robustness.thicken(digits, rng()), robustness.thin(digits, rng())
    for i in range(len(digits)):
        assert ink(thick[i]) > 1.3 * ink(digits[i]) and ink(thin[i]) < 0.8 * ink(digits[i])
        assert np.all(thick[i] >= digits[i]) and np.all(thin[i] <= digits[i])  # dilation / erosion


def test_lowres_loses_the_fine_detail(digits: np.ndarray) -> None:
    """A coarse capture: every digit keeps its place, but its edges are soft."""
    before, after = digits.astype(np.float64), robustness.lowres(digits, rng(4)).astype(np.float64)

    def sharpness(x: np.ndarray) -> np.ndarray:  # the steepest grey-level steps between neighbours
        return np.percentile(np.abs(np.diff(x, axis=-1)).reshape(len(x), -1), 99, axis=1)

    def centre(x: np.ndarray) -> np.ndarray:  # the ink's mean column
        return (x * np.arange(28)).sum(axis=(1, 2)) / x.sum(axis=(1, 2))

    assert np.all(sharpness(after) < 0.8 * sharpness(before))
    assert np.abs(centre(after) - centre(before)).max() < 1.5


def test_noise_has_the_set_sigma() -> None:
    grey = np.full((20, 28, 28), 128, np.uint8)  # mid-grey: clipping at 0 or 255 is rare (2.5 sigma)
    noisy = robustness.gaussian_noise(grey, rng(5)).astype(np.float64)
    assert pytest.approx(51.0) == robustness.NOISE_SIGMA
    assert np.std(noisy - 128) == pytest.approx(robustness.NOISE_SIGMA, rel=0.03)
    assert abs(np.mean(noisy - 128)) < 1.5


def test_blur_matches_scipy(digits: np.ndarray) -> None:
    ref = ndimage.gaussian_filter(digits[0].astype(float), sigma=1.0, mode="constant")
    out = robustness.gaussian_blur(digits[:1], rng())[0]
    assert np.abs(out.astype(int) - np.clip(np.rint(ref), 0, 255)).max() <= 1
    assert out.max() < digits[0].max()  # peaks are spread out


def test_geometric_severities_are_in_range(digits: np.ndarray) -> None:
    """Rotations 15-30°, shears 0.3-0.5, zoom 0.6-0.8 or 1.2-1.3, shifts 4-6 px, each with both signs."""
    n = 2000
    for low, high in [(15, 30), (0.3, 0.5)]:  # rotate (degrees), shear (factor)
        values = robustness._signed(rng(6), n, low, high)
        assert low <= np.abs(values).min() and np.abs(values).max() < high
        assert (values < 0).sum() > 0.4 * n and (values > 0).sum() > 0.4 * n
    lengths = np.hypot(*robustness._SHIFTS.T)
    assert lengths.min() == 4 and lengths.max() == 6
    assert np.array_equal(robustness._SHIFTS, np.rint(robustness._SHIFTS))  # whole pixels: no resampling
    image = digits[0]
    shifted = robustness.translate(image[None], rng(7))[0]
    offsets = [
        (r, c) for r, c in robustness._SHIFTS.astype(int) if np.array_equal(shifted, _roll(image, r, c))
    ]
    assert len(offsets) == 1
    # The scale corruption zooms each digit in or out: its ink's spread about the centre grows or shrinks.
    many = np.repeat(image[None], 200, 0)
    ratios = np.array([_spread(s) / _spread(image) for s in robustness.scale(many, rng(8))])
    # (bilinear resampling and the frame bias the measure a little: x1.2-1.3 measures 1.14-1.3)
    assert np.all((ratios > 0.55) & (ratios < 0.85) | (ratios > 1.1) & (ratios < 1.4))
    assert 60 < (ratios > 1).sum() < 140


def _roll(image: np.ndarray, down: int, right: int) -> np.ndarray:
    """image shifted by whole pixels, zeros coming in."""
    out = np.zeros_like(image)
    src = image[max(0, -down) : 28 - max(0, down), max(0, -right) : 28 - max(0, right)]
    out[max(0, down) : max(0, down) + src.shape[0], max(0, right) : max(0, right) + src.shape[1]] = src
    return out


def _spread(image: np.ndarray) -> float:
    """RMS distance of the ink from the image centre."""
    r, c = np.mgrid[:28, :28] - 13.5
    w = image.astype(np.float64)
    return float(np.sqrt((w * (r**2 + c**2)).sum() / w.sum()))


def test_warp_shear_slants_rows_and_agrees_with_scipy(digits: np.ndarray) -> None:
    n = len(digits)
    zeros, ones = np.zeros(n), np.ones(n)
    # Zero shear is exactly no shear, so adding the argument changed nothing for existing callers.
    angles, scales, shifts = rng(9).uniform(-20, 20, n), rng(10).uniform(0.8, 1.2, n), np.zeros((n, 2))
    assert np.array_equal(
        warp(digits, angles, scales, shifts, shears=zeros), warp(digits, angles, scales, shifts)
    )
    # A horizontal bar d rows below the centre moves k*d columns right; the centre row stays put.
    bar = np.zeros((1, 28, 28), np.uint8)
    bar[0, 13:15, 8:20] = 255  # rows 13, 14: centred on 13.5
    bar[0, 23, 8:20] = 255  # 9.5 rows below the centre
    out = warp(bar, zeros[:1], ones[:1], shifts[:1], shears=np.array([0.4]))[0]
    cols = np.arange(28)

    def moved(rows: slice) -> float:
        return float(
            (out[rows] * cols).sum() / out[rows].sum() - (bar[0, rows] * cols).sum() / bar[0, rows].sum()
        )

    assert moved(slice(23, 24)) == pytest.approx(0.4 * 9.5, abs=0.1)
    assert moved(slice(13, 15)) == pytest.approx(0.0, abs=0.05)  # rows 13.5 -+ 0.5 move -+0.2: no net move
    # Against scipy: the inverse of shear-then-rotate-and-scale, per digit.
    shears = rng(11).uniform(-0.5, 0.5, n)
    out = warp(digits, angles, scales, shifts, shears=shears)
    c = np.array([13.5, 13.5])
    for i in range(n):
        t = np.deg2rad(angles[i])
        rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / scales[i]
        inverse = np.array([[1.0, 0.0], [-shears[i], 1.0]]) @ rot
        ref = ndimage.affine_transform(
            digits[i].astype(float), inverse, offset=c - inverse @ c, order=1, mode="grid-constant"
        )
        assert np.abs(out[i].astype(int) - np.clip(np.rint(ref), 0, 255)).max() <= 1


def test_corrupt_all_is_seeded_and_each_corruption_has_its_own_generator(digits: np.ndarray) -> None:
    first = corrupt_all(digits, seed=42)
    assert list(first) == list(CORRUPTIONS)
    again = corrupt_all(digits, seed=42)
    assert all(np.array_equal(first[k], again[k]) for k in CORRUPTIONS)
    other = corrupt_all(digits, seed=43)
    for k in CORRUPTIONS:
        assert np.array_equal(first[k], other[k]) == (k not in RANDOM), k
    # Removing or reordering corruptions leaves the others' draws untouched.
    fewer = {k: f for k, f in reversed(CORRUPTIONS.items()) if k != "rotate"}
    partial = corrupt_all(digits, seed=42, corruptions=fewer)
    assert set(partial) == set(CORRUPTIONS) - {"rotate"}
    assert all(np.array_equal(partial[k], first[k]) for k in partial)
    # And two corruptions drawing the same kind of numbers do not draw the same numbers.
    assert not np.array_equal(generator(42, "rotate").random(5), generator(42, "shear").random(5))
    with pytest.raises(ValueError):
        corrupt_all(digits.astype(np.float32), seed=42)


def test_subset_is_seeded_sorted_and_all_when_asked_for_more() -> None:
    assert np.array_equal(subset(10, 10, 0), np.arange(10)) and np.array_equal(
        subset(10, 99, 0), np.arange(10)
    )
    picked = subset(1000, 100, 7)
    assert len(np.unique(picked)) == 100 and np.all(np.diff(picked) > 0) and picked.max() < 1000
    assert np.array_equal(picked, subset(1000, 100, 7)) and not np.array_equal(picked, subset(1000, 100, 8))


def test_metrics_on_hand_made_numbers() -> None:
    metrics = robustness_metrics({"a": 0.9, "b": 0.6, "c": 0.75}, clean_accuracy=1.0)
    assert metrics == {
        "clean": 1.0,
        "mean_corrupted": 0.75,
        "mean_relative_drop": 0.25,
        "corruptions": {"a": 0.9, "b": 0.6, "c": 0.75},
    }
    metrics = robustness_metrics({"a": 0.4, "b": 0.8}, clean_accuracy=0.8)
    assert metrics["mean_corrupted"] == pytest.approx(0.6)
    assert metrics["mean_relative_drop"] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert robustness_metrics({"a": 0.123456789}, 0.987654321)["corruptions"]["a"] == 0.12346
    assert robustness_metrics({"a": 0.5}, 0.0)["mean_relative_drop"] is None
    with pytest.raises(ValueError):
        robustness_metrics({}, 0.9)


def test_examples_png(tmp_path: Path, digits: np.ndarray) -> None:
    rows = {"clean": digits[:4], **{k: v[:4] for k, v in corrupt_all(digits[:4], seed=0).items()}}
    labels = np.array([7, 2, 1, 0])
    path = tmp_path / "plots" / "examples.png"
    save_robustness_examples(path, rows, labels, {k: labels for k in rows})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save_robustness_examples(path, rows, labels)  # without predictions
    assert [p.name for p in path.parent.iterdir()] == ["examples.png"]


def test_stage_end_to_end(tmp_path: Path, tiny_mnist_dir: Path, small_model_path: Path) -> None:
    x = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")
    y = read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    save_split(tmp_path / "data/prepared/test.npz", x, y)
    (tmp_path / "models").mkdir()
    shutil.copy(small_model_path, tmp_path / "models/model.keras")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["robustness"]["samples"] = 60
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage_script(tmp_path, "robustness")
    assert proc.returncode == 0, proc.stderr
    assert "robustness: 9 corruptions of 60 test digits" in proc.stderr

    # The headline numbers in metrics/, every corruption's accuracy (of 60 digits) in the plot's table.
    metrics = json.loads((tmp_path / "metrics/robustness.json").read_text())
    with (tmp_path / "plots/robustness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["corruption"] for r in rows] == ["clean", *CORRUPTIONS]
    clean, *accuracies = (float(r["accuracy"]) for r in rows)
    assert 0.8 <= clean <= 1.0  # a 98.8% model on 60 real digits
    assert all(0 <= a <= 1 and round(a * 60) == pytest.approx(a * 60, abs=1e-3) for a in accuracies)
    assert min(accuracies) < clean
    assert metrics["mean_corrupted"] == pytest.approx(np.mean(accuracies), abs=1e-5)
    noise = accuracies[list(CORRUPTIONS).index("gaussian_noise")]
    assert metrics == {"mean_corrupted": metrics["mean_corrupted"], "corruptions": {"gaussian_noise": noise}}
    assert (tmp_path / "plots/robustness_examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
