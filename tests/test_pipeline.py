"""Blocks, the feature sample and blockwise assignment."""

import warnings

import numpy as np
import pytest

from orgaseg.cluster import get_clusterer
from orgaseg.features.filterbank import FilterBank
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import default_block_shape, make_blocks
from orgaseg.pipeline.runner import (
    ArraySink,
    BlockJob,
    cluster_volume,
    fit_clusterers,
    plan_blocks,
    sample_coordinates,
)
from orgaseg.pipeline.tasks import VolumeSource

KMEANS = get_clusterer("kmeans")


class Scale:
    """A stand-in normalisation: uint8 to [0, 1]."""

    def apply(self, block):
        return block.astype(np.float32) / 255.0


def test_blocks_tile_the_volume_exactly_once():
    shape = (7, 30, 25)
    blocks = make_blocks(shape, (3, 16, 10), halo=(1, 4, 4))
    covered = np.zeros(shape, dtype=int)
    for block in blocks:
        covered[block.region] += 1
        for r, rr, s in zip(block.region, block.read_region, shape):
            assert 0 <= rr.start <= r.start and r.stop <= rr.stop <= s
    np.testing.assert_array_equal(covered, 1)
    first = blocks[0]
    assert first.read_region == (slice(0, 4), slice(0, 20), slice(0, 14))
    assert first.inner == (slice(0, 3), slice(0, 16), slice(0, 10))


def test_default_block_shape_prefers_whole_planes_and_chunks():
    assert default_block_shape((100, 512, 512), voxels=4 * 512 * 512) == (4, 512, 512)
    assert default_block_shape((10, 4096, 4096), voxels=1024 * 1024) == (1, 1024, 1024)
    assert default_block_shape((100, 512, 512), chunks=(3, 512, 512), voxels=4 * 512 * 512) == (3, 512, 512)


def test_blocks_are_shaped_for_the_fewest_voxels_computed_with_their_halo():
    from orgaseg.pipeline.blocks import block_overhead, halo_block_shape

    def computed(shape, block, halo):
        voxels = sum(int(np.prod([r.stop - r.start for r in b.read_region])) for b in make_blocks(shape, block, halo))
        assert voxels == pytest.approx(block_overhead(shape, block, halo) * np.prod(shape))
        return voxels

    # no context along z (in-plane features of an anisotropic stack): whole planes, as before
    assert halo_block_shape((20, 1024, 1024), (0, 150, 150), voxels=4 * 1024 * 1024) == (4, 1024, 1024)
    # wide context along every axis: as deep as the volume, narrow in y and x, not slabs of a few planes
    shape, halo, voxels = (256, 1024, 1024), (86, 86, 86), 3_834_792
    block = halo_block_shape(shape, halo, voxels)
    assert np.prod(block) <= voxels and block[0] == 256
    slabs = default_block_shape(shape, voxels=voxels)
    assert computed(shape, block, halo) < computed(shape, slabs, halo) / 8
    assert computed(shape, block, halo) / np.prod(shape) < 6
    # storage chunks are respected, and a block never exceeds the volume
    assert halo_block_shape((40, 300, 300), (5, 5, 5), 100_000, chunks=(8, 64, 64)) in {
        (z, y, x) for z in range(8, 41, 8) for y in (64, 128, 192, 256, 300) for x in (64, 128, 192, 256, 300)}
    assert halo_block_shape((1, 50, 60), (0, 9, 9), voxels=10**9) == (1, 50, 60)


def test_sample_coordinates_are_seeded_distinct_and_inside():
    a = sample_coordinates((5, 6, 7), 50, seed=3)
    b = sample_coordinates((5, 6, 7), 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(c) for c in a}) == 50
    assert a.min() >= 0 and (a < np.array([5, 6, 7])).all()
    assert len(sample_coordinates((2, 2, 2), 100)) == 8


