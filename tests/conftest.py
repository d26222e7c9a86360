"""Fixtures shared by the tests."""

import signal

import pytest

from orgaseg.datasets import load_dataset


@pytest.fixture(scope="session")
def phantom():
    """A small phantom dataset (12 x 128 x 128, 20 nm voxels) for training tiny models."""
    return load_dataset("phantom", shape=(12, 128, 128), voxel_size=(20.0, 20.0, 20.0))


@pytest.fixture(scope="session", autouse=True)
def interruptible():
    """Ctrl-C (SIGINT) as in a terminal, also where the suite runs as a shell's background job.

    Such a job starts with SIGINT ignored, and so do the commands the tests start from it: the tests
    that send SIGINT, to a training step or a run on dask workers, would find it never arrives.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
