"""The blockwise segmentation runner: sample features, fit, assign block by block.

Two passes over the blocks. The first gathers the features of a seeded
random sample of voxel coordinates, chosen before any block is read, so the
sample does not depend on the block shape or on where blocks run. The second
computes every block's features again, labels them with each fitted model
and hands the labels to one sink per model (a label writer, an in-memory
array, a confusion-matrix accumulator). No whole-volume feature array ever
exists. Both passes run their blocks on an executor
(:mod:`orgaseg.pipeline.executors`: serial, threads or dask), which only
changes where a block is computed; sinks are fed in this process as blocks
finish. With a :class:`~orgaseg.pipeline.resume.RunState`, a run stores its
clusterer, marks each finished block and skips blocks an earlier run of the
same settings finished.
"""

from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np

from orgaseg.cluster.kmeans import KMeansModel, fit_kmeans
from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import Block, Region, default_block_shape, make_blocks
from orgaseg.pipeline.executors import Executor, SerialExecutor
from orgaseg.pipeline.resume import RunState
from orgaseg.pipeline.tasks import BlockJob, FeatureExtractor, Normalizer, VolumeSource, label_block, sample_block
from orgaseg.progress import ProgressCallback, report

__all__ = [
    "ArraySink", "FeatureExtractor", "LabelSink", "Normalizer", "Tee", "assign_labels", "block_features",
    "cluster_volume", "fit_models", "plan_blocks", "resolve_block_shape", "sample_coordinates", "sample_features",
]

#: Bytes of float32 features one default block holds (features live one block at a time).
FEATURE_BYTES = 512 * 1024**2


class LabelSink(Protocol):
    def write(self, region: Region, block: np.ndarray) -> None:
        ...


class ArraySink:
    """Collects labels into an in-memory array (for small volumes and tests)."""

    def __init__(self, shape: tuple[int, int, int], dtype) -> None:
        self.array = np.zeros(shape, dtype=dtype)

    def write(self, region: Region, block: np.ndarray) -> None:
        self.array[region] = block


