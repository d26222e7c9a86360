"""One block's work, wherever it runs: read with halo, features, sample rows or labels.

A :class:`BlockJob` holds everything a block needs (the input, the
normalisation, the dense-feature strategy, optionally a feature writer) and
is sent to each worker once; the functions :func:`sample_block` and
:func:`label_block` are what an executor runs per block. The input travels
as a :class:`VolumeSource`: a volume opened from a path pickles as the
arguments that reopen it, because the open file handles behind a volume
(HDF5, compressed TIFF) do not pickle.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import Block, Region


class FeatureExtractor(Protocol):
    """A dense-feature strategy: normalised block in, per-voxel features out."""

    halo: tuple[int, int, int]
    n_features: int

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """(z, y, x) -> (z, y, x, F); ``origin`` is the absolute position of ``block[0, 0, 0]``."""
        ...

    def config(self) -> dict:
        ...


class Normalizer(Protocol):
    def apply(self, block: np.ndarray) -> np.ndarray:
        ...


class VolumeSource:
    """The input volume and, when it came from a path, how to open it again elsewhere.

    Parameters
    ----------
    volume : Volume
        The open volume (used in this process).
    reopen : dict, optional
        Keyword arguments of :func:`orgaseg.io.open_volume` that give the same
        volume (``path``, ``key``, ``level``, ``axes``, ``voxel_size``). With
        them the source pickles as these arguments and reopens lazily on
        arrival; without them the volume itself is pickled (fine for numpy and
        zarr arrays; other arrays fail with a clear error from the executor).
    """

    def __init__(self, volume: Volume, reopen: dict | None = None) -> None:
        self._volume = volume
        self.reopen = reopen

    @classmethod
    def from_arguments(cls, data, volume: Volume, *, key=None, level: int = 0, axes=None) -> "VolumeSource":
        """The source of ``volume``, opened from ``data`` (a path, or an array / Volume)."""
        from pathlib import Path

        if isinstance(data, (str, Path)):
            reopen = {"path": str(data), "key": key, "level": level, "axes": axes, "voxel_size": volume.voxel_size}
            return cls(volume, reopen)
        return cls(volume)

    @property
    def volume(self) -> Volume:
        if self._volume is None:
            from orgaseg.io import open_volume

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the client already warned about anything in the metadata
                self._volume = open_volume(**self.reopen)
        return self._volume

    def __getstate__(self) -> dict:
        if self.reopen is not None:
            return {"_volume": None, "reopen": self.reopen}
        return dict(self.__dict__)


@dataclass
class BlockJob:
    """What every block of one run shares; sent to each worker once.

    Attributes
    ----------
    source : VolumeSource
        The input.
    normalization : Normalizer
        Intensity normalisation of raw blocks.
    extractor : FeatureExtractor
        The dense-feature strategy.
    features_out : object, optional
        A writer with ``write(region, features)`` (``--save-features``), used
        by :func:`label_block`.
    """

    source: VolumeSource
    normalization: Normalizer
    extractor: FeatureExtractor
    features_out: Any = None

    def features(self, block: Block) -> np.ndarray:
        """Features of the voxels ``block`` owns, computed with its halo."""
        volume = self.source.volume
        try:
            raw = volume.read(block.read_region)
        except Exception as err:  # any reader failure (a corrupt chunk, a vanished file) names its block
            raise OrgasegError(
                f"cannot read block {block.index} ({describe_region(block.read_region)}, with halo) of "
                f"{volume.path or 'the input'}: {type(err).__name__}: {err}"
            ) from None
        # strategies whose sampling grid is anchored to the volume (cover-and-stride) need the block's position
        features = self.extractor(self.normalization.apply(raw), origin=tuple(r.start for r in block.read_region))
        return features[block.inner]


@dataclass
class BlockResult:
    """What a block sends back: labels (one array per model) or sampled features, and timing."""

    value: Any
    seconds: float


def sample_block(job: BlockJob, block: Block, local: np.ndarray) -> BlockResult:
    """Features at the voxels ``local`` (coordinates relative to the block's corner)."""
    started = time.perf_counter()
    features = job.features(block)
    rows = features[local[:, 0], local[:, 1], local[:, 2]]
    return BlockResult(np.ascontiguousarray(rows, dtype=np.float32), time.perf_counter() - started)


def label_block(job: BlockJob, models: Sequence, block: Block) -> BlockResult:
    """Labels of ``block`` under each model; also saves its features when the job says so."""
    started = time.perf_counter()
    features = job.features(block)
    if job.features_out is not None:
        job.features_out.write(block.region, features)
    labels = [model.predict(features) for model in models]
    return BlockResult(labels, time.perf_counter() - started)


def describe_region(region: Region) -> str:
    """``z 0:4, y 0:512, x 512:1024``."""
    return ", ".join(f"{axis} {r.start}:{r.stop}" for axis, r in zip("zyx", region))
