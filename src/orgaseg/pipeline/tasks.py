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

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.features.base import FeatureExtractor
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import Block, Region, default_block_shape, make_blocks
from orgaseg.pipeline.resample import WorkingGrid

#: Bytes of input-grid features a block interpolates at once for clusterers without affine scores.
SLAB_BYTES = 64 * 1024**2


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


class FeatureCache:
    """Feature arrays kept between the passes of one run, up to ``max_bytes``.

    A run computes each block's features in its sampling (or training) pass and
    again in its labelling pass; on a volume whose features fit in memory the
    second computation can be skipped. Entries are keyed by the window the
    features were computed from (and the part of it they cover, see
    :meth:`BlockJob._extract`) and live on one :class:`BlockJob`, whose
    normalisation and extractor are fixed, so an entry is never stale. Arrays
    beyond the budget are not kept (they are computed again). Stored arrays are
    read-only: a consumer that changed one in place would change the next pass.
    A cache does not travel to other processes: a pickled cache arrives empty
    and keeps nothing (each dask worker would otherwise hold its own copy).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.used = 0
        self.hits = 0
        self._entries: dict = {}
        self._running: dict = {}  # keys being computed, with the event their threads set when done
        self._lock = threading.Lock()

    def get(self, key, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The array stored under ``key``, or ``compute()`` (kept when it fits the budget).

        A key being computed in another thread (blocks whose halos make the
        same window) is waited for rather than computed twice.
        """
        if self.max_bytes <= 0:
            return compute()
        with self._lock:
            found = self._lookup(key)
            if found is not None:
                return found
            running = self._running.get(key)
            if running is None:
                self._running[key] = threading.Event()
        if running is not None:
            running.wait()
            with self._lock:
                found = self._lookup(key)
            return found if found is not None else compute()  # it did not fit (or failed): compute it here
        try:
            value = compute()
            with self._lock:
                if self.used + value.nbytes <= self.max_bytes:
                    value.flags.writeable = False
                    self._entries[key] = value
                    self.used += value.nbytes
            return value
        finally:
            with self._lock:
                self._running.pop(key).set()

    def _lookup(self, key) -> np.ndarray | None:
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
        return found

    def __reduce__(self):
        return FeatureCache, (0,)


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
    plane_tile_nm : float, optional
        Side in nm of the square regions the clusterer cuts each plane of a
        block into (superpixel graphs): default blocks span whole numbers of
        them in y and x where that costs little
        (:func:`~orgaseg.pipeline.runner.resolve_block_shape`).
    cache : FeatureCache or None
        Set by :func:`reusing_features` for the passes of one run (not an
        argument: a job made from this one with :func:`dataclasses.replace`,
        e.g. with other features, starts without it).
    """

    source: VolumeSource
    normalization: Normalizer
    extractor: FeatureExtractor
    grid: WorkingGrid | None = None
    features_out: Any = None
    plane_tile_nm: float | None = None
    cache: FeatureCache | None = field(default=None, init=False, repr=False, compare=False)

    def features(self, block: Block) -> np.ndarray:
        """Features of the voxels ``block`` owns ``(z, y, x, F)``, computed with their context."""
        if self.grid is None:
            return self._extract("input", block.read_region, block.region,
                                 lambda: self.normalization.apply(self._read(block, block.read_region)))
        features, start = self.working_features(block)
        return self.grid.to_input(features, start, block.region)

    def working_features(self, block: Block) -> tuple[np.ndarray, tuple[int, int, int]]:
        """With a working grid: the features of the working voxels ``block`` needs, and the first one's index."""
        window = self.grid.working_region(block.region, self.extractor.halo)
        needed = self.grid.working_region(block.region)
        features = self._extract("working", window, needed, lambda: self.normalization.apply(
            self.grid.read_working(lambda w: self._read(block, w).astype(np.float32), window)))
        return features, tuple(r.start for r in needed)

    def computed_region(self, block: Block) -> Region:
        """What the extractor computes for ``block`` (absolute, on its grid): the part it needs, or its whole window.

        An extractor that ``keeps_region`` computes only the voxels the block
        needs; any other one computes them with their context. What the cost
        estimate counts (:func:`orgaseg.pipeline.cost.estimate_cost`).
        """
        if self.grid is None:
            window, part = block.read_region, block.region
        else:
            window = self.grid.working_region(block.region, self.extractor.halo)
            part = self.grid.working_region(block.region)
        return part if getattr(self.extractor, "keeps_region", False) else window

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
        features = self._extract("working", window, owned, lambda: raw)
        return features, raw[_within(owned, window)], tuple(self.grid.working_voxel_size), indices

    def _extract(self, grid: str, window: Region, part: Region, read: Callable[[], np.ndarray]) -> np.ndarray:
        """The extractor's features of ``part`` with ``window`` as context (both absolute, on ``grid``).

        ``read()`` gives the window's normalised intensities. An extractor that
        says ``keeps_region`` computes the part only (the filter bank: far less
        memory and time when the context is wide); any other one computes the
        whole window, of which the part is a view. Through the run's cache if
        any: keyed by the window and the part, or by the window alone when the
        whole window is computed (blocks whose halos make the same window then
        share one computation).
        """
        origin = tuple(w.start for w in window)  # strategies anchored to the volume (cover-and-stride) need it
        local = _within(part, window)
        span = tuple((r.start, r.stop) for r in window)
        if getattr(self.extractor, "keeps_region", False):
            def compute_part() -> np.ndarray:
                return self.extractor(read(), origin=origin, keep=local)

            key = (grid, span, tuple((r.start, r.stop) for r in part))
            return compute_part() if self.cache is None else self.cache.get(key, compute_part)

        def compute_window() -> np.ndarray:
            return self.extractor(read(), origin=origin)

        return (compute_window() if self.cache is None else self.cache.get((grid, span), compute_window))[local]

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


