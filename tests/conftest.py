"""Shared pytest fixtures."""

from pathlib import Path

import pytest
from helpers import FIXTURE_CALIBRATION
from pipeline_repo import make_tiny_repo, run

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
