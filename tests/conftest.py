"""Shared pytest fixtures."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_mnist_dir() -> Path:
    """600 training + 200 test digits of the real MNIST as gzipped IDX (made by fixtures/make_tiny.py)."""
    return FIXTURES / "mnist-tiny"