def _within(part: Region, window: Region) -> Region:
    """``part`` (absolute) relative to ``window``'s first voxel."""
    return tuple(slice(p.start - w.start, p.stop - w.start) for p, w in zip(part, window))


@contextmanager
def reusing_features(jobs: Sequence[BlockJob], max_bytes: int) -> Iterator[list[FeatureCache]]:
    """Keep up to ``max_bytes`` of features (split evenly over ``jobs``) for the passes run inside, then free them."""
    caches = [FeatureCache(max_bytes // max(1, len(jobs))) for _ in jobs]
    for job, cache in zip(jobs, caches):
        job.cache = cache
    try:
        yield caches
    finally:
        for job in jobs:
            job.cache = None


@dataclass
class BlockResult:
    """What a block sends back: labels (one array per model) or sampled features, and timing."""

    value: Any
    seconds: float


def block_halo(extractor: FeatureExtractor, grid: WorkingGrid | None) -> tuple[int, int, int]:
    """Input voxels of context a block reads each side (with a grid: the extractor's halo in input voxels).

    Along an axis the grid resamples, the halo grows by the interpolation's
    and the anti-aliasing's reach; along one it keeps (the z of an anisotropic
    stack) the working voxels are the input's and it stays the extractor's.
    """
    if grid is None:
        return tuple(extractor.halo)
    return tuple(h if r == 1.0 else int(np.ceil((h + 2) * r)) + 2 for h, r in zip(extractor.halo, grid.factors))


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
    if job.grid is not None and job.features_out is None:
        features, start = job.working_features(block)
        if all(getattr(c, "affine_scores", False) for c in clusterers):
            # scores affine in the features: interpolating them equals scoring the interpolated features
            labels = [clusterer.labels_from_scores(job.grid.to_input(clusterer.scores(features), start, block.region))
                      for clusterer in clusterers]
        else:
            labels = _labels_by_slab(job, clusterers, block, features, start)
        return BlockResult(labels, time.perf_counter() - started)
    features = job.features(block)
    if job.features_out is not None:
        job.features_out.write(block.region, features)
    raw = job.raw(block) if any(c.needs_raw for c in clusterers) else None
    labels = [clusterer.predict(features, raw) for clusterer in clusterers]
    return BlockResult(labels, time.perf_counter() - started)


def _labels_by_slab(job: BlockJob, clusterers: Sequence, block: Block, features: np.ndarray,
                    start: tuple[int, int, int]) -> list[np.ndarray]:
    """Labels of ``block`` from its working-grid ``features``, interpolated onto the input grid a slab at a time.

    The clusterers label voxel by voxel, so the labels are those of the whole block's interpolated features;
    those would hold every channel of every input voxel at once (gigabytes for a refined classifier's context
    features on a coarse working grid), a slab at most :data:`SLAB_BYTES`.
    """
    raw = job.raw(block) if any(c.needs_raw for c in clusterers) else None
    shape = tuple(r.stop - r.start for r in block.region)
    voxels = max(1, SLAB_BYTES // (4 * features.shape[-1]))
    labels: list[np.ndarray | None] = [None] * len(clusterers)
    for slab in make_blocks(shape, default_block_shape(shape, voxels=voxels)):
        region = tuple(slice(r.start + s.start, r.start + s.stop) for r, s in zip(block.region, slab.region))
        needed = job.grid.working_region(region)
        crop = features[tuple(slice(n.start - s, n.stop - s) for n, s in zip(needed, start))]
        slab_features = job.grid.to_input(crop, tuple(n.start for n in needed), region)
        for i, clusterer in enumerate(clusterers):
            values = clusterer.predict(slab_features, None if raw is None else raw[slab.region])
            if labels[i] is None:
                labels[i] = np.empty(shape, dtype=values.dtype)
            labels[i][slab.region] = values
    return labels


def describe_region(region: Region) -> str:
    """``z 0:4, y 0:512, x 512:1024``."""
    return ", ".join(f"{axis} {r.start}:{r.stop}" for axis, r in zip("zyx", region))
