"""Fixtures shared by the learned-method tests."""

import pytest

from orgaseg.datasets import load_dataset


@pytest.fixture(scope="session")
def phantom():
    """A small phantom dataset (12 x 128 x 128, 20 nm voxels) for training tiny models."""
    return load_dataset("phantom", shape=(12, 128, 128), voxel_size=(20.0, 20.0, 20.0))
