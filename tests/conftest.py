"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers import FIXTURE_CALIBRATION
from pipeline_repo import make_tiny_repo, run

from digits.idx import read_idx
from digits.params import ExportParams
from digits.shapes import to_model_input

if TYPE_CHECKING:
    from digits.export import Int8Inputs

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_mnist_dir() -> Path:
    """600 training + 200 test digits of the real MNIST as gzipped IDX (made by fixtures/make_tiny.py)."""
    return FIXTURES / "mnist-tiny"


@pytest.fixture(scope="session")
def small_model_path() -> Path:
    """A small CNN trained on real MNIST (98.8% test accuracy), made by fixtures/make_model.py."""
    path = FIXTURES / "model-small.keras"
    assert path.is_file(), f"{path} is missing: run .venv/bin/python tests/fixtures/make_model.py"
    return path


@pytest.fixture(scope="module")
def test_digits(tiny_mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The 200 tiny MNIST test digits as float32 (200, 28, 28) in [0, 1], and their labels."""
    images = to_model_input(read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz"))[..., 0]
    return images, read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def tflite_path(small_model_path, tmp_path_factory) -> Path:
    """The small model exported to .tflite. Session-scoped: an export, and no test changes the file."""
    from digits.export import TOLERANCE, export_tflite  # here: only the tests that ask for it need it

    out = tmp_path_factory.mktemp("export") / "model-small.tflite"
    result = export_tflite(small_model_path, out)
    assert result.path == out and result.size == out.stat().st_size > 10_000
    assert result.max_difference <= TOLERANCE
    return out


# 100 digits decide: one changed prediction is already 1 point of accuracy.
TINY_LIMITS = ExportParams(representative=500, int8_max_changed=0.02, int8_max_accuracy_change=0.01)


@pytest.fixture(scope="session")
def int8_inputs(tiny_mnist_dir) -> Int8Inputs:
    """The tiny MNIST's training digits (500 calibrate), its first 100 test digits deciding and the other
    100 reported, as the export stage passes the prepared splits (no non-digits: a 10-class model)."""
    from digits.export import Int8Inputs, ParitySet

    images = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    return Int8Inputs(
        read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")[:500],
        ParitySet(images[:100], labels[:100]),
        ParitySet(images[100:], labels[100:]),
        TINY_LIMITS,
    )


@pytest.fixture(scope="session")
def bundle(small_model_path, int8_inputs, tmp_path_factory) -> Path:
    """The export stage's bundle for the small model: serving/{model.tflite,model_int8.tflite,model.json}.

    Session-scoped: an export (float32 and int8), and tests that change a bundle change a copy of it."""
    from digits.export import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "serving"
    return export_bundle(small_model_path, out, int8_inputs).float32.path.parent


@pytest.fixture(scope="session")
def calibrated_bundle(small_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model's serving bundle (float32) with rejection metadata in its model.json, written by the
    export as the pipeline writes it: the fixed scribble (helpers.SCRIBBLE) is refused, real and drawn
    digits are accepted (helpers explains the values)."""
    from digits.confidence import Calibration
    from digits.export import export_bundle  # here: only the tests that ask for the bundle need it

    bundle = tmp_path_factory.mktemp("calibrated") / "serving"
    export_bundle(small_model_path, bundle, calibration=Calibration(**FIXTURE_CALIBRATION))
    return bundle


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_mnist_dir: Path) -> Path:
    """A temp git repo holding this pipeline on tiny params (pipeline_repo.py), after a real `dvc repro`.

    Module-scoped: each test module gets its own copy (about 30 s), since modules change it (exp run, push).
    """
    repo = make_tiny_repo(tmp_path_factory.mktemp("repo"), tiny_mnist_dir)
    run(repo, "dvc", "repro")
    return repo