def sample_coordinates(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct voxel coordinates drawn uniformly with a seed, sorted.

    Returns all voxels when ``n`` is at least the volume's size.
    """
    total = int(np.prod(shape))
    if n <= 0:
        raise OrgasegError(f"the sample size must be positive, got {n}")
    if n >= total:
        flat = np.arange(total)
    else:
        flat = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return np.stack(np.unravel_index(flat, shape), axis=1)


def block_features(volume: Volume, normalization: Normalizer, extractor: FeatureExtractor, block: Block) -> np.ndarray:
    """Features of the voxels a block owns, computed with its halo."""
    return BlockJob(VolumeSource(volume), normalization, extractor).features(block)


def gather_features(
    job: BlockJob,
    coords: np.ndarray,
    blocks: Sequence[Block],
    executor: Executor,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Features at the given voxel coordinates, computed block by block on ``executor``.

    Only blocks that contain sampled voxels are computed.
    """
    out = np.empty((len(coords), job.extractor.n_features), dtype=np.float32)
    todo = []
    for block in blocks:
        starts = np.array([r.start for r in block.region])
        stops = np.array([r.stop for r in block.region])
        rows = np.flatnonzero(np.all((coords >= starts) & (coords < stops), axis=1))
        if rows.size:
            todo.append((block, rows, coords[rows] - starts))
    rows_of = {block.index: rows for block, rows, _ in todo}
    items = ((block, (block, local)) for block, _, local in todo)
    filled = 0
    meter = _Meter(progress, "sampling features", len(todo))
    for block, result in executor.map(sample_block, (job,), items):
        rows = rows_of[block.index]
        out[rows] = result.value
        filled += rows.size
        meter.step(block.size)
    assert filled == len(coords), "every sampled voxel lies in exactly one block"
    return out


class Tee:
    """Hands every labelled block to several sinks (e.g. a writer and a scorer)."""

    def __init__(self, *sinks: LabelSink) -> None:
        self.sinks = sinks

    def write(self, region: Region, block: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(region, block)


def resolve_block_shape(volume: Volume, extractor: FeatureExtractor, block_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """The block shape to use: ``block_shape`` clipped to the volume, or a default.

    The default block holds about ``FEATURE_BYTES`` of float32 features and
    is aligned to the input's storage chunks.
    """
    if block_shape is None:
        voxels = max(1, FEATURE_BYTES // (4 * extractor.n_features))
        return default_block_shape(volume.shape, volume.chunks, voxels=voxels)
    if len(block_shape) != 3 or min(block_shape) < 1:
        raise OrgasegError(f"block shape must be three positive sizes (z, y, x), got {tuple(block_shape)}")
    return tuple(min(int(b), s) for b, s in zip(block_shape, volume.shape))


def plan_blocks(volume: Volume, extractor: FeatureExtractor, block_shape: tuple[int, int, int] | None = None) -> list[Block]:
    """The blocks of ``volume`` with the halo ``extractor`` needs (see :func:`resolve_block_shape`)."""
    return make_blocks(volume.shape, resolve_block_shape(volume, extractor, block_shape), extractor.halo)


def sample_features(
    volume: Volume | VolumeSource,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    *,
    sample_size: int = 200_000,
    seed: int = 0,
    block_shape: tuple[int, int, int] | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Features of ``sample_size`` seeded random voxels, shape ``(n, n_features)``."""
    job = BlockJob(_source(volume), normalization, extractor)
    executor = executor or SerialExecutor()
    try:
        return _sample(job, sample_size, seed, block_shape, executor, progress)
    finally:
        executor.forget()


def _sample(job: BlockJob, sample_size, seed, block_shape, executor, progress) -> np.ndarray:
    volume = job.source.volume
    coords = sample_coordinates(volume.shape, sample_size, seed)
    return gather_features(job, coords, plan_blocks(volume, job.extractor, block_shape), executor, progress)


def fit_models(sample: np.ndarray, ks: Sequence[int], *, seed: int = 0, progress: ProgressCallback | None = None) -> list[KMeansModel]:
    """One k-means model per K on the same sample."""
    models = []
    for i, k in enumerate(ks, 1):
        models.append(fit_kmeans(sample, k, seed=seed))
        report(progress, "fitting k-means", i, len(ks))
    return models


def assign_labels(
    volume: Volume | VolumeSource,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    models: Sequence[KMeansModel],
    sinks: Sequence[LabelSink],
    *,
    block_shape: tuple[int, int, int] | None = None,
    executor: Executor | None = None,
    state: RunState | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Label every block with each model; ``sinks[i]`` receives model ``i``'s labels.

    Features are computed once per block, whatever the number of models.
    With ``state``, blocks it records as done are skipped and every block
    written is marked done once its sinks are flushed.
    """
    job = BlockJob(_source(volume), normalization, extractor)
    executor = executor or SerialExecutor()
    try:
        _assign(job, models, sinks, block_shape, executor, state, progress)
    finally:
        executor.forget()


def _assign(job: BlockJob, models, sinks, block_shape, executor, state, progress) -> None:
    if len(models) != len(sinks):
        raise ValueError("need one sink per model")
    for model in models:
        if model.n_features != job.extractor.n_features:
            raise OrgasegError(
                f"the given centres have {model.n_features} features but this method gives "
                f"{job.extractor.n_features}: centres must come from the same method and configuration"
            )
    blocks = plan_blocks(job.source.volume, job.extractor, block_shape)
    if state is not None:
        state.use_models(models)
        finished = [block for block in blocks if state.is_done(block)]
        state.skipped = len(finished)
        done_indices = {block.index for block in finished}
        blocks_todo = [block for block in blocks if block.index not in done_indices]
    else:
        blocks_todo = blocks
    meter = _Meter(progress, "labelling blocks", len(blocks), already=len(blocks) - len(blocks_todo))
    models = tuple(models)
    items = ((block, (block,)) for block in blocks_todo)
    for block, result in executor.map(label_block, (job, models), items):
        for labels, sink in zip(result.value, sinks):
            sink.write(block.region, labels)
        if state is not None:
            for sink in sinks:
                flush = getattr(sink, "flush", None)  # a writer: make the labels durable before the marker
                if flush is not None:
                    flush()
            state.mark_done(block, result.seconds)
        meter.step(block.size)


def cluster_volume(
    volume: Volume | VolumeSource,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    sinks: Sequence[LabelSink],
    *,
    ks: Sequence[int] | None = None,
    models: Sequence[KMeansModel] | None = None,
    seed: int = 0,
    sample_size: int = 200_000,
    block_shape: tuple[int, int, int] | None = None,
    executor: Executor | None = None,
    state: RunState | None = None,
    features_out=None,
    stats: dict | None = None,
    progress: ProgressCallback | None = None,
) -> list[KMeansModel]:
    """Fit k-means for each K on a feature sample of ``volume``, then label every block.

    Parameters
    ----------
    volume : Volume or VolumeSource
        The volume to segment (a :class:`VolumeSource` lets dask workers reopen it).
    normalization : object with ``apply(block)``
        Intensity normalisation applied to raw blocks.
    extractor : FeatureExtractor
        Dense-feature strategy.
    sinks : sequence of LabelSink
        One per K (or per given model); receives ``write(region, labels)``.
    ks : sequence of int, optional
        Cluster counts to fit. Exactly one of ``ks`` and ``models`` is given.
    models : sequence of KMeansModel, optional
        Already fitted models (e.g. centres reused from another volume).
    seed : int
        Seed of the voxel sample and of k-means.
    sample_size : int
        Number of voxels whose features are sampled for fitting.
    block_shape : tuple of int, optional
        Block shape; default from :func:`resolve_block_shape`.
    executor : Executor, optional
        Where blocks run (default: serially, here).
    state : RunState, optional
        Resume state: a clusterer it holds is reused instead of refitted (a
        fitted one is stored in it), finished blocks are skipped, new ones marked.
    features_out : object, optional
        Writer with ``write(region, features)``: every block's features are saved.
    stats : dict, optional
        Filled with seconds per phase (``sampling_s``, ``fitting_s``,
        ``labelling_s``) and block counts (``blocks``, and with ``state``
        ``computed`` and ``skipped``).
    progress : callable, optional
        Progress callback ``(description, done, total, **figures)``.

    Returns
    -------
    list of KMeansModel
        The models used, in the order of ``sinks``.
    """
    if (ks is None) == (models is None):
        raise ValueError("give exactly one of ks and models")
    executor = executor or SerialExecutor()
    try:
        return _cluster(_source(volume), normalization, extractor, sinks, ks, models, seed, sample_size, block_shape,
                        executor, state, features_out, {} if stats is None else stats, progress)
    finally:
        executor.forget()  # the job (with its encoder) was sent once for both passes


def _cluster(source, normalization, extractor, sinks, ks, models, seed, sample_size, block_shape, executor, state,
             features_out, stats, progress) -> list[KMeansModel]:
    job = BlockJob(source, normalization, extractor, features_out)
    if models is None and state is not None:
        models = state.load_models()
    if models is None:
        for k in ks:
            if k > source.volume.size:
                raise OrgasegError(f"K = {k} is larger than the volume ({source.volume.size} voxels)")
        started = time.perf_counter()
        sample = _sample(job, sample_size, seed, block_shape, executor, progress)
        stats["sampling_s"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        models = fit_models(sample, ks, seed=seed, progress=progress)
        stats["fitting_s"] = round(time.perf_counter() - started, 3)
        del sample
        if state is not None:
            state.save_models(models)
    started = time.perf_counter()
    _assign(job, models, sinks, block_shape, executor, state, progress)
    stats["labelling_s"] = round(time.perf_counter() - started, 3)
    stats["blocks"] = len(plan_blocks(source.volume, extractor, block_shape))
    if state is not None:
        stats.update(state.counts())
    return list(models)


def _source(volume: Volume | VolumeSource) -> VolumeSource:
    return volume if isinstance(volume, VolumeSource) else VolumeSource(volume)


class _Meter:
    """One progress bar over blocks, with the voxels per second of the blocks done so far."""

    def __init__(self, progress: ProgressCallback | None, description: str, total: int, already: int = 0) -> None:
        self.progress, self.description, self.total = progress, description, total
        self.done = already
        self.voxels = 0
        self.started = time.perf_counter()
        if already:
            report(progress, description, already, total)

    def step(self, voxels: int) -> None:
        self.done += 1
        self.voxels += voxels
        rate = self.voxels / max(time.perf_counter() - self.started, 1e-9)
        report(self.progress, self.description, self.done, self.total, voxels_per_s=round(rate))
