"""The blockwise segmentation runner: sample features, fit, assign block by block.

Two passes over the blocks. The first gathers the features of a seeded
random sample of voxel coordinates, chosen before any block is read, so the
sample does not depend on the block shape. The second computes every block's
features again, labels them with each fitted model and hands the labels to
one sink per model (a label writer, an in-memory array, a confusion-matrix
accumulator). No whole-volume feature array ever exists.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from orgaseg.cluster.kmeans import KMeansModel, fit_kmeans
from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import Block, Region, default_block_shape, make_blocks
from orgaseg.progress import ProgressCallback, report

#: Bytes of float32 features one default block holds (features live one block at a time).
FEATURE_BYTES = 512 * 1024**2


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
    raw = volume.read(block.read_region)
    # strategies whose sampling grid is anchored to the volume (cover-and-stride) need the block's position
    features = extractor(normalization.apply(raw), origin=tuple(r.start for r in block.read_region))
    return features[block.inner]


def gather_features(
    volume: Volume,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    coords: np.ndarray,
    blocks: Sequence[Block],
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Features at the given voxel coordinates, computed block by block.

    Only blocks that contain sampled voxels are computed.
    """
    out = np.empty((len(coords), extractor.n_features), dtype=np.float32)
    filled = 0
    todo = []
    for block in blocks:
        starts = np.array([r.start for r in block.region])
        stops = np.array([r.stop for r in block.region])
        rows = np.flatnonzero(np.all((coords >= starts) & (coords < stops), axis=1))
        if rows.size:
            todo.append((block, rows, starts))
    for done, (block, rows, starts) in enumerate(todo, 1):
        features = block_features(volume, normalization, extractor, block)
        local = coords[rows] - starts
        out[rows] = features[local[:, 0], local[:, 1], local[:, 2]]
        filled += rows.size
        report(progress, "sampling features", done, len(todo))
    assert filled == len(coords), "every sampled voxel lies in exactly one block"
    return out


class Tee:
    """Hands every labelled block to several sinks (e.g. a writer and a scorer)."""

    def __init__(self, *sinks: LabelSink) -> None:
        self.sinks = sinks

    def write(self, region: Region, block: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(region, block)


def plan_blocks(volume: Volume, extractor: FeatureExtractor, block_shape: tuple[int, int, int] | None = None) -> list[Block]:
    """The blocks of ``volume`` with the halo ``extractor`` needs.

    The default block holds about ``FEATURE_BYTES`` of float32 features.
    """
    if block_shape is None:
        voxels = max(1, FEATURE_BYTES // (4 * extractor.n_features))
        block_shape = default_block_shape(volume.shape, volume.chunks, voxels=voxels)
    return make_blocks(volume.shape, block_shape, extractor.halo)


def sample_features(
    volume: Volume,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    *,
    sample_size: int = 200_000,
    seed: int = 0,
    block_shape: tuple[int, int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Features of ``sample_size`` seeded random voxels, shape ``(n, n_features)``."""
    coords = sample_coordinates(volume.shape, sample_size, seed)
    return gather_features(volume, normalization, extractor, coords, plan_blocks(volume, extractor, block_shape), progress)


def fit_models(sample: np.ndarray, ks: Sequence[int], *, seed: int = 0, progress: ProgressCallback | None = None) -> list[KMeansModel]:
    """One k-means model per K on the same sample."""
    models = []
    for i, k in enumerate(ks, 1):
        models.append(fit_kmeans(sample, k, seed=seed))
        report(progress, "fitting k-means", i, len(ks))
    return models


def assign_labels(
    volume: Volume,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    models: Sequence[KMeansModel],
    sinks: Sequence[LabelSink],
    *,
    block_shape: tuple[int, int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Label every block with each model; ``sinks[i]`` receives model ``i``'s labels.

    Features are computed once per block, whatever the number of models.
    """
    if len(models) != len(sinks):
        raise ValueError("need one sink per model")
    for model in models:
        if model.n_features != extractor.n_features:
            raise OrgasegError(
                f"the given centres have {model.n_features} features but this method gives "
                f"{extractor.n_features}: centres must come from the same method and configuration"
            )
    blocks = plan_blocks(volume, extractor, block_shape)
    for done, block in enumerate(blocks, 1):
        features = block_features(volume, normalization, extractor, block)
        for model, sink in zip(models, sinks):
            sink.write(block.region, model.predict(features))
        report(progress, "assigning labels", done, len(blocks))


def cluster_volume(
    volume: Volume,
    normalization: Normalizer,
    extractor: FeatureExtractor,
    sinks: Sequence[LabelSink],
    *,
    ks: Sequence[int] | None = None,
    models: Sequence[KMeansModel] | None = None,
    seed: int = 0,
    sample_size: int = 200_000,
    block_shape: tuple[int, int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> list[KMeansModel]:
    """Fit k-means for each K on a feature sample of ``volume``, then label every block.

    Parameters
    ----------
    volume : Volume
        The volume to segment.
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
        Block shape; default from :func:`default_block_shape`.
    progress : callable, optional
        Progress callback ``(description, done, total)``.

    Returns
    -------
    list of KMeansModel
        The models used, in the order of ``sinks``.
    """
    if (ks is None) == (models is None):
        raise ValueError("give exactly one of ks and models")
    if models is None:
        for k in ks:
            if k > volume.size:
                raise OrgasegError(f"K = {k} is larger than the volume ({volume.size} voxels)")
        sample = sample_features(volume, normalization, extractor, sample_size=sample_size, seed=seed,
                                 block_shape=block_shape, progress=progress)
        models = fit_models(sample, ks, seed=seed, progress=progress)
    assign_labels(volume, normalization, extractor, models, sinks, block_shape=block_shape, progress=progress)
    return list(models)
