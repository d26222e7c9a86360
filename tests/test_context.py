"""Superpixel context features (:mod:`orgaseg.features.context`)."""

from __future__ import annotations

import numpy as np
import pytest

from orgaseg.cluster.superpixels import slic_superpixels
from orgaseg.errors import OrgasegError
from orgaseg.features.context import SliceNeighbours, SuperpixelContext, parse_context


class Ramp:
    """A toy extractor: two channels, the intensity and the x coordinate, with a halo of 1."""

    halo = (0, 1, 1)
    n_features = 2

    def __call__(self, block, *, origin=(0, 0, 0)):
        x = np.broadcast_to(np.arange(block.shape[2], dtype=np.float32) + origin[2], block.shape)
        return np.stack([block, x], axis=-1).astype(np.float32)

    def config(self):
        return {"name": "ramp"}


def two_halves(shape=(2, 40, 60)) -> np.ndarray:
    """Dark left, bright right, with a little texture so SLIC has something to cut."""
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    image[:, :, shape[2] // 2:] = 0.8
    return np.clip(image + rng.normal(0, 0.02, shape), 0, 1).astype(np.float32)


def test_context_appends_each_sizes_superpixel_mean_and_std():
    block = two_halves()
    context = SuperpixelContext(Ramp(), (25, 100))
    out = context(block)
    assert out.shape == block.shape + (10,) and context.n_features == 10
    np.testing.assert_array_equal(out[..., :2], Ramp()(block))
    for z in range(block.shape[0]):
        for i, size in enumerate((25, 100)):
            labels = slic_superpixels(block[z], superpixel_px=size)
            mean, std = out[z, ..., 2 + 4 * i:4 + 4 * i], out[z, ..., 4 + 4 * i:6 + 4 * i]
            for label in np.unique(labels)[:5]:
                inside = labels == label
                features = Ramp()(block[z:z + 1])[0][inside]
                np.testing.assert_allclose(mean[inside], np.broadcast_to(features.mean(0), mean[inside].shape),
                                           rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(std[inside], np.broadcast_to(features.std(0), std[inside].shape),
                                           rtol=1e-3, atol=1e-3)


def test_superpixels_follow_the_edge():
    block = two_halves()
    out = SuperpixelContext(Ramp(), (100,))(block)
    intensity_mean = out[..., 2]
    # no superpixel straddles the dark/bright edge, so its mean intensity is that of its own half
    assert intensity_mean[:, :, :28].max() < 0.2 and intensity_mean[:, :, 32:].min() > 0.6


def test_context_widens_the_halo_and_describes_itself():
    context = SuperpixelContext(Ramp(), "400, 100")
    assert context.sizes == (100, 400)
    assert context.halo == (0, 1 + 40, 1 + 40)
    assert context.config()["superpixel_context"]["sizes_px"] == [100, 400]
    assert context.config()["extractor"] == {"name": "ramp"}


@pytest.mark.parametrize("text, sizes", [("100,400", (100, 400)), ("none", ()), (None, ()), ("", ()), ((64,), (64,))])
def test_parse_context(text, sizes):
    assert parse_context(text) == sizes


@pytest.mark.parametrize("text", ["big", "2", "100.5", "-100"])
def test_bad_context_sizes_are_named(text):
    with pytest.raises(OrgasegError, match="superpixel context"):
        parse_context(text)


def test_context_needs_a_3d_block_and_a_size():
    with pytest.raises(OrgasegError, match="3D block"):
        SuperpixelContext(Ramp(), (100,))(np.zeros((8, 8), np.float32))
    with pytest.raises(OrgasegError, match="at least one"):
        SuperpixelContext(Ramp(), "none")


def test_the_context_option_of_any_features_extends_what_the_clusterer_reads(tmp_path):
    import orgaseg
    from orgaseg.synthetic import make_cell

    voxel = (20.0, 20.0, 20.0)
    cell = make_cell((4, 64, 64), voxel_size=voxel, seed=0)
    plain = orgaseg.segment(cell.raw, voxel_size=voxel, k=4, sample_size=3000)
    seg = orgaseg.segment(cell.raw, voxel_size=voxel, k=4, sample_size=3000, options={"context": "25,100"},
                          output=tmp_path / "ctx.ome.zarr")
    assert seg.model.centers.shape[1] == 5 * plain.model.centers.shape[1]  # features, then two [mean || std]
    assert seg.provenance["config"]["feature_options"] == {"context": "25,100"}
    labels = orgaseg.open_volume(tmp_path / "ctx.ome.zarr").read()
    assert labels.shape == cell.raw.shape and len(np.unique(labels)) == 4
    # another volume labelled with the same clusterer rebuilds the same context features
    other = make_cell((4, 64, 64), voxel_size=voxel, seed=1)
    reused = orgaseg.segment(other.raw, voxel_size=voxel, centers=tmp_path / "ctx.ome.zarr.provenance.json",
                             options={"context": "25,100"})
    np.testing.assert_array_equal(reused.model.centers, seg.model.centers)
    with pytest.raises(OrgasegError, match="superpixel context sizes are numbers"):
        orgaseg.segment(cell.raw, voxel_size=voxel, k=4, sample_size=3000, options={"context": "big"})
    with pytest.raises(OrgasegError, match="whole number of at least 4"):
        orgaseg.segment(cell.raw, voxel_size=voxel, k=4, sample_size=3000, options={"context": 2})


def test_parse_context_takes_a_single_number():
    assert parse_context(100) == (100,) and parse_context(100.0) == (100,)
    with pytest.raises(OrgasegError, match="numbers of pixels"):
        parse_context(object())


def test_slice_neighbours_append_the_mean_of_the_adjacent_slices():
    rng = np.random.default_rng(1)
    volume = rng.random((5, 12, 14), dtype=np.float32)
    extended = SliceNeighbours(Ramp())
    assert extended.halo == (1, 1, 1) and extended.n_features == 4
    out = extended(volume)
    own = Ramp()(volume)
    np.testing.assert_array_equal(out[..., :2], own)
    np.testing.assert_allclose(out[2, ..., 2:], (own[1] + own[3]) / 2)
    # on the volume's first and last slice the missing neighbour is the slice itself
    np.testing.assert_allclose(out[0, ..., 2:], (own[0] + own[1]) / 2)
    np.testing.assert_allclose(out[4, ..., 2:], (own[3] + own[4]) / 2)
    # block by block with the halo of one slice, the features equal the whole volume's
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        read = slice(max(0, start - 1), min(5, stop + 1))
        block = extended(volume[read])
        np.testing.assert_allclose(block[start - read.start:stop - read.start], out[start:stop])
    assert extended.config() == {"slice_neighbours": True, "extractor": {"name": "ramp"}}
    assert SliceNeighbours(SuperpixelContext(Ramp(), (25,))).sizes == (25,)


class KeptRamp(Ramp):
    """:class:`Ramp` that computes a kept part only, and records the parts it was asked for."""

    keeps_region = True

    def __init__(self):
        self.parts = []

    def __call__(self, block, *, origin=(0, 0, 0), keep=None):
        keep = keep or (slice(None),) * 3
        self.parts.append(tuple(s.indices(n)[:2] for s, n in zip(keep, block.shape)))
        return super().__call__(block, origin=origin)[keep]


@pytest.mark.parametrize("wrap", [lambda ramp: SuperpixelContext(ramp, (25, 100)),
                                  lambda ramp: SliceNeighbours(SuperpixelContext(ramp, (25,)))])
@pytest.mark.parametrize("keep", [(slice(1, 3), slice(10, 20), slice(25, 40)),
                                  (slice(0, 1), slice(0, 5), slice(55, 60)),
                                  (slice(0, 4), slice(0, 40), slice(0, 60))])
def test_a_kept_part_equals_the_whole_blocks_features_cropped(wrap, keep):
    volume = two_halves((4, 40, 60)) + np.random.default_rng(3).random((4, 40, 60), dtype=np.float32) * 0.1
    whole = wrap(Ramp())(volume)
    ramp = KeptRamp()
    extractor = wrap(ramp)
    assert extractor.keeps_region
    np.testing.assert_array_equal(extractor(volume, keep=keep), whole[keep])
    # the wrapped extractor computes the box the part's superpixels span (and, for the adjacent-slice
    # mean, the slices either side), not the whole block, unless the part is the whole block
    (z0, z1), (y0, y1), (x0, x1) = ramp.parts[-1]
    neighbours = isinstance(extractor, SliceNeighbours)
    assert (z0, z1) == (max(0, keep[0].start - neighbours), min(4, keep[0].stop + neighbours))
    assert y0 <= keep[1].start and y1 >= keep[1].stop and x0 <= keep[2].start and x1 >= keep[2].stop
    if keep[2].stop - keep[2].start < 60:
        assert (y1 - y0) * (x1 - x0) < 40 * 60