@pytest.fixture
def textured():
    rng = np.random.default_rng(0)
    data = (rng.random((6, 48, 48)) * 60).astype(np.uint8)
    data[:, 10:30, 10:30] += 150
    return Volume(data, voxel_size=(10.0, 10.0, 10.0))


def _job(volume, extractor, grid=None):
    return BlockJob(VolumeSource(volume), Scale(), extractor, grid=grid)


def test_clusterer_sample_does_not_depend_on_block_shape(textured):
    bank = FilterBank(voxel_size=textured.voxel_size, scales_nm=(10.0, 20.0))
    fit = lambda shape: fit_clusterers([_job(textured, bank)], KMEANS, [3], sample_size=300, seed=1, block_shape=shape)[0]
    a, b = fit((6, 48, 48)), fit((2, 17, 20))
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5)  # the same voxels, in another order
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-3, atol=1e-4)


def test_blockwise_labels_equal_single_block_exactly(textured):
    bank = FilterBank(voxel_size=textured.voxel_size, scales_nm=(10.0, 20.0))
    whole, parts = ArraySink(textured.shape, np.uint8), ArraySink(textured.shape, np.uint8)
    (model,) = cluster_volume(_job(textured, bank), KMEANS, [whole], ks=[4], sample_size=2000, block_shape=(6, 48, 48))
    cluster_volume(_job(textured, bank), KMEANS, [parts], clusterers=[model], block_shape=(4, 20, 13))
    np.testing.assert_array_equal(whole.array, parts.array)
    # the bright square is one cluster, different from the surround
    inside, outside = whole.array[:, 15:25, 15:25], whole.array[:, 40:, 40:]
    assert np.bincount(inside.ravel()).max() > 0.95 * inside.size
    assert np.bincount(inside.ravel()).argmax() != np.bincount(outside.ravel()).argmax()


def test_saved_features_are_the_blocks_features_in_float16(textured, tmp_path):
    import zarr

    from orgaseg.segmentation import segment

    out, saved = tmp_path / "seg.ome.zarr", tmp_path / "features.zarr"
    result = segment(textured, k=3, output=out, save_features=saved, block_shape=(3, 24, 24), sample_size=500,
                     options={"scales_nm": (10.0, 20.0)})
    array = zarr.open_array(str(saved), mode="r")
    bank = FilterBank(voxel_size=textured.voxel_size, scales_nm=(10.0, 20.0))
    assert array.dtype == np.float16 and array.shape == textured.shape + (bank.n_features,)
    assert array.attrs["axes"] == "zyxc" and result.provenance["features_saved"] == str(saved)
    from orgaseg.io import compute_normalization

    job = BlockJob(VolumeSource(textured), compute_normalization(textured), bank)
    block = plan_blocks(job, (3, 24, 24))[5]
    expected = job.features(block)
    # float16 storage: the saved value is the block's feature rounded to 11 significant bits
    np.testing.assert_array_equal(array[block.region], expected.astype(np.float16))
    assert not (tmp_path / "features.zarr.partial").exists()


@pytest.mark.parametrize("clusterer", ["kmeans", "superpixel-kmeans"])
def test_a_constant_volume_is_a_clear_error_after_resampling(clusterer):
    """Resampling 8 nm to 10 nm leaves float rounding noise on a constant volume; it must not pass as K clusters.

    The volume is refused before any feature is computed; the clusterers' tolerance of that noise, which a
    nearly constant masked region still needs, is tested with the clusterers (test_kmeans)."""
    from orgaseg.errors import OrgasegError
    from orgaseg.segmentation import segment

    constant = np.full((4, 32, 32), 117, np.uint8)
    with pytest.raises(OrgasegError, match="every sampled intensity .* is 117: the volume is constant"):
        segment(constant, k=4, clusterer=clusterer, voxel_size=(40.0, 8.0, 8.0), pixel_size=10.0)


