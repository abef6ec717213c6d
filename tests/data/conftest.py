"""Fixtures of the data tests."""

from pathlib import Path

import pytest

# The repository root is two levels up; shared/ sits beside it.
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_TFDS_DIR = REPO_ROOT.parent / "shared" / "data" / "tfds"


@pytest.fixture
def tfds_data_dir():
    """`<repo>/../shared/data/tfds`, or a skip where it is absent."""
    if not (SHARED_TFDS_DIR / "cifar10_jpeg").is_dir():
        pytest.skip(f"{SHARED_TFDS_DIR / 'cifar10_jpeg'} not found.")
    return str(SHARED_TFDS_DIR)
