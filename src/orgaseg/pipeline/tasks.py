"""One block's work, wherever it runs: read with halo, features, sample rows or labels.

A :class:`BlockJob` holds everything a block needs (the input, the
normalisation, the dense-feature strategy, the working grid, optionally a
feature writer) and is sent to each worker once; :func:`sample_block`,
:func:`sample_whole_block` and :func:`label_block` are what an executor runs
per block. With a working grid (:mod:`orgaseg.pipeline.resample`) a block's
features are computed on the working grid, from the block's working voxels
and the extractor's halo around them, and interpolated back onto the
block's own input voxels. The input travels
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
from orgaseg.features.base import FeatureExtractor
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import Block, Region
from orgaseg.pipeline.resample import WorkingGrid


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
    def from_arguments(cls, data, volume: Volume, *, key=None, level: int = 0, axes=None, channel=None) -> "VolumeSource":
        """The source of ``volume``, opened from ``data`` (a path, or an array / Volume)."""
        from pathlib import Path

        if isinstance(data, (str, Path)):
            reopen = {"path": str(data), "key": key, "level": level, "axes": axes, "channel": channel,
                      "voxel_size": volume.voxel_size}
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
    grid : WorkingGrid, optional
        The working grid features are computed on (None: the input's own grid).
    features_out : object, optional
        A writer with ``write(region, features)`` (``--save-features``), used
        by :func:`label_block`.
    """

    source: VolumeSource
    normalization: Normalizer
    extractor: FeatureExtractor
    grid: WorkingGrid | None = None
    features_out: Any = None

    def features(self, block: Block) -> np.ndarray:
        """Features of the voxels ``block`` owns ``(z, y, x, F)``, computed with their context."""
        # strategies whose sampling grid is anchored to the volume (cover-and-stride) need the block's position
        if self.grid is None:
            raw = self.normalization.apply(self._read(block, block.read_region))
            features = self.extractor(raw, origin=tuple(r.start for r in block.read_region))
            return features[block.inner]
        features, start = self.working_features(block)
        return self.grid.to_input(features, start, block.region)

    def working_features(self, block: Block) -> tuple[np.ndarray, tuple[int, int, int]]:
        """With a working grid: the features of the working voxels ``block`` needs, and the first one's index."""
        working = self.grid.working_region(block.region, self.extractor.halo)
        raw = self.grid.read_working(lambda window: self._read(block, window).astype(np.float32), working)
        start = tuple(r.start for r in working)
        return self.extractor(self.normalization.apply(raw), origin=start), start

    def working_block(self, block: Block) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], tuple | None]:
        """Features and normalised intensities of the working voxels nearest to ``block``'s input voxels.

        For clusterers that work on the working grid (superpixel graphs).
        Returns ``(features (z, y, x, F), raw (z, y, x), working voxel size in
        nm, indices)``, where ``indices`` maps the block's input voxels to
        these working voxels (:meth:`WorkingGrid.nearest`; None without a grid).
        """
        if self.grid is None:
            return self.features(block), self.raw(block), tuple(self.source.volume.voxel_size), None
        owned, indices = self.grid.nearest(block.region)
        window = tuple(slice(max(0, s.start - h), min(n, s.stop + h))
                       for s, h, n in zip(owned, self.extractor.halo, self.grid.shape))
        raw = self.normalization.apply(
            self.grid.read_working(lambda w: self._read(block, w).astype(np.float32), window))
        features = self.extractor(raw, origin=tuple(w.start for w in window))
        crop = tuple(slice(o.start - w.start, o.stop - w.start) for o, w in zip(owned, window))
        return features[crop], raw[crop], tuple(self.grid.working_voxel_size), indices

    def raw(self, block: Block) -> np.ndarray:
        """Normalised intensities of the voxels ``block`` owns (for clusterers that read them)."""
        return self.normalization.apply(self._read(block, block.region))

    def _read(self, block: Block, region: Region) -> np.ndarray:
        volume = self.source.volume
        try:
            return volume.read(region)
        except Exception as err:  # any reader failure (a corrupt chunk, a vanished file) names its block
            raise OrgasegError(
                f"cannot read block {block.index} ({describe_region(region)}, with halo) of "
                f"{volume.path or 'the input'}: {type(err).__name__}: {err}"
            ) from None


@dataclass
class BlockResult:
    """What a block sends back: labels (one array per model) or sampled features, and timing."""

    value: Any
    seconds: float


def block_halo(extractor: FeatureExtractor, grid: WorkingGrid | None) -> tuple[int, int, int]:
    """Input voxels of context a block reads each side (with a grid: the extractor's halo in input voxels)."""
    if grid is None:
        return tuple(extractor.halo)
    return tuple(int(np.ceil((h + 2) * r)) + 2 for h, r in zip(extractor.halo, grid.factors))


def sample_block(job: BlockJob, block: Block, local: np.ndarray) -> BlockResult:
    """Features at the voxels ``local`` (coordinates relative to the block's corner)."""
    started = time.perf_counter()
    if job.grid is None:
        features = job.features(block)
        rows = features[local[:, 0], local[:, 1], local[:, 2]]
    else:  # interpolate at the sampled voxels only
        features, start = job.working_features(block)
        rows = job.grid.to_points(features, start, local + np.array([r.start for r in block.region]))
    return BlockResult(np.ascontiguousarray(rows, dtype=np.float32), time.perf_counter() - started)


def sample_whole_block(job: BlockJob, block: Block, working_grid: bool = False) -> BlockResult:
    """Features and normalised intensities of every voxel of ``block`` (clusterers fitted on whole blocks).

    With ``working_grid``: of the working voxels nearest to the block, with the working voxel size.
    """
    started = time.perf_counter()
    if working_grid:
        features, raw, voxel_size, _ = job.working_block(block)
        value = (np.ascontiguousarray(features, dtype=np.float32), raw, voxel_size)
    else:
        value = (np.ascontiguousarray(job.features(block), dtype=np.float32), job.raw(block))
    return BlockResult(value, time.perf_counter() - started)


def label_block(job: BlockJob, clusterers: Sequence, block: Block) -> BlockResult:
    """Labels of ``block`` under each clusterer; also saves its features when the job says so."""
    started = time.perf_counter()
    if getattr(clusterers[0], "working_grid", False):  # one run's clusterers are all of one kind
        if job.features_out is not None:
            job.features_out.write(block.region, job.features(block))
        features, raw, voxel_size, indices = job.working_block(block)
        labels = [clusterer.predict(features, raw, voxel_size=voxel_size) for clusterer in clusterers]
        if indices is not None:
            labels = [label[np.ix_(*indices)] for label in labels]
        return BlockResult(labels, time.perf_counter() - started)
    if job.grid is not None and job.features_out is None and all(getattr(c, "affine_scores", False) for c in clusterers):
        # scores affine in the features: interpolating them equals scoring the interpolated features
        features, start = job.working_features(block)
        labels = [clusterer.labels_from_scores(job.grid.to_input(clusterer.scores(features), start, block.region))
                  for clusterer in clusterers]
        return BlockResult(labels, time.perf_counter() - started)
    features = job.features(block)
    if job.features_out is not None:
        job.features_out.write(block.region, features)
    raw = job.raw(block) if any(c.needs_raw for c in clusterers) else None
    labels = [clusterer.predict(features, raw) for clusterer in clusterers]
    return BlockResult(labels, time.perf_counter() - started)


def describe_region(region: Region) -> str:
    """``z 0:4, y 0:512, x 512:1024``."""
    return ", ".join(f"{axis} {r.start}:{r.stop}" for axis, r in zip("zyx", region))