def test_a_volume_with_a_nan_voxel_is_segmented_after_a_warning():
    """One NaN voxel used to turn every feature of its neighbourhood, and so the whole sample, into NaN."""
    from scipy import ndimage as ndi

    from orgaseg.errors import OrgasegWarning
    from orgaseg.segmentation import segment

    raw = ndi.gaussian_filter(np.random.default_rng(0).random((4, 40, 40)).astype(np.float32), (0, 2, 2))
    raw[1, 10, 10] = np.nan
    for pixel_size in ("native", 10.0):  # with and without a working grid
        with pytest.warns(OrgasegWarning, match="NaN or infinite"):
            result = segment(raw, k=3, voxel_size=(40.0, 8.0, 8.0), pixel_size=pixel_size)
        assert result.labels.shape == raw.shape and len(np.unique(result.labels)) == 3


@pytest.mark.parametrize("arguments, message", [
    ({"k": 2.5}, "K must be a whole number, got 2.5"),
    ({"k": "3"}, "K must be a whole number, got '3'"),
    # two numbers are a single image's pixel size: this array has 4 planes
    ({"k": 3, "voxel_size": (1.0, 1.0)}, r"voxel size 1 1 nm: two numbers \(y x\) .* but this volume has 2 planes"),
    ({"k": 3, "voxel_size": (1.0, 1.0, 1.0, 1.0)}, "voxel_size must be 3 positive numbers"),
    ({"k": 3, "voxel_size": (0.05, 0.0046, 0.0046)}, r"voxel sizes are in nanometres .*give 50, 4.6, 4.6\)"),
    ({"k": 3, "voxel_size": (0.5, 0.5, 0.5), "pixel_size": 10.0},
     "the volume's y axis \\(16 voxels of 0.5 nm, 8 nm in all\\) is less than one pixel"),
    ({"k": 3, "output": "same.zarr", "save_features": "same.zarr"}, "the features need a path of their own"),
    # numpy's seeding used to refuse these deep inside it (ValueError, TypeError), and a sample of -5 voxels
    # or a list of options reached the sampler and dict() unchecked
    ({"k": 3, "seed": -1}, "seed=N must be a whole number >= 0, got -1"),
    ({"k": 3, "seed": 1.5}, "seed=N must be a whole number >= 0, got 1.5"),
    ({"k": 3, "sample_size": -5}, "sample_size=N must be a whole number >= 1, got -5"),
    ({"k": 3, "options": [("stride", 20)]}, r"options must be a dict \{name: value\}"),
    # options of reading a file were ignored with an array
    ({"k": 3, "key": "raw"}, "key says how to read a file, but the data is an array, read as it is: leave it out"),
    ({"k": 3, "level": 1, "channel": 0}, "level, channel say how to read a file, but the data is an array"),
])
def test_segment_refuses_bad_arguments_before_any_work(arguments, message, tmp_path, monkeypatch):
    from orgaseg.errors import OrgasegError
    from orgaseg.segmentation import segment

    monkeypatch.chdir(tmp_path)
    with pytest.raises(OrgasegError, match=message):
        segment(np.random.default_rng(0).random((2, 16, 16)), **arguments)
    assert list(tmp_path.iterdir()) == []  # nothing written, no partial output left


class CountingExtractor:
    """An extractor that records the windows (origin, shape) it featurises."""

    def __init__(self, inner):
        self.inner, self.windows = inner, []
        self.halo, self.n_features = inner.halo, inner.n_features

    def __call__(self, block, *, origin=(0, 0, 0)):
        self.windows.append((tuple(origin), block.shape))
        return self.inner(block, origin=origin)

    def config(self):
        return self.inner.config()


class CountingPartExtractor(CountingExtractor):
    """The same, for an extractor that computes a part of a window (records window and part)."""

    keeps_region = True

    def __call__(self, block, *, origin=(0, 0, 0), keep=None):
        self.windows.append((tuple(origin), block.shape, tuple((s.start, s.stop) for s in keep)))
        return self.inner(block, origin=origin, keep=keep)


