"""The blockwise runner: one road from volumes to labels for ``segment``, ``benchmark`` and ``demo``.

Two passes over the blocks. The first gathers the clusterer's sample: for
clusterers fitted on voxels, the features of a seeded random sample of voxel
coordinates chosen before any block is read (so the sample does not depend
on the block shape or on where blocks run); for clusterers fitted on whole
blocks, a seeded choice of blocks. The sample may be pooled over several
volumes (a benchmark fits one clusterer on all its evaluation volumes, so
ids mean the same in each). Pieces reach the clusterer in a fixed order
whatever executor computed them, so a run is reproducible. The second pass
computes every block's features again, labels them with each fitted
clusterer and hands the labels to one sink per clusterer (a label writer, an
in-memory array, a confusion-matrix accumulator). Beyond the cache below, no
whole-volume feature array ever exists. Both passes run their blocks on an executor
(:mod:`orgaseg.pipeline.executors`: serial, threads or dask), which only
changes where a block is computed; sinks are fed in this process as blocks
finish. With a :class:`~orgaseg.pipeline.resume.RunState`, a run stores its
clusterer, marks each finished block and skips blocks an earlier run of the
same settings finished.

The second pass need not compute every block's features again: up to
``FEATURE_CACHE_BYTES`` (or a run's ``feature_memory``) of the first pass's features are kept in memory
(:func:`~orgaseg.pipeline.tasks.reusing_features`) and read back, so a volume
whose features fit there (the demo, a crop) is featurised once. Blocks beyond
that budget, and blocks computed on dask workers, are computed again.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from orgaseg.cluster.base import Clusterer, ClustererSpec
from orgaseg.errors import OrgasegError, OrgasegWarning, about_volume, arg
from orgaseg.features.base import FeatureExtractor
from orgaseg.pipeline.blocks import Block, Region, SpanCost, block_overhead, halo_block_shape, make_blocks
from orgaseg.pipeline.executors import Executor, SerialExecutor, ThreadExecutor
from orgaseg.pipeline.resume import RunState
from orgaseg.pipeline.tasks import (
    BlockJob, Normalizer, block_halo, label_block, reusing_features, sample_block, sample_whole_block,
)
from orgaseg.progress import ProgressCallback, report
from orgaseg.threads import one_thread

__all__ = [
    "ArraySink", "BlockJob", "FeatureExtractor", "LabelSink", "Normalizer", "Tee", "cluster_volume",
    "fit_clusterers", "kept_feature_bytes", "label_volume", "plan_blocks", "resolve_block_shape", "sample_coordinates",
]

#: Bytes of float32 features one default block holds (features live one block at a time).
FEATURE_BYTES = 512 * 1024**2

#: Bytes of features a run keeps from its sampling pass for its labelling pass (see the module's docstring).
FEATURE_CACHE_BYTES = 2 * FEATURE_BYTES


def kept_feature_bytes(executor: Executor, fitting: bool, feature_memory: int | None = None) -> int:
    """Bytes of features a run keeps between its passes: none without a sampling pass or on other processes.

    ``feature_memory`` is the budget in bytes (default :data:`FEATURE_CACHE_BYTES`; 0 keeps none).
    """
    budget = FEATURE_CACHE_BYTES if feature_memory is None else check_feature_memory(feature_memory)
    return budget if fitting and executor.in_process else 0


def check_feature_memory(value) -> int:
    """A feature-memory budget as a whole number of bytes, 0 or more, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise OrgasegError(f"{arg('feature_memory')} must be a number of bytes, 0 or more (0 keeps no features), "
                           f"got {value!r}")
    return int(value)

#: Sampled voxels a clusterer needs per cluster: fewer cannot place K centres meaningfully
#: (``-k 100000`` on a 200,000-voxel sample is a typo, not a segmentation).
MIN_SAMPLE_PER_CLUSTER = 10


class LabelSink(Protocol):
    def write(self, region: Region, block: np.ndarray) -> None:
        ...


class ArraySink:
    """Collects labels into an in-memory array (for small volumes and tests)."""

    def __init__(self, shape: tuple[int, int, int], dtype) -> None:
        self.array = np.zeros(shape, dtype=dtype)

    def write(self, region: Region, block: np.ndarray) -> None:
        self.array[region] = block


