"""Shared fixtures: the model zoo (``../shared/models`` beside the repository, or
``$ACCELC_ZOO``) and the repository's bundled models."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def zoo_dir() -> Path:
    return Path(os.environ.get("ACCELC_ZOO", REPO.parent / "shared" / "models"))


@pytest.fixture(scope="session")
def zoo() -> Path:
    d = zoo_dir()
    if not (d / "mlp_mnist.onnx").is_file():
        pytest.fail(f"the model zoo is not at {d} (set ACCELC_ZOO)")
    return d


@pytest.fixture(scope="session")
def models() -> Path:
    return REPO / "models"