@pytest.mark.parametrize("pixel_size, threads", [(None, 0), (20.0, 0), (20.0, 2)])
def test_a_volume_whose_features_fit_is_featurised_once(textured, pixel_size, threads):
    from orgaseg.pipeline.executors import SerialExecutor, ThreadExecutor
    from orgaseg.pipeline.resample import WorkingGrid

    grid = None if pixel_size is None else WorkingGrid.for_pixel_size(textured.shape, textured.voxel_size, pixel_size)
    bank = FilterBank(voxel_size=textured.voxel_size if grid is None else grid.working_voxel_size,
                      scales_nm=(10.0, 20.0))
    labels, windows = [], []
    for budget in (None, 0):  # the default budget; none kept
        counting, sink = CountingExtractor(bank), ArraySink(textured.shape, np.uint8)
        job = _job(textured, counting, grid)
        cluster_volume(job, KMEANS, [sink], ks=[3], sample_size=5000, block_shape=(2, 24, 48),
                       executor=ThreadExecutor(threads) if threads else SerialExecutor(), feature_memory=budget)
        labels.append(sink.array)
        windows.append(counting.windows)
        assert job.cache is None  # freed after the run
    np.testing.assert_array_equal(labels[0], labels[1])
    assert len(set(windows[0])) == len(windows[0]) == len(set(windows[1]))  # every window featurised once
    # without the cache, each of the 6 blocks is featurised in both passes (blocks with the same window too)
    assert len(windows[1]) == 2 * 6


@pytest.mark.parametrize("pixel_size, threads", [(None, 0), (None, 2), (20.0, 0)])
def test_an_extractor_that_computes_parts_computes_each_block_once(textured, pixel_size, threads):
    from orgaseg.pipeline.executors import SerialExecutor, ThreadExecutor
    from orgaseg.pipeline.resample import WorkingGrid

    grid = None if pixel_size is None else WorkingGrid.for_pixel_size(textured.shape, textured.voxel_size, pixel_size)
    bank = FilterBank(voxel_size=textured.voxel_size if grid is None else grid.working_voxel_size,
                      scales_nm=(10.0, 20.0) if grid is None else (20.0, 40.0))
    labels, calls = [], []
    for budget in (None, 0):
        counting, sink = CountingPartExtractor(bank), ArraySink(textured.shape, np.uint8)
        cluster_volume(_job(textured, counting, grid), KMEANS, [sink], ks=[3], sample_size=5000,
                       block_shape=(2, 24, 48), executor=ThreadExecutor(threads) if threads else SerialExecutor(),
                       feature_memory=budget)
        labels.append(sink.array)
        calls.append(counting.windows)
    np.testing.assert_array_equal(labels[0], labels[1])
    # 6 blocks over 2 windows (the halo spans the 6 slices): each block's own part once, or once per pass
    assert len(calls[0]) == len(set(calls[0])) == 6 and len({c[:2] for c in calls[0]}) == 2
    assert len(calls[1]) == 12 and set(calls[1]) == set(calls[0])
    # the parts are the blocks' own regions: the same labels as whole windows cropped
    whole = ArraySink(textured.shape, np.uint8)
    cluster_volume(_job(textured, CountingExtractor(bank), grid), KMEANS, [whole], ks=[3], sample_size=5000,
                   block_shape=(2, 24, 48))
    np.testing.assert_array_equal(labels[0], whole.array)