class Tee:
    """Hands every labelled block to several sinks (e.g. a writer and a scorer)."""

    def __init__(self, *sinks: LabelSink) -> None:
        self.sinks = sinks

    def write(self, region: Region, block: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(region, block)


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


#: How much more than the unconstrained default blocks the blocks of whole regions may compute, counted in
#: window voxels, which overstate the time (docs/performance.md); the window's memory is bounded apart.
WHOLE_REGION_OVERHEAD = 8.0


def _whole_region_blocks(job: BlockJob, best: tuple[int, int, int], halo, voxels: int, chunks, costs,
                         warn: bool) -> tuple[int, int, int]:
    """Default blocks whose y and x sides are whole regions of ``job.plane_tile_nm`` (or the whole axis).

    A block edge cuts the regions next to it short (a block narrower than a region gets regions as narrow),
    so blocks of whole regions are taken where they keep the feature budget, read a window (the block and
    its halo, as float32 with one filtered copy) of at most twice the budget's bytes, and compute at most
    :data:`WHOLE_REGION_OVERHEAD` times what ``best``, the unconstrained default, does. On an isotropic
    volume with large planes they do not (a whole region leaves room for a few planes, each reading the
    features' context along z): ``best`` is kept, and said.
    """
    volume = job.source.volume
    tile = tuple(max(1, round(job.plane_tile_nm / size)) for size in volume.voxel_size[1:])
    whole = halo_block_shape(volume.shape, halo, voxels, ((chunks or (1, 1, 1))[0], *tile), costs=costs)
    window = np.prod([min(n, b + 2 * h) for n, b, h in zip(volume.shape, whole, halo)], dtype=np.float64)
    work, least = (block_overhead(volume.shape, shape, halo, costs) for shape in (whole, best))
    held = float(np.prod(whole, dtype=np.float64)) / voxels
    reasons = [text for failed, text in (
        (held > 1, f"hold {held:.1f} times the feature budget"),
        (8 * window > 2 * FEATURE_BYTES, f"read windows of {8 * window / 2**30:.1f} GiB"),
        (work > WHOLE_REGION_OVERHEAD * least,
         f"compute {work:.1f} times the volume's work, against {least:.1f} for the blocks used"),
    ) if failed]
    if not reasons:
        return whole
    if warn:
        cut = [min(b, t) for b, t in zip(best[1:], tile)]
        warnings.warn(OrgasegWarning(
            f"the clusterer's regions of {job.plane_tile_nm:g} nm ({tile[0]} x {tile[1]} voxels) do not fit the "
            f"memory budget's blocks on this volume: blocks of whole regions ({' x '.join(map(str, whole))}) would "
            f"{' and '.join(reasons)}; regions are cut to blocks of {' x '.join(map(str, best))} voxels, so at most "
            f"{cut[0]} x {cut[1]}; a smaller region_nm option, features with less context along z, or "
            f"{arg('block_shape')} of whole regions (e.g. {' x '.join(map(str, whole))}, at that cost) keeps "
            "them whole"),
            stacklevel=3)
    return best


def resolve_block_shape(job: BlockJob, block_shape: tuple[int, int, int] | None = None, *,
                        warn: bool = True) -> tuple[int, int, int]:
    """The block shape to use: ``block_shape`` clipped to the job's volume, or a default.

    With ``warn``, a given ``block_shape`` whose blocks compute far more than
    the default's is warned about (once per run: :func:`plan_blocks`, called
    at every pass, does not warn).

    The default block holds at most ``FEATURE_BYTES`` of float32 features,
    is aligned to the input's storage chunks (for an encoder, along the
    axes where its context is under half a chunk), and is shaped so that its
    blocks compute the fewest voxels with the context (halo) the features
    need (:func:`~orgaseg.pipeline.blocks.halo_block_shape`), or, for an
    encoder that computes only a block's own part, encode the fewest fields
    of view (:func:`encoder_span_costs`). For a clusterer that cuts each
    plane into square regions (``job.plane_tile_nm``), y and x sides of whole
    regions where that costs little (:func:`_whole_region_blocks`).
    """
    volume = job.source.volume
    halo = block_halo(job.extractor, job.grid)
    voxels = max(1, FEATURE_BYTES // (4 * job.extractor.n_features))
    costs, chunks = encoder_span_costs(job), volume.chunks
    if costs is not None and chunks is not None:
        # where a block's window reaches half a chunk past it, it reads partial chunks however the block is
        # aligned: there the side is free to meet the encoder's grid (along an axis without context it is not)
        chunks = tuple(1 if h >= c / 2 else c for h, c in zip(halo, chunks))
    if block_shape is None:
        best = halo_block_shape(volume.shape, halo, voxels, chunks, costs=costs)
        return best if job.plane_tile_nm is None else _whole_region_blocks(job, best, halo, voxels, chunks, costs,
                                                                           warn)
    if len(block_shape) != 3 or min(block_shape) < 1:
        raise OrgasegError(f"block shape must be three positive sizes (z, y, x), got {tuple(block_shape)}")
    block_shape = tuple(min(int(b), s) for b, s in zip(block_shape, volume.shape))
    if not warn:
        return block_shape
    default = halo_block_shape(volume.shape, halo, voxels, chunks, costs=costs)
    given, best = (block_overhead(volume.shape, shape, halo, costs) for shape in (block_shape, default))
    if given > max(2.0, 4 * best):
        if costs is None:
            what = (f"read {' x '.join(map(str, halo))} voxels of context each side: the blocks compute about "
                    f"{given:.0f} times the volume's voxels")
        else:  # an encoder pays for the fields of view its blocks' borders share, not for the halo
            what = f"encode about {given:.0f} times the fields of view that one pass over the volume would"
        warnings.warn(OrgasegWarning(
            f"blocks of {' x '.join(map(str, block_shape))} {what} ({best:.1f} with the default blocks of "
            f"{' x '.join(map(str, default))}); a larger {arg('block_shape')}, or none, is faster"), stacklevel=2)
    return block_shape


def encoder_span_costs(job: BlockJob) -> list[tuple[SpanCost, SpanCost, SpanCost]] | None:
    """The fields of view a block of ``job`` encodes, per axis of the input (see :func:`halo_block_shape`).

    For an extractor that encodes only the fields of view serving a block's
    own voxels (``keeps_region`` and ``fields_of_view_axes``); None for any
    other, whose blocks are priced by their windows. With a working grid a
    block's span is the working voxels it interpolates from.
    """
    extractor = job.extractor
    if not (getattr(extractor, "keeps_region", False) and hasattr(extractor, "fields_of_view_axes")):
        return None

    def on_input(count, axis: int) -> SpanCost:
        if job.grid is None:
            return lambda start, stop: count(stop - start, start)

        def cost(start: int, stop: int) -> int:
            first, last = job.grid.working_span(axis, start, stop)
            return count(last - first, first)
        return cost

    return [tuple(on_input(count, axis) for axis, count in enumerate(term)) for term in extractor.fields_of_view_axes()]


def plan_blocks(job: BlockJob, block_shape: tuple[int, int, int] | None = None) -> list[Block]:
    """The blocks of a job's volume, with the context its features need (see :func:`resolve_block_shape`)."""
    volume = job.source.volume
    return make_blocks(volume.shape, resolve_block_shape(job, block_shape, warn=False),
                       block_halo(job.extractor, job.grid))


def fit_clusterers(
    jobs: Sequence[BlockJob],
    spec: ClustererSpec,
    ks: Sequence[int],
    *,
    options: dict | None = None,
    sample_size: int = 200_000,
    seed: int = 0,
    block_shape: tuple[int, int, int] | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> list[Clusterer]:
    """Fit one clusterer per K on a sample pooled over ``jobs`` (one job per volume).

    The sample is split over the volumes in proportion to their size; volume
    ``i`` is sampled with seed ``seed + i``. Each piece of the sample goes to
    every K's fit, so features are computed once for all K.

    Parameters
    ----------
    jobs : sequence of BlockJob
        The volumes, with their normalisation, features and working grid.
    spec : ClustererSpec
        The clusterer.
    ks : sequence of int
        Cluster counts.
    options : dict, optional
        The clusterer's options.
    sample_size : int
        Voxels in the pooled sample (clusterers fitted on blocks: at least this many voxels of whole blocks).
    seed : int
        Seed of the sample and of the fits.
    block_shape : tuple of int, optional
        Block shape (default from :func:`resolve_block_shape`).
    executor : Executor, optional
        Where blocks run (default: serially, here).
    progress : callable, optional
        Progress callback.

    Returns
    -------
    list of Clusterer, one per K
    """
    executor = executor or SerialExecutor()
    try:
        return _fit(jobs, spec, ks, options, sample_size, seed, block_shape, executor, progress)
    finally:
        executor.forget()


def _fit(jobs, spec: ClustererSpec, ks, options, sample_size, seed, block_shape, executor, progress) -> list[Clusterer]:
    total = sum(job.source.volume.size for job in jobs)
    # one volume: its path in front, so that a batch log says which volume K does not fit
    named = jobs[0].source.volume.path if len(jobs) == 1 else None
    for k in ks:
        if k > total:
            raise about_volume(OrgasegError(f"K = {k} is larger than the volume ({total:,} voxels)"), named)
        needed, sampled = MIN_SAMPLE_PER_CLUSTER * k, min(sample_size, total)
        if spec.sample == "voxels" and sampled < needed:
            raise about_volume(OrgasegError(
                f"K = {k} needs a sample of at least {needed:,} voxels ({MIN_SAMPLE_PER_CLUSTER} per "
                f"cluster) but this run samples {sampled:,}: use a smaller K"
                + (f" or a larger sample ({arg('sample_size')})" if sampled < total else "")), named)
    fits = [spec.start_fit(k, seed=seed, **(options or {})) for k in ks]
    for i, job in enumerate(jobs):
        n = max(1, round(sample_size * job.source.volume.size / total))
        for piece in _sample_pieces(job, spec, n, seed + i, block_shape, executor, progress):
            with one_thread():  # a streamed fit updates here
                for fit in fits:
                    fit.add(*piece)
    fitted = []
    for i, fit in enumerate(fits, 1):
        with one_thread():
            fitted.append(fit.finish(progress))
        report(progress, f"fitting {spec.name}", i, len(fits))
    return fitted


def _sample_pieces(job: BlockJob, spec: ClustererSpec, n: int, seed: int, block_shape, executor: Executor,
                   progress) -> Iterator[tuple]:
    """The sample of one volume, piece by piece, in a seeded order of blocks independent of the executor."""
    volume = job.source.volume
    blocks = plan_blocks(job, block_shape)
    order = np.random.default_rng(seed).permutation(len(blocks))
    if spec.sample == "blocks":
        chosen, voxels = [], 0
        for index in order:  # whole blocks in a seeded order, until they hold n voxels
            if voxels >= n:
                break
            chosen.append(blocks[index])
            voxels += blocks[index].size
        meter = _Meter(progress, "sampling blocks", len(chosen))
        results = executor.map(sample_whole_block, (job,), ((b.index, (b, spec.working_grid)) for b in chosen))
        with _batches_move(meter, job, executor):
            for _, result in _in_order(results, [b.index for b in chosen], meter, {b.index: b.size for b in chosen}):
                yield result.value
        return
    coords = sample_coordinates(volume.shape, n, seed)
    # the blocks tile the volume in C order (make_blocks): a voxel's block index is its grid cell's flat index
    extent = np.array(blocks[0].shape)
    cells = np.ravel_multi_index(tuple((coords // extent).T), tuple(-(-np.array(volume.shape) // extent)))
    by_block = np.argsort(cells, kind="stable")  # stable: each block's coordinates stay sorted
    bounds = np.searchsorted(cells[by_block], np.arange(len(blocks) + 1))
    todo = []
    for index in order:  # blocks in a seeded order: a streamed fit sees the volume's regions in random order
        block = blocks[index]
        rows = by_block[bounds[index]:bounds[index + 1]]
        if rows.size:
            todo.append((block, coords[rows] - np.array([r.start for r in block.region])))
    meter = _Meter(progress, "sampling features", len(todo))
    results = executor.map(sample_block, (job,), ((block.index, (block, local)) for block, local in todo))
    with _batches_move(meter, job, executor):
        for _, result in _in_order(results, [block.index for block, _ in todo], meter,
                                   {block.index: block.size for block, _ in todo}):
            yield (result.value,)


@contextlib.contextmanager
def _batches_move(meter: _Meter, job: BlockJob, executor: Executor) -> Iterator[None]:
    """While a pass runs in this process (serially or on threads), the encoder's batches move ``meter``
    inside the blocks being computed.

    A pass of one long block (a crop that fits one block, with a learned
    encoder) otherwise shows 0 of 1 until it ends. Workers elsewhere (dask)
    report whole blocks only.
    """
    extractor = job.extractor
    here = isinstance(executor, (SerialExecutor, ThreadExecutor))
    if meter.progress is None or not here or not hasattr(extractor, "progress"):
        yield
        return
    running: dict[int, float] = {}  # the fraction done of the block each thread computes
    lock = threading.Lock()

    def moved(description, done, total, **figures) -> None:
        with lock:
            running[threading.get_ident()] = done / max(total, 1) if done < total else 0.0  # done: its step counts it
            fraction = sum(running.values())
        meter.within(fraction)

    previous = extractor.progress
    extractor.progress = moved
    try:
        yield
    finally:
        extractor.progress = previous


def _in_order(results: Iterable, keys: Sequence, meter: _Meter, sizes: dict) -> Iterator:
    """``(key, result)`` pairs in the order of ``keys``, whatever order they finish in."""
    waiting: dict = {}
    position = 0
    for key, result in results:
        meter.step(sizes[key])
        waiting[key] = result
        while position < len(keys) and keys[position] in waiting:
            yield keys[position], waiting.pop(keys[position])
            position += 1


def label_volume(
    job: BlockJob,
    clusterers: Sequence[Clusterer],
    sinks: Sequence[LabelSink],
    *,
    block_shape: tuple[int, int, int] | None = None,
    executor: Executor | None = None,
    state: RunState | None = None,
    progress: ProgressCallback | None = None,
) -> list[np.ndarray] | None:
    """Label every block with each clusterer; ``sinks[i]`` receives clusterer ``i``'s labels.

    Features are computed once per block, whatever the number of clusterers.
    With ``state``, blocks it records as done are skipped and every block
    written is marked done once its sinks are flushed.

    Returns
    -------
    list of numpy.ndarray or None
        Per clusterer, how many voxels each label took in the whole volume (index = label); None when a
        block an earlier run finished did not record its counts.
    """
    executor = executor or SerialExecutor()
    try:
        return _label(job, clusterers, sinks, block_shape, executor, state, progress)
    finally:
        executor.forget()


def _label(job: BlockJob, clusterers, sinks, block_shape, executor, state, progress) -> list[np.ndarray] | None:
    if len(clusterers) != len(sinks):
        raise ValueError("need one sink per clusterer")
    guessed = job.source.volume.attrs.get("voxel_size_assumed")
    for clusterer in clusterers:
        if clusterer.n_features != job.extractor.n_features:
            raise OrgasegError(
                f"the given clusterer expects {clusterer.n_features} features but these dense features give "
                f"{job.extractor.n_features}: a clusterer must come from the same method and configuration"
                # which features a filter bank computes depends on the voxel size, taken as 1 nm here
                + (f"; this volume's voxel size is unknown (taken as 1 nm, which changes the features): pass "
                   f"{arg('voxel_size')}" if guessed else "")
            )
    blocks = plan_blocks(job, block_shape)
    totals = [np.zeros(0, np.int64) for _ in clusterers]
    if state is not None:
        state.use_models(clusterers)
        finished = [block for block in blocks if state.is_done(block)]
        state.skipped = len(finished)
        done_indices = {block.index for block in finished}
        blocks_todo = [block for block in blocks if block.index not in done_indices]
        totals = _add_label_voxels(totals, *(state.label_voxels(block) for block in finished))
    else:
        blocks_todo = blocks
    meter = _Meter(progress, "labelling blocks", len(blocks), already=len(blocks) - len(blocks_todo))
    clusterers = tuple(clusterers)
    items = ((block, (block,)) for block in blocks_todo)
    with _batches_move(meter, job, executor):
        for block, result in executor.map(label_block, (job, clusterers), items):
            for labels, sink in zip(result.value, sinks):
                sink.write(block.region, labels)
            counts = [np.bincount(np.asarray(labels).ravel()) for labels in result.value]
            totals = _add_label_voxels(totals, counts)
            if state is not None:
                for sink in sinks:
                    flush = getattr(sink, "flush", None)  # a writer: make the labels durable before the marker
                    if flush is not None:
                        flush()
                state.mark_done(block, result.seconds, counts)
            meter.step(block.size)
    return totals


def _add_label_voxels(totals: list[np.ndarray] | None, *blocks) -> list[np.ndarray] | None:
    """``totals`` plus each block's voxels per label (one sequence per label volume); None once anything is,
    or once a block's counts are not one per label volume (a marker's that cannot be told apart)."""
    for counts in blocks:
        if totals is None or counts is None or len(counts) != len(totals):
            return None
        totals = [_padded_sum(total, np.asarray(count, np.int64)) for total, count in zip(totals, counts)]
    return totals


def _padded_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(a.size, b.size), np.int64)
    out[:a.size] += a
    out[:b.size] += b
    return out


def cluster_volume(
    job: BlockJob,
    spec: ClustererSpec,
    sinks: Sequence[LabelSink],
    *,
    ks: Sequence[int] | None = None,
    clusterers: Sequence[Clusterer] | None = None,
    options: dict | None = None,
    seed: int = 0,
    sample_size: int = 200_000,
    block_shape: tuple[int, int, int] | None = None,
    executor: Executor | None = None,
    state: RunState | None = None,
    stats: dict | None = None,
    feature_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[Clusterer]:
    """Fit a clusterer for each K on a sample of one volume (or reuse given ones), then label every block.

    Parameters
    ----------
    job : BlockJob
        The volume with its normalisation, features and working grid.
    spec : ClustererSpec
        The clusterer (reads back the state ``state`` holds).
    sinks : sequence of LabelSink
        One per K (or per given clusterer).
    ks, clusterers
        Exactly one: cluster counts to fit, or fitted clusterers (reused from another run).
    options, seed, sample_size, block_shape, executor, progress
        As :func:`fit_clusterers`.
    state : RunState, optional
        Resume state: a clusterer it holds is reused instead of refitted (a
        fitted one is stored in it), finished blocks are skipped, new ones marked.
    stats : dict, optional
        Filled with seconds per phase (``sampling_s`` (sampling and fitting),
        ``labelling_s``), block counts (``blocks``; with ``state`` ``computed`` and ``skipped``) and the
        voxels per label of each sink (``label_voxels``, as :func:`label_volume` returns them).
    feature_memory : int, optional
        Bytes of the sampling pass's features kept for the labelling pass
        (:func:`kept_feature_bytes`; default :data:`FEATURE_CACHE_BYTES`).

    Returns
    -------
    list of Clusterer
        The clusterers used, in the order of ``sinks``.
    """
    if (ks is None) == (clusterers is None):
        raise ValueError("give exactly one of ks and clusterers")
    stats = {} if stats is None else stats
    executor = executor or SerialExecutor()
    try:
        if clusterers is None and state is not None:
            clusterers = state.load_models(spec)
        with reusing_features([job], kept_feature_bytes(executor, clusterers is None, feature_memory)):
            if clusterers is None:
                started = time.perf_counter()
                clusterers = _fit([job], spec, ks, options, sample_size, seed, block_shape, executor, progress)
                stats["sampling_s"] = round(time.perf_counter() - started, 3)
                if state is not None:
                    state.save_models(clusterers)
            started = time.perf_counter()
            stats["label_voxels"] = _label(job, clusterers, sinks, block_shape, executor, state, progress)
            stats["labelling_s"] = round(time.perf_counter() - started, 3)
    finally:
        executor.forget()  # the job (with its encoder) was sent once for both passes
    stats["blocks"] = len(plan_blocks(job, block_shape))
    if state is not None:
        stats.update(state.counts())
    return list(clusterers)


class _Meter:
    """One progress bar over blocks, with the voxels per second of the blocks done so far.

    Its reports never overlap: blocks on threads move it from theirs (:meth:`within`).
    """

    def __init__(self, progress: ProgressCallback | None, description: str, total: int, already: int = 0) -> None:
        self.progress, self.description, self.total = progress, description, total
        self.done = already
        self.voxels = 0
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._shown = float(already)
        # at the start too: a bar drawn only when the first block ends shows a pass of one block as instantaneous
        report(progress, description, already, total)

    def within(self, fraction: float) -> None:
        """Progress inside the blocks being computed: the bar moves forward between whole blocks."""
        with self._lock:
            # short of the next whole block, so that the bar is not closed before the block's own step
            shown = round(self.done + min(max(fraction, 0.0), 0.99), 2)
            if shown > self._shown:  # a block on another thread ending before its step must not move it back
                self._shown = shown
                report(self.progress, self.description, shown, self.total)

    def step(self, voxels: int) -> None:
        with self._lock:
            self.done += 1
            self._shown = self.done
            self.voxels += voxels
            rate = self.voxels / max(time.perf_counter() - self.started, 1e-9)
            report(self.progress, self.description, self.done, self.total, voxels_per_s=round(rate))
