"""Plane fusion (``--option planes=xy,xz,yz``): orientation, context, seamless blocks, isotropy checks, flicker."""

import types
import warnings

import numpy as np
import pytest
import torch

import orgaseg
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.evaluation.consistency import slice_flicker
from orgaseg.features import FEATURES
from orgaseg.features.cover_stride import CoverStride, StrideOnly
from orgaseg.features.expand_stride import ExpandStride
from orgaseg.features.planes import PlaneFusion, fuse_planes, parse_planes
from orgaseg.io.volume import Volume
from orgaseg.pipeline.blocks import make_blocks
from orgaseg.synthetic import make_cell

from test_cover_stride import CentreStub

SHAPE = (13, 17, 19)


def coordinate_volume(shape=SHAPE) -> np.ndarray:
    """Each voxel holds the code ``(z * Y + y) * X + x`` (exact in float32 here)."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


class OffsetStub:
    """Token (i, j) = the input one row (``rows=1``) or one column below its patch centre."""

    def __init__(self, patch: int, rows: int = 0, columns: int = 0) -> None:
        self.patch, self.rows, self.columns = patch, rows, columns

    def __call__(self, fovs: torch.Tensor) -> torch.Tensor:
        first_row, first_column = self.patch // 2 + self.rows, self.patch // 2 + self.columns
        return fovs[:, 0, first_row :: self.patch, first_column :: self.patch][..., None]


class ContextStub:
    """Tokens that depend on the whole field of view: patch centre, field mean, and a product of both."""

    def __call__(self, fovs: torch.Tensor) -> torch.Tensor:
        centres = fovs[:, 0, 2::5, 2::5]
        mean = fovs.mean(dim=(1, 2, 3))[:, None, None].expand_as(centres)
        return torch.stack([centres, mean, torch.tanh(3 * centres * mean)], dim=-1)


def _cover(encoder, n_features=1):
    return CoverStride(encoder, n_features=n_features, fov=20, patch=5, keep=2)


def test_every_plane_gives_each_voxel_its_own_token():
    volume = coordinate_volume()
    fused = PlaneFusion(_cover(CentreStub(5)), ["xy", "xz", "yz"])(volume)
    assert fused.shape == SHAPE + (1,) and fused.dtype == np.float32
    np.testing.assert_array_equal(fused[..., 0], volume)


@pytest.mark.parametrize("plane, rows, columns, step", [
    ("xy", 1, 0, SHAPE[2]), ("xy", 0, 1, 1),                   # xy: rows are y, columns x
    ("xz", 1, 0, SHAPE[1] * SHAPE[2]), ("xz", 0, 1, 1),        # xz: rows are z, columns x
    ("yz", 1, 0, SHAPE[1] * SHAPE[2]), ("yz", 0, 1, SHAPE[2]),  # yz: rows are z, columns y
])
def test_plane_orientation(plane, rows, columns, step):
    volume = coordinate_volume()
    features = PlaneFusion(_cover(OffsetStub(5, rows, columns)), [plane])(volume)[..., 0]
    interior = (slice(0, -1),) * 3  # the last voxel along each axis reads the reflected border
    np.testing.assert_array_equal(features[interior], volume[interior] + step)


def test_fusion_is_the_mean_of_the_planes():
    volume = coordinate_volume()
    extractor = _cover(OffsetStub(5, rows=1))
    single = [PlaneFusion(extractor, [plane])(volume) for plane in ("xy", "xz", "yz")]
    fused = PlaneFusion(extractor, ["xy", "xz", "yz"])(volume)
    np.testing.assert_allclose(fused, np.mean(single, axis=0), rtol=1e-6)


def test_the_halo_grows_along_every_axis_a_plane_spans():
    extractor = _cover(CentreStub(5))
    reach = extractor.halo[1]
    assert extractor.halo == (0, reach, reach) and reach > 0
    assert PlaneFusion(extractor, ["xy", "xz", "yz"]).halo == (reach, reach, reach)
    assert PlaneFusion(extractor, ["xz"]).halo == (reach, 0, reach)
    assert PlaneFusion(extractor, ["yz"]).halo == (reach, reach, 0)


@pytest.mark.parametrize("strategy", [
    lambda: CoverStride(ContextStub(), n_features=3, fov=20, patch=5, keep=2),
    lambda: StrideOnly(ContextStub(), n_features=3, fov=20, patch=5),
    lambda: ExpandStride(ContextStub(), n_features=3, fov=20, patch=5, stride=10),
])
@pytest.mark.parametrize("block_shape", [(5, 7, 9), (13, 6, 19), (2, 17, 4)])
def test_blocks_with_their_origin_equal_the_whole_volume(strategy, block_shape):
    volume = np.random.default_rng(0).random((23, 29, 31), dtype=np.float32)
    fusion = PlaneFusion(strategy(), ["xy", "xz", "yz"])
    whole = fusion(volume)
    stitched = np.full_like(whole, np.nan)
    for block in make_blocks(volume.shape, block_shape, fusion.halo):
        features = fusion(volume[block.read_region], origin=tuple(r.start for r in block.read_region))
        stitched[block.region] = features[block.inner]
    np.testing.assert_allclose(stitched, whole, rtol=1e-5, atol=1e-6)
    # the context matters: a block read without the z halo gives other features
    tile = (slice(8, 13), slice(0, 29), slice(0, 31))
    assert not np.allclose(fusion(volume[tile], origin=(8, 0, 0)), whole[tile], atol=1e-3)


@pytest.mark.parametrize("strategy", [
    lambda stub: CoverStride(stub, n_features=1, fov=20, patch=5, keep=2),
    lambda stub: StrideOnly(stub, n_features=1, fov=20, patch=5),
    lambda stub: ExpandStride(stub, n_features=1, fov=20, patch=5, stride=10),
    lambda stub: PlaneFusion(ExpandStride(stub, n_features=1, fov=20, patch=5, stride=10), ["xy", "xz", "yz"]),
])
@pytest.mark.parametrize("block_shape", [(5, 7, 9), (13, 6, 19)])
def test_kept_parts_encode_only_their_own_fields_of_view(strategy, block_shape):
    volume = np.random.default_rng(2).random((23, 29, 31), dtype=np.float32)
    whole = strategy(CentreStub(5))(volume)
    stub = CentreStub(5)
    extractor = strategy(stub)
    assert extractor.keeps_region
    stitched = np.full_like(whole, np.nan)
    own = window = 0
    for block in make_blocks(volume.shape, block_shape, extractor.halo):
        read = block.read_region
        stitched[block.region] = extractor(volume[read], origin=tuple(r.start for r in read), keep=block.inner)
        own += extractor.n_fields_of_view(block.shape, tuple(r.start for r in block.region))
        window += extractor.n_fields_of_view(tuple(r.stop - r.start for r in read), tuple(r.start for r in read))
    # (expand-stride upsamples its fields of view in groups that depend on the batch: float rounding)
    np.testing.assert_allclose(stitched, whole, rtol=1e-6, atol=1e-7)
    assert stub.fovs == own < window  # the halo's own fields of view are not encoded


def test_fields_of_view_are_counted_over_the_planes():
    extractor = _cover(CentreStub(5))
    fusion = PlaneFusion(extractor, ["xy", "xz", "yz"])
    z, y, x = SHAPE
    expected = (extractor.n_fields_of_view((z, y, x)) + extractor.n_fields_of_view((y, z, x))
                + extractor.n_fields_of_view((x, z, y)))
    assert fusion.n_fields_of_view(SHAPE) == expected
    stub = CentreStub(5)
    PlaneFusion(_cover(stub), ["xy", "xz", "yz"])(coordinate_volume())
    assert stub.fovs == expected


def test_planes_option_parsing():
    assert parse_planes(None) == ("xy",)
    assert parse_planes("xy, XZ,yz") == ("xy", "xz", "yz")
    assert parse_planes(["yz"]) == ("yz",)
    for bad in ("xy,zz", "", "xy,xy", [], "xyz"):
        with pytest.raises(OrgasegError, match="plane"):
            parse_planes(bad)


ENCODER = types.SimpleNamespace(encode=CentreStub(5), fov=20, patch=5, n_features=1)


@pytest.mark.parametrize("name", ["cover-stride", "stride-only", "expand-stride"])
def test_every_token_strategy_takes_the_planes_option(name):
    spec = FEATURES[name]
    assert "planes" in spec.options
    plain = spec.build(ENCODER, (20.0, 20.0, 20.0), {}, "cpu")
    assert not isinstance(plain, PlaneFusion)  # the default is the 2D strategy itself
    fused = spec.build(ENCODER, (20.0, 20.0, 20.0), {"planes": "xy,xz,yz"}, "cpu")
    assert isinstance(fused, PlaneFusion) and fused.config()["extractor"] == plain.config()
    assert fused.config()["planes"] == ["xy", "xz", "yz"]


def test_anisotropic_voxels_are_refused_and_near_isotropic_ones_warned():
    extractor = _cover(CentreStub(5))
    with pytest.raises(OrgasegError, match=r"near-isotropic.*pixel_size=NM"):
        fuse_planes(extractor, "xy,xz,yz", (50.0, 10.0, 10.0))
    with pytest.warns(OrgasegWarning, match="1.50x longer"):  # orgaseg's own, as its other warnings
        fuse_planes(extractor, "xy,xz", (15.0, 10.0, 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(fuse_planes(extractor, "xy,yz", (10.0, 10.0, 10.0)), PlaneFusion)
        assert fuse_planes(extractor, "xy", (50.0, 10.0, 10.0)) is extractor  # xy alone works on any stack


def test_flicker_counts_one_slice_islands():
    labels = np.zeros((4, 1, 2), int)
    labels[1, 0, 0] = 1
    assert slice_flicker(labels) == 0.25
    labels[2, 0, 0] = 1  # a two-slice structure does not flicker
    assert slice_flicker(labels) == 0.0
    alternating = np.indices((6, 3, 3))[0] % 2
    assert slice_flicker(alternating) == 1.0
    mask = np.zeros((6, 3, 3), bool)
    mask[2, 0, 0] = True
    assert slice_flicker(alternating, mask=mask) == 1.0
    with pytest.raises(OrgasegError, match="at least 3 slices"):
        slice_flicker(np.zeros((2, 4, 4)))
    with pytest.raises(OrgasegError, match="no voxel"):
        slice_flicker(alternating, mask=np.zeros((6, 3, 3), bool))


@pytest.fixture(scope="module")
def isotropic(tmp_path_factory):
    """A near-isotropic phantom crop on disk and a tiny encoder trained briefly at its voxel size."""
    folder = tmp_path_factory.mktemp("planes")
    raw = make_cell((20, 40, 40), voxel_size=(20.0, 20.0, 20.0), seed=2).raw
    np.save(folder / "raw.npy", raw)
    checkpoint = folder / "tiny.pt"
    orgaseg.train("maester", [Volume(raw, voxel_size=(20.0, 20.0, 20.0))], checkpoint, preset="tiny", steps=5,
                  device="cpu", seed=0)
    return folder / "raw.npy", checkpoint


@pytest.mark.parametrize("features, options, block_shapes", [
    ("stride-only", {}, [(7, 16, 40), (20, 13, 11)]),
    # every block reads the whole volume, and expand-stride's per-field loop is slower: one split, slow
    pytest.param("expand-stride", {"stride": 40}, [(10, 20, 40)], marks=pytest.mark.slow),
])
def test_segment_with_planes_blockwise_equals_whole_volume(isotropic, features, options, block_shapes):
    raw, checkpoint = isotropic
    runs = {shape: orgaseg.segment(raw, method="maester", model=checkpoint, features=features, k=4,
                                   voxel_size=(20, 20, 20), sample_size=3000, block_shape=shape, device="cpu",
                                   options={"planes": "xy,xz,yz", **options})
            for shape in [(20, 40, 40), *block_shapes]}
    labels = [run.labels for run in runs.values()]
    for other in labels[1:]:
        np.testing.assert_array_equal(other, labels[0])
    record = runs[(20, 40, 40)].provenance["config"]
    assert record["feature_options"]["planes"] == "xy,xz,yz"
    assert record["extractor"]["kind"] == "planes"
    # the fused features are not the xy features
    fused, xy_only = (orgaseg.compute_features(raw, method="maester", model=checkpoint, features=features,
                                               voxel_size=(20, 20, 20), device="cpu", options={**options, **planes})
                      for planes in ({"planes": "xy,xz,yz"}, {}))
    assert fused.shape == xy_only.shape and np.abs(fused - xy_only).mean() > 1e-2 * np.abs(xy_only).mean()


def test_segment_refuses_planes_on_an_anisotropic_stack(isotropic, tmp_path):
    raw, checkpoint = isotropic
    with pytest.raises(OrgasegError, match="near-isotropic"):
        orgaseg.segment(raw, method="maester", model=checkpoint, k=4, voxel_size=(60, 20, 20), device="cpu",
                        options={"planes": "xy,xz,yz"}, output=tmp_path / "seg.ome.zarr")
    assert not list(tmp_path.iterdir())


def test_default_blocks_of_an_encoder_that_keeps_parts_encode_the_fewest_fields_of_view(monkeypatch):
    from orgaseg.pipeline import runner
    from orgaseg.pipeline.blocks import halo_block_shape
    from orgaseg.pipeline.cost import forward_passes

    shape, voxels = (10, 18, 20), 400
    extractor = PlaneFusion(ExpandStride(CentreStub(2), n_features=1, fov=8, patch=2, stride=4), ["xy", "xz", "yz"])
    job = types.SimpleNamespace(source=types.SimpleNamespace(volume=types.SimpleNamespace(shape=shape, chunks=None)),
                                extractor=extractor, grid=None, plane_tile_nm=None)

    def encoded(block_shape):
        return forward_passes(extractor, [b.region for b in make_blocks(shape, block_shape, extractor.halo)])

    fitting = [(z, y, x) for z in range(1, 11) for y in range(1, 19) for x in range(1, 21) if z * y * x <= voxels]
    fewest = min(encoded(b) for b in fitting)
    monkeypatch.setattr(runner, "FEATURE_BYTES", 4 * voxels)  # the runner's budget: ``voxels`` of one feature
    chosen = runner.resolve_block_shape(job)
    by_windows = halo_block_shape(shape, extractor.halo, voxels)
    assert np.prod(chosen) <= voxels
    assert encoded(chosen) <= 1.02 * fewest < encoded(by_windows)
    # storage chunks narrower than twice the context do not bind the sides; along an axis without context
    # (z of a 2D strategy) they do
    job.source.volume.chunks = (4, 8, 8)
    assert runner.resolve_block_shape(job) == chosen
    job.extractor = extractor.extractor
    assert job.extractor.halo[0] == 0 and runner.resolve_block_shape(job)[0] in {4, 8, 10}


def test_a_given_block_shape_of_an_encoder_is_judged_by_the_fields_of_view_it_encodes(monkeypatch):
    from orgaseg.errors import OrgasegWarning
    from orgaseg.pipeline import runner

    shape = (10, 18, 20)
    extractor = PlaneFusion(ExpandStride(CentreStub(2), n_features=1, fov=8, patch=2, stride=4), ["xy", "xz", "yz"])
    job = types.SimpleNamespace(source=types.SimpleNamespace(volume=types.SimpleNamespace(shape=shape, chunks=None)),
                                extractor=extractor, grid=None, plane_tile_nm=None)
    monkeypatch.setattr(runner, "FEATURE_BYTES", 4 * 400)
    # columns of 2 x 2 voxels: their windows are 40 times the volume, but they encode under 5 times its fields of view
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runner.resolve_block_shape(job, (10, 2, 2)) == (10, 2, 2)
    with pytest.warns(OrgasegWarning, match=r"blocks of 2 x 2 x 2 encode about 8 times the fields of view that one "
                                            r"pass over the volume would \(1\.7 with the default blocks"):
        runner.resolve_block_shape(job, (2, 2, 2))


def test_anisotropic_planes_are_refused_naming_the_pixel_size_argument_as_the_caller_gives_it():
    from orgaseg.features.planes import check_isotropy

    with pytest.raises(OrgasegError, match=r"resample with pixel_size=NM \(z follows") as refused:
        check_isotropy(("xy", "xz"), (50.0, 5.0, 5.0))  # from Python it said --pixel-size
    assert "resample with --pixel-size NM (z follows" in refused.value.for_command_line()