def test_segment_takes_a_feature_memory_budget(textured, tmp_path, capsys):
    from orgaseg.cli import main
    from orgaseg.errors import OrgasegError
    from orgaseg.io import read_provenance
    from orgaseg.segmentation import segment

    kept = segment(textured, k=3, sample_size=5000)
    none = segment(textured, k=3, sample_size=5000, feature_memory=0)
    np.testing.assert_array_equal(kept.labels, none.labels)
    assert kept.provenance["feature_memory_bytes"] == 2**30 and none.provenance["feature_memory_bytes"] == 0
    for bad in (-1, 2.5, "1G"):
        with pytest.raises(OrgasegError, match="feature_memory=BYTES must be a number of bytes"):
            segment(textured, k=3, feature_memory=bad)
    path = tmp_path / "raw.npy"
    np.save(path, textured.read())
    assert main(["segment", str(path), "-k", "3", "--voxel-size", "20", "20", "20", "--feature-memory", "1.5M",
                 "-o", str(tmp_path / "s.tif"), "--quiet"]) == 0
    assert read_provenance(tmp_path / "s.tif")["feature_memory_bytes"] == 1572864
    assert main(["segment", str(path), "--feature-memory", "lots", "-o", str(tmp_path / "t.tif"), "--quiet"]) == 2
    assert "expected a size such as 512M, 2G or 0, got 'lots'" in capsys.readouterr().err


def test_feature_cache_keeps_what_fits_read_only_and_stays_in_its_process():
    import dataclasses
    import pickle

    from orgaseg.pipeline.tasks import FeatureCache, reusing_features

    cache = FeatureCache(max_bytes=100)
    small, large = np.zeros(10, np.float32), np.zeros(100, np.float32)  # 40 and 400 bytes
    assert cache.get("a", lambda: small) is small and not small.flags.writeable
    assert cache.get("a", lambda: pytest.fail("computed again")) is small and cache.hits == 1
    assert cache.get("b", lambda: large) is large and large.flags.writeable  # over the budget: not kept
    assert cache.used == 40
    arrived = pickle.loads(pickle.dumps(cache))
    assert arrived.used == 0 and arrived.max_bytes == 0  # a worker keeps nothing
    job = _job(Volume(np.zeros((2, 8, 8), np.uint8), voxel_size=(1.0, 1.0, 1.0)),
               FilterBank(voxel_size=(1.0, 1.0, 1.0), scales_nm=(1.0,)))
    with reusing_features([job], 1000):
        assert job.cache is not None
        assert dataclasses.replace(job, extractor=job.extractor).cache is None  # other features: no stale entries
    assert job.cache is None


def test_features_are_kept_only_for_a_sampling_pass_in_this_process():
    from orgaseg.pipeline import runner
    from orgaseg.pipeline.executors import DaskExecutor, SerialExecutor, ThreadExecutor

    assert runner.kept_feature_bytes(SerialExecutor(), fitting=True) == runner.FEATURE_CACHE_BYTES
    assert runner.kept_feature_bytes(ThreadExecutor(2), fitting=True) == runner.FEATURE_CACHE_BYTES
    assert runner.kept_feature_bytes(SerialExecutor(), fitting=False) == 0  # a reused clusterer: one pass only
    assert runner.kept_feature_bytes(DaskExecutor(client=None), fitting=True) == 0  # workers would not share them


