"""Shared pytest fixtures."""

from pathlib import Path

import pytest

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