def test_blocks_much_smaller_than_their_context_are_warned_about(textured):
    from orgaseg.errors import OrgasegWarning
    from orgaseg.pipeline.runner import resolve_block_shape

    job = _job(textured, FilterBank(voxel_size=textured.voxel_size, scales_nm=(10.0, 40.0)))
    with pytest.warns(OrgasegWarning, match=r"blocks of 1 x 4 x 4 read .* context each side: the blocks compute about"):
        assert resolve_block_shape(job, (1, 4, 4)) == (1, 4, 4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        resolve_block_shape(job, None)
        resolve_block_shape(job, textured.shape)


def test_a_given_block_shape_that_computes_far_more_than_the_default_is_warned_about():
    from orgaseg.errors import OrgasegWarning
    from orgaseg.pipeline.runner import resolve_block_shape

    extractor = FilterBank(scales_nm=(40.0,), voxel_size=(10.0, 10.0, 10.0))
    job = _job(Volume(np.zeros((40, 64, 64), np.float32)), extractor)
    with pytest.warns(OrgasegWarning, match=r"blocks of 2 x 4 x 4 read .* voxels of context each side: the blocks "
                                            r"compute about \d+ times the volume's voxels"):
        assert resolve_block_shape(job, (2, 4, 4)) == (2, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_block_shape(job, (40, 64, 64)) == (40, 64, 64)


def test_an_array_without_a_voxel_size_is_segmented_after_a_warning():
    """Features are computed in nm: an array's voxel size is said to be assumed, as a file's without metadata is."""
    from orgaseg.io import VoxelSizeWarning
    from orgaseg.segmentation import segment
    from orgaseg.synthetic import make_cell

    raw = make_cell((4, 48, 48), voxel_size=(10.0, 10.0, 10.0), seed=0).raw
    with pytest.warns(VoxelSizeWarning, match=r"the array: voxel size unknown, assuming 1 x 1 x 1 nm: the stack is taken as "
                                             r"isotropic \(features filter across sections, .*\); pass voxel_size="):
        assumed = segment(raw, k=3, sample_size=2000)
    assert assumed.provenance["input"]["voxel_size"] == [1.0, 1.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", VoxelSizeWarning)
        segment(raw, k=3, sample_size=2000, voxel_size=(10.0, 10.0, 10.0))


def test_the_working_grid_filters_its_own_window_in_place_and_never_a_callers_array():
    import tracemalloc

    from orgaseg.pipeline.resample import WorkingGrid

    volume = np.random.default_rng(0).random((40, 120, 120)).astype(np.float32)
    kept = volume.copy()
    grid = WorkingGrid.for_pixel_size(volume.shape, (10.0, 10.0, 10.0), 25.0)  # shrinks 2.5x along every axis
    region = tuple(slice(0, n) for n in grid.shape)
    from_view = grid.read_working(lambda window: volume[window], region)
    np.testing.assert_array_equal(volume, kept)  # the view's array was filtered into a copy
    tracemalloc.start()
    try:
        own = grid.read_working(lambda window: volume[window].copy(), region)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(own, from_view)
    # the window and, beside it, the first axis's interpolation (two arrays of 0.4 of it): 1.8; a filtered
    # copy beside the window made it 2
    assert peak < 1.9 * volume.nbytes, peak / volume.nbytes
    # vnc's sections at 18.4 nm: y shrinks 4x, so the peak is the window and 2 x 0.25 of it (a copy made it 2)
    sections = np.random.default_rng(1).random((4, 400, 400)).astype(np.float32)
    grid = WorkingGrid.for_pixel_size(sections.shape, (50.0, 4.6, 4.6), 18.4)
    tracemalloc.start()
    try:
        grid.read_working(lambda window: sections[window].copy(), tuple(slice(0, n) for n in grid.shape))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * sections.nbytes, peak / sections.nbytes


@pytest.mark.parametrize("arguments, message", [
    # an int or a (start, stop) pair per axis used to fail as "'int' object has no attribute 'indices'"
    ({"region": (0, slice(0, 8), slice(0, 8))}, r"give the region as three slices \(z, y, x\)"),
    ({"region": ((0, 2), (0, 8), (0, 8))}, r"give the region as three slices \(z, y, x\)"),
    ({"seed": -1}, "seed=N must be a whole number >= 0, got -1"),  # was numpy's ValueError
    ({"options": "stride=20"}, r"options must be a dict \{name: value\}"),
    ({"key": "raw"}, "key says how to read a file, but the data is an array"),
])
def test_compute_features_refuses_bad_arguments_with_a_message(arguments, message):
    from orgaseg.errors import OrgasegError
    from orgaseg.segmentation import compute_features

    with pytest.raises(OrgasegError, match=message):
        compute_features(np.random.default_rng(0).random((2, 16, 16)), voxel_size=(10.0, 10.0, 10.0), **arguments)
