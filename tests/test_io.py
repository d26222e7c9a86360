"""Reading, writing, normalisation and provenance (orgaseg.io), on tiny data in tmp_path."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import tensorstore
import tifffile
import zarr
from PIL import Image

from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io import (
    AxesView,
    MissingChunksWarning,
    Normalization,
    Volume,
    VoxelSizeWarning,
    compute_normalization,
    create_label_writer,
    make_provenance,
    open_volume,
    read_provenance,
    write_labels,
    write_provenance,
    write_tiff_image,
)
from orgaseg.io.partial import atomic_path, write_atomic
from orgaseg.io.readers import open_on_grid
from orgaseg.io.volume import as_volume
from orgaseg.viz import label_colors

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def volume() -> np.ndarray:
    """A (6, 16, 20) uint16 volume whose every voxel is distinct."""
    return np.arange(6 * 16 * 20, dtype=np.uint16).reshape(6, 16, 20)


def no_warning_open(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", VoxelSizeWarning)
        return open_volume(*args, **kwargs)


# --- TIFF and images ------------------------------------------------------------


def test_imagej_tiff_reads_data_and_voxel_size(tmp_path, volume):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path, volume, imagej=True, resolution=(1 / 0.0046, 1 / 0.0046),
        metadata={"spacing": 0.05, "unit": "micron", "axes": "ZYX"},
    )
    vol = no_warning_open(path)
    assert vol.shape == (6, 16, 20) and vol.dtype == np.uint16
    np.testing.assert_array_equal(vol.read(), volume)
    assert vol.voxel_size == pytest.approx((50.0, 4.6, 4.6))


def test_imagej_tiff_with_a_unit_per_axis(tmp_path, volume):
    # ImageJ writes yunit= and zunit= where y's or z's unit is not x's (unit=)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 4.6, 1 / 0.0046),
                     metadata={"spacing": 0.05, "unit": "nm", "yunit": "micron", "zunit": "micron", "axes": "ZYX"})
    assert no_warning_open(path).voxel_size == pytest.approx((50.0, 4.6, 4.6))


def test_ome_tiff_voxel_size_with_mixed_units(tmp_path, volume):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, volume, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 4.6, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 46,
        "PhysicalSizeYUnit": "Å", "PhysicalSizeZ": 0.05, "PhysicalSizeZUnit": "µm",
    })
    vol = no_warning_open(path)
    assert vol.attrs["format"] == "ome-tiff"
    np.testing.assert_array_equal(vol.read((slice(2, 4), slice(None), slice(5, 9))), volume[2:4, :, 5:9])
    assert vol.voxel_size == pytest.approx((50.0, 4.6, 4.6))


def test_compressed_tiled_tiff_reads_regions(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, data, compression="zlib", tile=(32, 32))
    vol = open_volume(path, voxel_size=(40, 5, 5))
    assert vol.chunks == (1, 32, 32)
    region = (slice(1, 3), slice(10, 50), slice(30, 40))
    np.testing.assert_array_equal(vol.read(region), data[region])


def test_single_2d_images_are_one_slice(tmp_path):
    image = np.arange(12 * 15, dtype=np.uint8).reshape(12, 15)
    Image.fromarray(image).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", image)
    for name in ("a.png", "a.tif"):
        vol = open_volume(tmp_path / name, voxel_size=(5, 5, 5))
        assert vol.shape == (1, 12, 15)
        np.testing.assert_array_equal(vol.read()[0], image)
        # the axes of a 2D image name its two axes, whatever the format
        assert open_volume(tmp_path / name, voxel_size=(5, 5, 5), axes="yx").shape == (1, 12, 15)
        np.testing.assert_array_equal(open_volume(tmp_path / name, voxel_size=(5, 5, 5), axes="xy").read()[0], image.T)


@pytest.mark.parametrize("writer", ["orgaseg", "imagej", "ome"])
def test_a_single_slice_keeps_the_z_spacing_its_metadata_gives(tmp_path, writer):
    # measurements in um^3 of a one-slice segmentation need its z; a plane has no z axis to carry it
    image = np.arange(12 * 15, dtype=np.uint8).reshape(1, 12, 15)
    path = tmp_path / "a.tif"
    if writer == "orgaseg":
        write_labels(path, image, voxel_size=(50.0, 4.6, 4.6), provenance={})
    elif writer == "imagej":
        tifffile.imwrite(path, image[0], imagej=True, resolution=(1 / 4.6, 1 / 4.6),
                         metadata={"spacing": 50.0, "unit": "nm"})
    else:
        tifffile.imwrite(path, image[0], ome=True, metadata={"PhysicalSizeX": 0.0046, "PhysicalSizeY": 0.0046,
                                                           "PhysicalSizeZ": 0.05})
    vol = no_warning_open(path)
    assert vol.shape == (1, 12, 15) and vol.voxel_size == pytest.approx((50.0, 4.6, 4.6))
    np.testing.assert_array_equal(vol.read(), image)


def test_a_colour_png_or_jpeg_is_read_one_channel_at_a_time(tmp_path):
    # a greyscale micrograph saved as RGB (a screenshot): refused without a channel, naming how to pick one
    grey = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "shot.png")
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)])).save(tmp_path / "shot_rgba.png")
    for name in ("shot.png", "shot_rgba.png"):
        with pytest.raises(OrgasegError, match=r"data has \d colour channels \(R, G, B.*: a greyscale image saved in "
                                               r"colour has its grey in each.*pass channel=N to choose one"):
            open_volume(tmp_path / name)
        with pytest.warns(OrgasegWarning, match="voxel size unknown"):
            volume = open_volume(tmp_path / name, channel=1)
        assert volume.shape == (1, 12, 16) and volume.dtype == np.uint8
        np.testing.assert_array_equal(volume.read(), grey[None])
        np.testing.assert_array_equal(volume.read((slice(0, 1), slice(2, 5), slice(3, 9))), grey[None, 2:5, 3:9])
    with pytest.raises(OrgasegError, match="channel 3 out of range; the data has 3 colour channels"):
        open_volume(tmp_path / "shot.png", channel=3)


def test_a_folder_of_colour_slices_is_read_one_channel_at_a_time(tmp_path):
    # as a single colour image is: the folder was refused whatever channel was given
    stack = np.arange(3 * 12 * 16, dtype=np.uint8).reshape(3, 12, 16)
    for z, plane in enumerate(stack):
        Image.fromarray(np.stack([plane, plane // 2, plane // 3], -1)).save(tmp_path / f"{z:02d}.png")
    with pytest.raises(OrgasegError, match=r"data has 3 colour channels \(R, G, B.*pass channel=N to choose one"):
        open_volume(tmp_path, voxel_size=(50, 4, 4))
    volume = no_warning_open(tmp_path, voxel_size=(50, 4, 4), channel=1)
    assert volume.shape == (3, 12, 16) and volume.dtype == np.uint8
    np.testing.assert_array_equal(volume.read(), stack // 2)
    np.testing.assert_array_equal(volume.read((slice(1, 3), slice(2, 5), slice(3, 9))), stack[1:3, 2:5, 3:9] // 2)
    # the slices share their mode: a greyscale one among them is named
    Image.fromarray(stack[1]).save(tmp_path / "01.png")
    with pytest.raises(OrgasegError, match=r"01\.png: slice is 12 x 16 uint8, but 00\.png is 12 x 16 RGB; all slices"):
        open_volume(tmp_path, voxel_size=(50, 4, 4), channel=1)


def test_folder_of_pngs_in_natural_order(tmp_path):
    for z in (10, *range(1, 10)):  # written out of order; "10" sorts before "2" as text
        Image.fromarray(np.full((8, 9), z, dtype=np.uint8)).save(tmp_path / f"{z}.png")
    vol = open_volume(tmp_path, voxel_size=(50, 4, 4))
    assert vol.shape == (10, 8, 9)
    assert vol.read()[:, 0, 0].tolist() == list(range(1, 11))


def test_folder_region_read_opens_only_needed_slices(tmp_path, volume):
    for z in range(volume.shape[0]):
        tifffile.imwrite(tmp_path / f"s{z}.tif", volume[z])
    vol = open_volume(tmp_path, voxel_size=(50, 4, 4))
    for z in (0, 1, 4, 5):  # after opening, only slices 2 and 3 remain
        (tmp_path / f"s{z}.tif").unlink()
    block = vol.read((slice(2, 4), slice(3, 7), slice(0, 5)))
    np.testing.assert_array_equal(block, volume[2:4, 3:7, 0:5])


def test_folder_with_odd_slice_names_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "0.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "1.tif", np.zeros((8, 9), np.uint8))
    with pytest.raises(OrgasegError, match=r"1\.tif.*same shape and dtype"):
        open_volume(tmp_path)


def test_folder_mixing_1_bit_and_8_bit_pngs_reads_uint8_with_white_255(tmp_path):
    mask = np.zeros((3, 6, 7), bool)
    mask[:, 1:4, 2:5] = True
    mask[1, 0, 0] = True
    Image.fromarray(mask[0]).save(tmp_path / "00.png")
    Image.fromarray(mask[1].astype(np.uint8) * 255).save(tmp_path / "01.png")
    Image.fromarray(mask[2]).save(tmp_path / "02.png")
    assert [Image.open(tmp_path / f"0{z}.png").mode for z in range(3)] == ["1", "L", "1"]
    vol = open_volume(tmp_path, voxel_size=1)
    data = vol.read()
    assert vol.dtype == data.dtype == np.uint8
    np.testing.assert_array_equal(data, np.where(mask, 255, 0))
    np.testing.assert_array_equal(vol.read((slice(2, 3), slice(1, 3), slice(None))), data[2:3, 1:3])


def test_folder_of_1_bit_pngs_stays_bool(tmp_path):
    mask = np.eye(5, dtype=bool)
    for z in range(2):
        Image.fromarray(mask).save(tmp_path / f"{z}.png")
    data = open_volume(tmp_path, voxel_size=1).read()
    assert data.dtype == np.bool_
    np.testing.assert_array_equal(data, [mask, mask])


@pytest.mark.parametrize(
    "dtypes, message",
    [
        ((np.uint8, np.uint16), r"1\.png: slice is 4 x 4 uint16, but 0\.png is 4 x 4 uint8; all slices must have"),
        ((np.bool_, np.uint16), r"1\.png: slice is 4 x 4 uint16, but 0\.png is 4 x 4 bool; all slices must have"),
        ((np.bool_, np.uint8, np.uint16), r"2\.png: slice is 4 x 4 uint16, but 0\.png is 4 x 4 bool"),
    ],
)
def test_folder_mixing_other_dtypes_is_refused(tmp_path, dtypes, message):
    for z, dtype in enumerate(dtypes):
        Image.fromarray(np.zeros((4, 4), dtype)).save(tmp_path / f"{z}.png")
    with pytest.raises(OrgasegError, match=message):
        open_volume(tmp_path, voxel_size=1)


def test_palette_png_with_grey_palette_gives_grey_values(tmp_path):
    grey = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    image = Image.fromarray(grey).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(open_volume(tmp_path / "p.png", voxel_size=1).read()[0], grey)


# --- containers -------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_and_group_key(tmp_path, volume, zarr_format):
    root = zarr.open_group(tmp_path / "c.zarr", mode="w", zarr_format=zarr_format)
    array = root.create_array("raw/s0", shape=volume.shape, chunks=(2, 8, 8), dtype=volume.dtype)
    array[...] = volume
    array.attrs["resolution"] = [40.0, 5.0, 6.0]
    vol = no_warning_open(tmp_path / "c.zarr", key="raw/s0")
    assert vol.chunks == (2, 8, 8) and vol.voxel_size == (40.0, 5.0, 6.0)
    np.testing.assert_array_equal(vol.read((slice(1, 5), slice(None), slice(2, 3))), volume[1:5, :, 2:3])
    # the array path itself opens too
    np.testing.assert_array_equal(open_volume(tmp_path / "c.zarr" / "raw" / "s0").read(), volume)
    # N5 viewer metadata lists x y z in any container (N5 data copied to Zarr keeps it)
    del array.attrs["resolution"]
    array.attrs["pixelResolution"] = {"dimensions": [6.0, 5.0, 40.0], "unit": "nm"}
    assert no_warning_open(tmp_path / "c.zarr", key="raw/s0").voxel_size == (40.0, 5.0, 6.0)


def test_a_zarr_v3_array_is_read_in_the_order_its_dimension_names_give(tmp_path, volume):
    stored = np.ascontiguousarray(volume.transpose(2, 1, 0))  # x, y, z
    array = zarr.create_array(tmp_path / "xyz.zarr", shape=stored.shape, dtype=stored.dtype, chunks=(8, 8, 2),
                              dimension_names=["x", "y", "z"])
    array[...] = stored
    array.attrs["resolution"] = [6.0, 5.0, 40.0]  # in stored order
    vol = no_warning_open(tmp_path / "xyz.zarr")
    assert vol.shape == volume.shape and vol.voxel_size == (40.0, 5.0, 6.0) and vol.chunks == (2, 8, 8)
    np.testing.assert_array_equal(vol.read(), volume)
    # names that are not axis letters say nothing: the order is z, y, x by dimensionality
    other = zarr.create_array(tmp_path / "dims.zarr", shape=volume.shape, dtype=volume.dtype,
                              dimension_names=["dim_0", "dim_1", "dim_2"])
    other[...] = volume
    np.testing.assert_array_equal(open_volume(tmp_path / "dims.zarr", voxel_size=(40, 5, 6)).read(), volume)


def test_an_axis_order_given_against_the_one_the_metadata_names_is_warned_about(tmp_path, volume):
    # it transposes the volume and its voxel size: said wherever the metadata names the axes
    named = {"dimension_names": tmp_path / "names.zarr", "ImageJ": tmp_path / "hyper.tif",
             "OME-Zarr": tmp_path / "labels.ome.zarr"}
    array = zarr.create_array(named["dimension_names"], shape=volume.shape, dtype=volume.dtype,
                              dimension_names=["z", "y", "x"])
    array[...] = volume
    tifffile.imwrite(named["ImageJ"], np.stack([volume, volume], axis=1), imagej=True, metadata={"axes": "ZCYX"})
    write_labels(named["OME-Zarr"], volume.astype(np.uint8) % 4, voxel_size=(40, 5, 6), provenance={})
    for source, path in named.items():
        given, channel = ("zcyx", 0) if source == "ImageJ" else ("zyx", None)
        with warnings.catch_warnings():
            warnings.simplefilter("error", OrgasegWarning)  # the order the metadata names: nothing to say
            open_volume(path, axes=given, channel=channel, voxel_size=(40, 5, 6))
        with pytest.warns(OrgasegWarning, match=rf"the axis order given, {given[::-1]}, overrides the one named by "
                                                rf"the .*{source}.*, {given}, which already reads"):
            open_volume(path, axes=given[::-1], channel=channel, voxel_size=(40, 5, 6))
    # a plain multipage TIFF names nothing: its pages are sections by convention, and any order is taken as given
    tifffile.imwrite(tmp_path / "plain.tif", volume)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        assert open_volume(tmp_path / "plain.tif", axes="xyz", voxel_size=(40, 5, 6)).shape == volume.shape[::-1]


def test_a_time_axis_named_c_as_the_refusal_says_reads_one_time_point_without_a_warning(tmp_path, volume):
    # the refusal of a time series says: name its time axis c and pick one entry with channel=N; doing so moves
    # no z, y or x axis, so it is no order given against the metadata's
    series = np.stack([volume, volume[::-1]])
    tifffile.imwrite(tmp_path / "series.tif", series, imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(OrgasegError, match=r"axis 't' has 2 entries.*naming it c and channel=N \(here 'czyx'\)"):
        open_volume(tmp_path / "series.tif", voxel_size=(40, 5, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        second = open_volume(tmp_path / "series.tif", axes="czyx", channel=1, voxel_size=(40, 5, 6))
    np.testing.assert_array_equal(second.read(), volume[::-1])
    with pytest.warns(OrgasegWarning, match=r"the axis order given, czxy, overrides the one named by the ImageJ"):
        open_volume(tmp_path / "series.tif", axes="czxy", channel=1, voxel_size=(40, 5, 6))


def test_zarr_bad_key_lists_arrays(tmp_path, volume):
    root = zarr.open_group(tmp_path / "c.zarr", mode="w")
    root.create_array("raw/s0", shape=volume.shape, dtype=volume.dtype)
    with pytest.raises(OrgasegError, match=r"no array or group 'nope'.*raw/s0"):
        open_volume(tmp_path / "c.zarr", key="nope")
    with pytest.raises(OrgasegError, match=r"without OME-Zarr multiscales.*raw/s0"):
        open_volume(tmp_path / "c.zarr")


def _write_ome_zarr(path: Path, data: np.ndarray, version: str) -> None:
    """Two levels (full, 2x in-plane), axes c z y x with a single channel, units in micrometres."""
    group = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    datasets = []
    for level, step in enumerate((1, 2)):
        level_data = data[None, :, ::step, ::step]
        array = group.create_array(str(level), shape=level_data.shape, chunks=(1, 2, 8, 8), dtype=data.dtype)
        array[...] = level_data
        scale = [1.0, 0.05, 0.004 * step, 0.005 * step]
        transforms = [{"type": "scale", "scale": scale}]
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    multiscales = [{"version": version, "axes": axes, "datasets": datasets}]
    if version == "0.4":
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_change_shape_and_voxel_size(tmp_path, volume, version):
    path = tmp_path / "img.ome.zarr"
    _write_ome_zarr(path, volume, version)
    full = no_warning_open(path)
    assert full.shape == (6, 16, 20) and full.voxel_size == pytest.approx((50, 4, 5))
    np.testing.assert_array_equal(full.read(), volume)
    half = no_warning_open(path, level=1)
    assert half.shape == (6, 8, 10) and half.voxel_size == pytest.approx((50, 8, 10))
    np.testing.assert_array_equal(half.read((slice(0, 2), slice(None), slice(None))), volume[:2, ::2, ::2])
    with pytest.raises(OrgasegError, match="level 2 requested, but there are 2"):
        open_volume(path, level=2)


def test_ome_zarr_translation_is_the_volume_origin_in_nm(tmp_path, volume):
    path = tmp_path / "placed.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=volume, chunks=(2, 8, 8))
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    # the dataset's scale and translation, then a multiscale-wide scale and translation (NGFF order)
    dataset = {"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [0.05, 0.004, 0.005]}, {"type": "translation", "translation": [0.1, 0.2, 0.3]}]}
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [dataset], "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 2.0, 1.0]}, {"type": "translation", "translation": [0.0, 0.0, 1.0]}]}]
    placed = no_warning_open(path)
    assert placed.voxel_size == pytest.approx((50, 8, 5))
    assert placed.origin == pytest.approx((100, 400, 1300))
    # an orgaseg label output written with that origin reads it back, at every level
    labels = write_labels(tmp_path / "seg.ome.zarr", np.zeros((4, 300, 260), np.uint8), voxel_size=(10, 10, 10),
                          provenance={}, origin=placed.origin)
    assert open_volume(labels).origin == pytest.approx((100, 400, 1300))
    assert open_volume(labels, level=2).origin == pytest.approx((115, 415, 1315))
    # formats that place nothing start at zero
    assert as_volume(volume).origin == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("origin", [(1.0, 2.0), (0.0, float("nan"), 0.0), "here"])
def test_a_bad_origin_is_refused(tmp_path, origin):
    with pytest.raises(OrgasegError, match="origin must be 3 finite numbers"):
        write_labels(tmp_path / "seg.ome.zarr", np.zeros((2, 4, 4), np.uint8), voxel_size=10, provenance={},
                     origin=origin)


def test_n5_with_resolution_attrs_presents_zyx(tmp_path, volume):
    path = tmp_path / "c.n5"
    store = tensorstore.open({
        "driver": "n5", "kvstore": {"driver": "file", "path": str(path / "em" / "s0")}, "create": True,
        "metadata": {"dimensions": [20, 16, 6], "blockSize": [8, 8, 2], "dataType": "uint16",
                     "compression": {"type": "gzip"}},
    }).result()
    store[...] = volume.T  # N5 order is x y z
    attrs_file = path / "em" / "s0" / "attributes.json"
    attrs = json.loads(attrs_file.read_text())
    assert attrs["dimensions"] == [20, 16, 6]  # x, y, z as N5 lists them
    attrs["pixelResolution"] = {"dimensions": [4.0, 5.0, 40.0], "unit": "nm"}
    attrs_file.write_text(json.dumps(attrs))
    vol = no_warning_open(path, key="em/s0")
    assert vol.shape == (6, 16, 20) and vol.chunks == (2, 8, 8)
    assert vol.voxel_size == (40.0, 5.0, 4.0)
    np.testing.assert_array_equal(vol.read((slice(1, 4), slice(2, 9), slice(None))), volume[1:4, 2:9])
    # a multiscale group as key opens s<level>; the dataset list names it on a bad key
    assert open_volume(path, key="em").shape == (6, 16, 20)
    with pytest.raises(OrgasegError, match=r"no N5 dataset or group 'xx'; datasets: em/s0"):
        open_volume(path, key="xx")


@pytest.mark.parametrize("on_level", [True, False], ids=["pixelResolution-on-every-level", "on-the-group"])
def test_n5_pyramid_levels_scale_the_resolution_by_their_downsampling_factors(tmp_path, volume, on_level):
    # n5-spark and N5 Viewer write the full resolution's pixelResolution on every level (or on the group), and
    # each level's downsamplingFactors (x y z)
    path = tmp_path / "p.n5"
    resolution = {"dimensions": [4.6, 4.6, 50.0], "unit": "nm"}
    for level, factors in enumerate(([1, 1, 1], [2, 2, 1])):
        data = volume[:, :: factors[1], :: factors[0]]
        store = tensorstore.open({
            "driver": "n5", "kvstore": {"driver": "file", "path": str(path / "raw" / f"s{level}")}, "create": True,
            "metadata": {"dimensions": list(data.shape[::-1]), "blockSize": [8, 8, 2], "dataType": "uint16",
                         "compression": {"type": "raw"}},
        }).result()
        store[...] = data.T
        attrs_file = path / "raw" / f"s{level}" / "attributes.json"
        attrs = json.loads(attrs_file.read_text())
        attrs.update({"pixelResolution": resolution} if on_level else {}, downsamplingFactors=factors)
        attrs_file.write_text(json.dumps(attrs))
    group = {"scales": [[1, 1, 1], [2, 2, 1]], "multiScale": True, **({} if on_level else {"pixelResolution": resolution})}
    (path / "raw" / "attributes.json").write_text(json.dumps(group))
    assert no_warning_open(path, key="raw/s0").voxel_size == pytest.approx((50.0, 4.6, 4.6))
    level = no_warning_open(path, key="raw/s1")
    assert level.shape == (6, 8, 10) and level.voxel_size == pytest.approx((50.0, 9.2, 9.2))


def test_a_level_of_an_ome_zarr_opened_by_its_path_or_key_keeps_its_scale_and_place(tmp_path):
    # viewers hand users paths such as IMAGE/labels/segmentation/1
    path = tmp_path / "seg.ome.zarr"
    write_labels(path, np.zeros((2, 512, 512), np.uint8), voxel_size=(50.0, 4.6, 4.6), provenance={},
                 origin=(100.0, 46.0, 46.0))
    by_level = no_warning_open(path, level=1)
    assert by_level.voxel_size == pytest.approx((50.0, 9.2, 9.2))
    for opened in (no_warning_open(path / "labels" / "segmentation" / "1"),
                   no_warning_open(path, key="labels/segmentation/1")):
        assert opened.shape == by_level.shape and opened.voxel_size == pytest.approx(by_level.voxel_size)
        assert opened.origin == pytest.approx(by_level.origin)


def test_n5_cellmap_transform_attrs(tmp_path, volume):
    path = tmp_path / "c.n5"
    tensorstore.open({
        "driver": "n5", "kvstore": {"driver": "file", "path": str(path / "s0")}, "create": True,
        "metadata": {"dimensions": [20, 16, 6], "blockSize": [20, 16, 6], "dataType": "uint16",
                     "compression": {"type": "raw"}},
    }).result()
    attrs_file = path / "s0" / "attributes.json"
    attrs = json.loads(attrs_file.read_text())
    attrs["transform"] = {"axes": ["z", "y", "x"], "scale": [3.24, 4.0, 4.0], "translate": [0, 0, 0],
                          "units": ["nm", "nm", "nm"]}
    attrs_file.write_text(json.dumps(attrs))
    # nothing was written: the one chunk is missing, and says so
    with pytest.warns(MissingChunksWarning, match=r"s0: 1 of 1 chunks are missing .*index \(0, 0, 0\)"):
        assert no_warning_open(path / "s0").voxel_size == (3.24, 4.0, 4.0)
    # its translation places it (named axes, in the transform's units)
    attrs["transform"].update(axes=["x", "y", "z"], scale=[4.0, 4.0, 3.24], translate=[0.5, 0.25, 0.0125],
                              units=["um", "um", "um"])
    attrs_file.write_text(json.dumps(attrs))
    with pytest.warns(MissingChunksWarning):
        opened = open_volume(path / "s0")
    assert opened.voxel_size == pytest.approx((3240, 4000, 4000)) and opened.origin == pytest.approx((12.5, 250, 500))


def test_a_transform_translation_places_a_zarr_array(tmp_path, volume):
    # CellMap / OpenOrganelle: each array's transform gives its voxel size and where its first voxel lies
    transform = {"axes": ["z", "y", "x"], "scale": [8.0, 4.0, 4.0], "translate": [16.0, 2.0, 6.0],
                 "units": ["nm", "nm", "nm"]}
    array = zarr.create_array(tmp_path / "s1.zarr", shape=volume.shape, dtype=volume.dtype, chunks=(2, 8, 8))
    array[...] = volume
    array.attrs["transform"] = transform
    opened = no_warning_open(tmp_path / "s1.zarr")
    assert opened.voxel_size == (8.0, 4.0, 4.0) and opened.origin == (16.0, 2.0, 6.0)
    # a translation that names no length, or not every axis, places nothing
    array.attrs["transform"] = {**transform, "units": ["s", "nm", "nm"], "scale": [8.0, 4.0, 4.0]}
    assert open_volume(tmp_path / "s1.zarr", voxel_size=(8, 4, 4)).origin == (0.0, 0.0, 0.0)
    array.attrs["transform"] = {**transform, "translate": [16.0, 2.0]}
    assert no_warning_open(tmp_path / "s1.zarr").origin == (0.0, 0.0, 0.0)


def test_hdf5_key_and_element_size(tmp_path, volume):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("volumes/raw", data=volume, chunks=(2, 8, 10))
        dataset.attrs["element_size_um"] = [0.05, 0.004, 0.004]
        f.create_dataset("volumes/other", data=np.zeros((2, 2, 2)))
    vol = no_warning_open(path, key="volumes/raw")
    assert vol.voxel_size == pytest.approx((50, 4, 4)) and vol.chunks == (2, 8, 10)
    np.testing.assert_array_equal(vol.read((slice(0, 3), slice(4, 6), slice(None))), volume[0:3, 4:6])
    for key in (None, "volumes/nope"):
        with pytest.raises(OrgasegError, match=r"datasets: volumes/other, volumes/raw"):
            open_volume(path, key=key)


def ilastik_axistags(keys: str) -> str:
    """The ``axistags`` JSON ilastik (vigra) writes beside a dataset, one entry per stored axis."""
    flags = {"t": 8, "c": 1}
    return json.dumps({"axes": [{"key": k, "typeFlags": flags.get(k, 2), "resolution": 0, "description": ""}
                                for k in keys]})


def test_hdf5_axistags_give_the_stored_axis_order(tmp_path, volume):
    # an ilastik export: t, z, y, x, c, one time point and one channel; and a volume stored x, y, z
    path = tmp_path / "export.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("exported_data", data=volume[None, ..., None]).attrs["axistags"] = ilastik_axistags("tzyxc")
        f.create_dataset("xyz", data=volume.transpose(2, 1, 0)).attrs["axistags"] = ilastik_axistags("xyz")
        f.create_dataset("bad", data=volume).attrs["axistags"] = "{not json"
    for key in ("exported_data", "xyz"):
        vol = open_volume(path, key=key, voxel_size=(8, 4, 4))
        assert vol.shape == volume.shape, key
        np.testing.assert_array_equal(vol.read((slice(None),) * 3), volume)
    # tags that cannot be read leave the default order
    assert open_volume(path, key="bad", voxel_size=(8, 4, 4)).shape == volume.shape
    # the order they name is metadata: another one given is warned about
    with pytest.warns(OrgasegWarning, match=r"overrides the one named by ilastik's axistags, xyz"):
        open_volume(path, key="xyz", voxel_size=(8, 4, 4), axes="zyx")


def test_npy_is_memory_mapped(tmp_path, volume):
    np.save(tmp_path / "v.npy", volume)
    vol = open_volume(tmp_path / "v.npy", voxel_size=(8, 4, 4))
    assert isinstance(vol.array, np.memmap)
    np.testing.assert_array_equal(vol.read((slice(5, 6), slice(None), slice(None))), volume[5:6])


# --- MRC ------------------------------------------------------------------------------


def write_mrc(path: Path, data: np.ndarray, voxel_size=None, **header) -> Path:
    """``data`` as an MRC file through mrcfile; ``voxel_size`` in Å, x y z as mrcfile takes it; ``header``
    fields set after (``ispg``, ``origin``, ``mapc``, ...)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
        for name, value in header.items():
            setattr(mrc.header, name, value)
    return path


def patch_mrc(path: Path, offset: int, *values: int) -> Path:
    """Overwrite int32 header words from byte ``offset`` (mrcfile writes this machine's byte order)."""
    data = bytearray(path.read_bytes())
    data[offset:offset + 4 * len(values)] = np.array(values, np.int32).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_mrc_is_memory_mapped_with_its_voxel_size_in_nm_and_no_origin(tmp_path, volume, capsys):
    # a header that places the volume both ways MRC writers do: ORIGIN in Å and a start in voxels
    path = write_mrc(tmp_path / "v.mrc", volume.astype(np.int16), voxel_size=(46, 40, 500),
                     origin=(100.0, 200.0, 300.0), nxstart=3, nystart=4, nzstart=5)
    vol = no_warning_open(path)
    assert isinstance(vol.array, np.memmap)
    assert vol.shape == (6, 16, 20) and vol.dtype == np.int16
    assert vol.voxel_size == (50.0, 4.0, 4.6)  # z y x, nm; as written, not float32's 4.599999904632568
    assert vol.origin == (0.0, 0.0, 0.0) and not vol.attrs.get("placed")  # IMOD and Chimera disagree on it
    # ... which info says, as a user placing outputs by it would be misled
    from orgaseg.cli import main

    assert main(["info", str(path), "--quiet"]) == 0
    assert ("origin:      not read: the MRC header's ORIGIN 100, 200, 300 Å and start 3, 4, 5 voxels (x y z); "
            "outputs and measurements start at 0") in capsys.readouterr().out
    assert vol.attrs["format"] == "mrc" and not vol.attrs.get("voxel_size_assumed")
    np.testing.assert_array_equal(vol.read((slice(2, 4), slice(5, 9), slice(None))), volume[2:4, 5:9])
    # IMOD's reconstructions, stacks, aligned stacks; maps; image stacks (RELION's, cryoSPARC's particles)
    for suffix in (".rec", ".st", ".ali", ".map", ".mrcs"):
        other = path.rename(path.with_suffix(suffix))
        assert no_warning_open(other).voxel_size == pytest.approx((50.0, 4.0, 4.6))
        path = other


@pytest.mark.parametrize("dtype, mode", [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6),
                                         (np.float16, 12)])
def test_each_mrc_mode_reads_as_its_dtype(tmp_path, dtype, mode):
    data = (np.arange(3 * 4 * 5) - 30).reshape(3, 4, 5).astype(dtype)  # negative where the type is signed
    path = write_mrc(tmp_path / "v.mrc", data, voxel_size=10)
    with mrcfile.open(path, header_only=True) as mrc:
        assert mrc.header.mode == mode
    vol = no_warning_open(path)
    assert vol.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.read(), data)


@pytest.mark.parametrize("mode, message", [
    (3, r"MRC data mode 3, complex 16-bit integers, a Fourier transform"),
    (4, r"MRC data mode 4, complex 32-bit floats, a Fourier transform"),
    (16, r"MRC data mode 16, RGB colour"),
    (101, r"MRC data mode 101, 4-bit values packed two per byte"),
    (7, r"unknown MRC data mode 7 \(a damaged header\?\)"),
])
def test_mrc_modes_that_are_no_image_are_refused(tmp_path, mode, message):
    path = patch_mrc(write_mrc(tmp_path / "v.mrc", np.zeros((2, 4, 4), np.float32)), 12, mode)
    with pytest.raises(OrgasegError, match=rf"v\.mrc: {message}.*; orgaseg reads modes 0 \(int8\), 1 \(int16\), "
                                           r"2 \(float32\), 6 \(uint16\), 12 \(float16\)$"):
        open_volume(path)


def test_imod_unsigned_bytes_read_unsigned_as_imod_reads_them(tmp_path):
    data = np.array([[[0, 100, -1, -128]]], np.int8)  # stored bytes 0, 100, 255, 128
    path = patch_mrc(write_mrc(tmp_path / "imod.mrc", data, voxel_size=10), 152, 1146047817, 0)  # IMOD, unsigned
    vol = no_warning_open(path)
    assert vol.dtype == np.uint8
    np.testing.assert_array_equal(vol.read(), [[[0, 100, 255, 128]]])
    patch_mrc(path, 152, 1146047817, 1)  # IMOD's flag for signed bytes
    signed = no_warning_open(path)
    assert signed.dtype == np.int8
    np.testing.assert_array_equal(signed.read(), data)
    patch_mrc(path, 152, 0, 0)  # no IMOD stamp: MRC2014's signed bytes
    np.testing.assert_array_equal(no_warning_open(path).read(), data)


def test_mrc_axis_codes_are_applied_as_the_stored_order(tmp_path, volume):
    # sections along x, rows along y, columns along z (mapc, mapr, maps = 3, 2, 1): stored x, y, z
    path = write_mrc(tmp_path / "xyz.mrc", volume.T.copy(), mapc=3, mapr=2, maps=1, mx=20, my=16, mz=6,
                     cella=(20 * 46.0, 16 * 40.0, 6 * 500.0))
    vol = no_warning_open(path)
    assert vol.shape == (6, 16, 20) and vol.attrs["axes"] == "xyz"
    # an axis order given that the header contradicts (an IMOD user's "x y z") transposes: said
    with pytest.warns(OrgasegWarning, match=r"xyz\.mrc: the axis order given, zyx, overrides the one named by the MRC "
                                            r"header's axis codes \(mapc, mapr, maps\), xyz, which already reads"):
        assert open_volume(path, axes="zyx").shape == (20, 16, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        assert open_volume(path, axes="xyz").shape == (6, 16, 20)  # the header's own order: nothing to say
    assert vol.voxel_size == pytest.approx((50.0, 4.0, 4.6))
    np.testing.assert_array_equal(vol.read((slice(1, 3), slice(0, 5), slice(7, 9))), volume[1:3, 0:5, 7:9])
    # read again from its record, and on another volume's grid (where a TIFF's axes are taken as z, y, x)
    np.testing.assert_array_equal(open_volume(path, axes=vol.attrs["axes"]).read(), volume)
    np.testing.assert_array_equal(open_on_grid(path, "the mask", "the raw volume's", (6, 16, 20)).read(), volume)
    write_mrc(path, volume.T.copy(), voxel_size=10, mapc=1, mapr=1, maps=3)
    with pytest.raises(OrgasegError, match=r"xyz\.mrc: the header's axis codes \(mapc, mapr, maps = 1, 1, 3\) are "
                                           r"not an order of 1, 2, 3"):
        open_volume(path)


@pytest.mark.parametrize("cell", ["zero", "one angstrom"])
def test_an_mrc_header_without_a_voxel_size_falls_back_to_1_nm(tmp_path, volume, cell):
    # mrcfile writes a cell of 0 unless told; other writers leave a voxel of 1 Å
    path = write_mrc(tmp_path / "v.mrc", volume, voxel_size=None if cell == "zero" else 1.0)
    with pytest.warns(VoxelSizeWarning, match=r"v\.mrc: voxel size unknown, assuming 1 x 1 x 1 nm: the stack is "
                                              r"taken as isotropic"):
        vol = open_volume(path)
    assert vol.voxel_size == (1.0, 1.0, 1.0) and vol.attrs["voxel_size_assumed"]
    # in-plane sizes without a z spacing: z is taken as the in-plane size, said
    write_mrc(path, volume, voxel_size=(46.0, 46.0, 1.0))
    with pytest.warns(VoxelSizeWarning, match=r"z spacing unknown, assuming 4\.6 nm \(the in-plane size\)"):
        vol = open_volume(path)
    assert vol.voxel_size == pytest.approx((4.6, 4.6, 4.6)) and not vol.attrs.get("voxel_size_assumed")
    assert no_warning_open(path, voxel_size=(50, 4.6, 4.6)).voxel_size == (50, 4.6, 4.6)
    write_mrc(path, volume, voxel_size=(46.0, -46.0, 500.0))  # a size that is wrong, not unset
    with pytest.raises(OrgasegError, match=r"v\.mrc: the metadata gives a voxel size for y that is not a positive"):
        open_volume(path)


def test_a_single_mrc_image_is_one_slice(tmp_path, volume):
    path = write_mrc(tmp_path / "one.mrc", volume[0], voxel_size=(46.0, 40.0, 500.0))
    with mrcfile.open(path, header_only=True) as mrc:
        assert mrc.header.ispg == 0  # an image stack of one image
    vol = no_warning_open(path)
    assert vol.shape == (1, 16, 20) and vol.voxel_size == pytest.approx((50.0, 4.0, 4.6))
    np.testing.assert_array_equal(vol.read(), volume[:1])
    write_mrc(path, volume[0], voxel_size=10, mapc=1, mapr=3, maps=2)  # an x-z section
    with pytest.raises(OrgasegError, match=r"one\.mrc: one image whose rows lie along z \(mapc, mapr, maps = 1, 3, "
                                           r"2\); orgaseg reads one image as an x-y plane"):
        open_volume(path)


def test_an_mrc_image_stack_is_a_volume_and_a_volume_stack_needs_a_channel(tmp_path, volume):
    path = write_mrc(tmp_path / "images.mrc", volume, voxel_size=(46.0, 46.0, 500.0), ispg=0)  # e.g. serial sections
    vol = no_warning_open(path)
    assert vol.shape == (6, 16, 20) and vol.voxel_size == pytest.approx((50.0, 4.6, 4.6))
    stack = np.stack([volume, volume + 1, volume + 2])  # three volumes of 6 sections: space group 401, mz 6
    path = write_mrc(tmp_path / "volumes.mrc", stack, voxel_size=(46.0, 46.0, 500.0))
    with pytest.raises(OrgasegError, match=r"volumes\.mrc: data has 3 volumes in an MRC volume stack \(axes 'czyx', "
                                           r"shape \(3, 6, 16, 20\)\); pass channel=N to choose one$"):
        open_volume(path)
    second = no_warning_open(path, channel=1)
    assert second.shape == (6, 16, 20) and second.voxel_size == pytest.approx((50.0, 4.6, 4.6))
    assert second.attrs["axes"] == "czyx" and second.attrs["channel"] == 1
    np.testing.assert_array_equal(second.read(), volume + 1)
    with pytest.raises(OrgasegError, match=r"channel 3 out of range; the data has 3 volumes in an MRC volume stack"):
        open_volume(path, channel=3)
    patch_mrc(path, 36, 4)  # mz = 4 does not divide the 18 sections
    with pytest.raises(OrgasegError, match=r"a volume stack \(space group 401\) of 18 sections in volumes of mz = 4"):
        open_volume(path)


def test_bad_mrc_files_are_refused_naming_the_problem(tmp_path, volume):
    intact = write_mrc(tmp_path / "v.mrc", volume, voxel_size=10)
    content = intact.read_bytes()
    truncated = tmp_path / "truncated.mrc"
    truncated.write_bytes(content[: 1024 + 1000])
    with pytest.raises(OrgasegError, match=r"truncated\.mrc: the header declares 6 x 16 x 20 voxels of uint16 "
                                           r"\(sections x rows x columns, 3,840 bytes\), but the file holds 1,000 "
                                           r"after the header \(truncated MRC\?\)"):
        open_volume(truncated)
    truncated.write_bytes(content[:500])
    with pytest.raises(OrgasegError, match=r"truncated\.mrc: not an MRC file \(500 bytes, less than the 1,024 of an "
                                           r"MRC header"):
        open_volume(truncated)
    impostor = tmp_path / "impostor.mrc"  # a TIFF under an MRC name
    tifffile.imwrite(impostor, volume)
    with pytest.raises(OrgasegError, match=r"impostor\.mrc: not an MRC file \(its header has no 'MAP' identifier"):
        open_volume(impostor)
    with pytest.raises(OrgasegError, match=r"v\.mrc: key 'raw' given, but this format holds a single volume"):
        open_volume(intact, key="raw")
    # a header slightly off, as older writers leave it, is read, with what mrcfile found said
    patch_mrc(intact, 212, 0)  # no machine stamp
    with pytest.warns(OrgasegWarning, match=r"v\.mrc: Unrecognised machine stamp: 0x00 0x00 0x00 0x00 \(mrcfile\); "
                                            r"read as the header describes"):
        vol = open_volume(intact)
    np.testing.assert_array_equal(vol.read(), volume)
    intact.write_bytes(content + bytes(16))
    with pytest.warns(OrgasegWarning, match=r"MRC file is 16 bytes larger than expected \(mrcfile\)"):
        np.testing.assert_array_equal(open_volume(intact).read(), volume)


@pytest.mark.parametrize("kind", ["SERI", "FEI1"])
def test_an_mrc_tilt_series_is_read_as_sections_with_a_warning(tmp_path, volume, kind):
    # SerialEM and Thermo Fisher software write each image's tilt angle into the extended header
    angles = np.linspace(-60, 60, volume.shape[0])
    path = tmp_path / "series.st"
    with mrcfile.new(path) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = 10
        if kind == "SERI":  # 4 bytes per section (nint), holding the tilt angle x 100 (nreal flag 1)
            entries = np.zeros((len(angles), 2), np.int16)
            entries[:, 0] = np.round(angles * 100)
            mrc.set_extended_header(np.frombuffer(entries.tobytes(), dtype="V1"))
            extra = bytearray(bytes(mrc.header.extra2))
            extra[16:20] = np.array([4, 1], np.int16).tobytes()  # bytes 128-131 of the header: nint, nreal
            mrc.header.extra2 = bytes(extra)
        else:
            dtype = mrcfile.dtypes.get_ext_header_dtype(b"FEI1", "=")
            entries = np.zeros(len(angles), dtype)
            entries["Metadata size"], entries["Alpha tilt"] = dtype.itemsize, angles
            mrc.set_extended_header(entries)
        mrc.header.exttyp = kind.encode()
    with pytest.warns(OrgasegWarning, match=r"series\.st: a tilt series, by its extended header \(tilt angles -60° "
                                            r"to 60° over 6 sections\): its sections are projections"):
        vol = open_volume(path)
    np.testing.assert_array_equal(vol.read(), volume)
    # the same extended header with every image at one angle: serial sections, read without a word
    with mrcfile.open(path, mode="r+") as mrc:
        if kind == "SERI":
            mrc.set_extended_header(np.frombuffer(np.tile(np.array([1500, 0], np.int16), len(angles)).tobytes(),
                                                  dtype="V1"))
        else:
            entries = np.array(mrc.indexed_extended_header)
            entries["Alpha tilt"] = 15.0
            mrc.set_extended_header(entries)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        open_volume(path)


# --- axes and voxel size ------------------------------------------------------------


def test_axes_reorder_xyz_and_squeeze_channel(tmp_path, volume):
    np.save(tmp_path / "xyz.npy", volume.T)
    vol = open_volume(tmp_path / "xyz.npy", axes="xyz", voxel_size=1)
    assert vol.shape == (6, 16, 20)
    np.testing.assert_array_equal(vol.read((slice(1, 3), slice(0, 5), slice(7, 8))), volume[1:3, 0:5, 7:8])
    np.save(tmp_path / "zcyx.npy", volume[:, None])
    squeezed = open_volume(tmp_path / "zcyx.npy", axes="zcyx", voxel_size=1)
    np.testing.assert_array_equal(squeezed.read(), volume)
    # 4D with one singleton extra axis needs no axes at all
    np.testing.assert_array_equal(open_volume(tmp_path / "zcyx.npy", voxel_size=1).read(), volume)


def test_channel_choice_and_many_channels_error(tmp_path, volume):
    np.save(tmp_path / "czyx.npy", np.stack([volume, volume + 1]))
    with pytest.raises(OrgasegError, match="2 channels.*channel=N"):
        open_volume(tmp_path / "czyx.npy", axes="czyx")
    second = open_volume(tmp_path / "czyx.npy", axes="czyx", channel=1, voxel_size=1)
    np.testing.assert_array_equal(second.read(), volume + 1)


def test_axes_view_ints_and_missing_z():
    data = np.arange(4 * 5).reshape(5, 4)  # stored x, y
    view = AxesView(data, "xy")
    assert view.shape == (1, 4, 5)
    np.testing.assert_array_equal(view[:, 1:3, 2], data.T[None, 1:3, 2])
    np.testing.assert_array_equal(view[0], data.T)


def test_explicit_voxel_size_overrides_metadata(tmp_path, volume):
    path = tmp_path / "stack.tif"
    metadata = {"spacing": 40, "unit": "nm", "axes": "ZYX"}
    tifffile.imwrite(path, volume, imagej=True, resolution=(0.25, 0.25), metadata=metadata)
    assert no_warning_open(path).voxel_size == (40.0, 4.0, 4.0)
    assert no_warning_open(path, voxel_size=(30, 3, 2)).voxel_size == (30.0, 3.0, 2.0)
    assert no_warning_open(path, voxel_size=7).voxel_size == (7.0, 7.0, 7.0)
    with pytest.raises(OrgasegError, match="voxel_size must be 3 positive numbers"):
        open_volume(path, voxel_size=(1, -1, 1))


def test_missing_voxel_size_warns_and_defaults_to_one(tmp_path, volume):
    np.save(tmp_path / "v.npy", volume)
    # on a stack, what the guess does (serial sections filtered as if isotropic) is said with the fix
    with pytest.warns(VoxelSizeWarning, match=r"v\.npy: voxel size unknown, assuming 1 x 1 x 1 nm: the stack is "
                                              r"taken as isotropic \(features filter across sections, sizes in nm "
                                              r"take them as thin as the pixels\); pass voxel_size="):
        vol = open_volume(tmp_path / "v.npy")
    assert vol.voxel_size == (1.0, 1.0, 1.0)
    np.save(tmp_path / "one.npy", volume[:1])
    with pytest.warns(VoxelSizeWarning) as warned:
        open_volume(tmp_path / "one.npy")
    # a single image has no thickness to give: the warning says which Z will do, and what the guess costs
    assert str(warned[0].message).endswith("one.npy: voxel size unknown, assuming 1 x 1 x 1 nm; pass voxel_size=(z, "
                                           "y, x) in nm (one image: its pixel size Y X will do, e.g. voxel_size=(4.6, "
                                           "4.6), its thickness Z then taken as Y, which matters little (a size in "
                                           "nm^3 for instances reads it); the baseline's filter scales are in nm, so "
                                           "1 nm pixels make them 10 to 160 pixels wide)")
    # the example as the caller gives it (from Python it read "e.g. 4.6 4.6", the command line's way)
    assert "will do, e.g. --voxel-size 4.6 4.6, its thickness" in warned[0].message.for_command_line()
    # ... as a single image takes two numbers, its pixel size (y x), its thickness then its y size, as where its
    # metadata gives only the pixel size; a stack's planes need their spacing
    assert no_warning_open(tmp_path / "one.npy", voxel_size=(4.6, 5.0)).voxel_size == (4.6, 4.6, 5.0)
    with pytest.raises(OrgasegError, match=r"v\.npy: voxel size 4\.6 4\.6 nm: two numbers \(y x\) are the pixel "
                                           r"size of a single image \(one plane\), but this volume has 6 planes: pass "
                                           r"voxel_size=\(z, y, x\) with z"):
        open_volume(tmp_path / "v.npy", voxel_size=(4.6, 4.6))


@pytest.mark.parametrize("unit, per_unit", [("CENTIMETER", 1e7 / 4.6), ("INCH", 2.54e7 / 4.6)])
def test_a_plain_tiff_gives_its_pixel_size_from_the_resolution_tags(tmp_path, volume, unit, per_unit):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, volume, resolution=(per_unit, per_unit), resolutionunit=unit)
    # the tags say nothing about z: it is assumed, and the warning says so
    with pytest.warns(VoxelSizeWarning, match=r"z spacing unknown, assuming 4\.6 nm \(the in-plane size\): the stack "
                                              r"is taken as isotropic"):
        vol = open_volume(path)
    assert vol.voxel_size == pytest.approx((4.6, 4.6, 4.6)) and not vol.attrs.get("voxel_size_assumed")
    assert no_warning_open(path, voxel_size=(50, 4.6, 4.6)).voxel_size == (50.0, 4.6, 4.6)


@pytest.mark.parametrize("resolution, unit", [((72, 72), "INCH"), ((300, 300), "INCH"), ((1, 1), "CENTIMETER"),
                                              ((1e7 / 4.6, 1e7 / 4.6), "NONE")])
def test_a_plain_tiffs_print_default_or_unitless_resolution_is_no_voxel_size(tmp_path, volume, resolution, unit):
    # 72 dpi is what image software writes by default, not the microscope's pixel
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, volume, resolution=resolution, resolutionunit=unit)
    with pytest.warns(VoxelSizeWarning, match="voxel size unknown, assuming 1 x 1 x 1 nm"):
        vol = open_volume(path)
    assert vol.attrs.get("voxel_size_assumed")


def test_an_fei_microscope_tiff_gives_its_pixel_size_from_its_own_tag(tmp_path, volume):
    # FEI / Thermo Fisher microscopes write 72 dpi in the resolution tags and the pixel in their own tag's [Scan]
    path = tmp_path / "fei.tif"
    scan = "[User]\nDate=12/07/2026\n[Scan]\nPixelWidth=4.6e-09\nPixelHeight=5e-09\n[System]\nType=DualBeam\n"
    tifffile.imwrite(path, volume[0], resolution=(72, 72), resolutionunit="INCH",
                     extratags=[(34682, "s", 0, scan, True)])
    assert no_warning_open(path).voxel_size == pytest.approx((5.0, 5.0, 4.6))
    tifffile.imwrite(path, volume[0], resolution=(1e7 / 4.0, 1e7 / 4.0), resolutionunit="CENTIMETER",
                     extratags=[(34682, "s", 0, scan, True)])
    assert no_warning_open(path).voxel_size == pytest.approx((4.0, 4.0, 4.0))  # resolution tags that say one win
    tifffile.imwrite(path, volume[0], extratags=[(34682, "s", 0, "[Scan]\nPixelWidth=0\n", True)])
    with pytest.warns(VoxelSizeWarning, match="voxel size unknown"):
        assert open_volume(path).attrs.get("voxel_size_assumed")


def test_an_imagej_stack_without_spacing_has_voxel_depth_one_unit(tmp_path, volume):
    # ImageJ leaves spacing= out of the description when the voxel depth is 1 unit, its default: read as ImageJ
    # reads it, with a warning (a stack whose depth nobody set is the common case: 1 nm sections beside 4.6 nm pixels)
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 0.0046, 1 / 0.0046),
                     metadata={"unit": "micron", "axes": "ZYX"})
    with pytest.warns(VoxelSizeWarning, match=r"fiji.tif: the ImageJ metadata gives no z spacing, which ImageJ reads "
                                              r"as its default voxel depth of 1 micron \(1000 nm\), rarely the section "
                                              r"thickness; pass voxel_size=\(z, y, x\) in nm"):
        assert open_volume(path).voxel_size == pytest.approx((1000.0, 4.6, 4.6))
    assert no_warning_open(path, voxel_size=(50, 4.6, 4.6)).voxel_size == (50, 4.6, 4.6)
    # one image: no z to read, nor to warn about
    tifffile.imwrite(path, volume[0], imagej=True, resolution=(1 / 0.0046, 1 / 0.0046), metadata={"unit": "micron"})
    assert no_warning_open(path).voxel_size == pytest.approx((4.6, 4.6, 4.6))


def test_input_errors_are_clear(tmp_path):
    with pytest.raises(OrgasegError, match="no such file or directory"):
        open_volume(tmp_path / "missing.tif")
    # an array where a path belongs was pathlib's TypeError
    with pytest.raises(OrgasegError, match=r"a path to a file or folder is needed, got ndarray \(data in memory: "
                                           r"orgaseg.io.as_volume\(array"):
        open_volume(np.zeros((2, 8, 8)))
    (tmp_path / "v.xyz").write_text("?")
    with pytest.raises(OrgasegError, match=r"v\.xyz: unknown format '\.xyz'.* MRC \(\.mrc/\.mrcs/\.rec/"):
        open_volume(tmp_path / "v.xyz")
    np.save(tmp_path / "line.npy", np.zeros(10))
    with pytest.raises(OrgasegError, match="1D data"):
        open_volume(tmp_path / "line.npy")
    np.save(tmp_path / "4d.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(OrgasegError, match=r"with 1 axis besides z, y and x longer than 1, and nothing says which"):
        open_volume(tmp_path / "4d.npy")
    np.save(tmp_path / "5d.npy", np.zeros((2, 2, 3, 4, 5)))
    with pytest.raises(OrgasegError, match=r"with 2 axes besides z, y and x"):
        open_volume(tmp_path / "5d.npy")
    # a time series: one time point is read by naming its axis c
    with pytest.raises(OrgasegError, match=r"axis 't' has 2 entries.*naming it c and channel=N \(here 'czyx'\)"):
        open_volume(tmp_path / "4d.npy", axes="tzyx")
    assert open_volume(tmp_path / "4d.npy", axes="czyx", channel=1, voxel_size=(1, 1, 1)).shape == (3, 4, 5)
    with pytest.raises(OrgasegError, match="axes 'zy' do not fit"):
        open_volume(tmp_path / "4d.npy", axes="zy")
    np.save(tmp_path / "v.npy", np.zeros((2, 4, 4)))
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((2, 4, 4), np.uint8))
    for single in ("v.npy", "v.tif"):  # a level of a format without a pyramid is refused, not ignored
        with pytest.raises(OrgasegError, match="level=1 given, but this format holds one resolution"):
            open_volume(tmp_path / single, level=1)
    for level in (-1, "1", 0.5):  # "1" and 0.5 failed in the comparison with 0 ('<' not supported, or passed)
        with pytest.raises(OrgasegError, match=f"level must be a whole number, 0 or more, got {level!r}"):
            open_volume(tmp_path / "v.npy", level=level)
    np.save(tmp_path / "empty.npy", np.zeros((0, 5, 5)))
    with pytest.raises(OrgasegError, match=r"empty\.npy is empty \(shape \(0, 5, 5\)\)"):
        open_volume(tmp_path / "empty.npy")
    np.save(tmp_path / "complex.npy", np.zeros((2, 5, 5), complex))
    with pytest.raises(OrgasegError, match="expected intensities or labels .* got values of type complex128"):
        open_volume(tmp_path / "complex.npy")
    with pytest.raises(OrgasegError, match="the array is empty"):
        as_volume(np.zeros((3, 0, 4)))
    # as_volume (and Volume) took any voxel size, e.g. two numbers or a negative one, for later steps to trip on
    for voxel_size in ((1, 1), (-1, 1, 1), (float("nan"), 1, 1), "abc"):
        with pytest.raises(OrgasegError, match=r"voxel_size must be 3 positive numbers \(z, y, x\) in nm, got "
                                               + re.escape(repr(voxel_size))):
            as_volume(np.zeros((2, 3, 4)), voxel_size=voxel_size)


# --- writers -------------------------------------------------------------------------


def test_label_writer_dtype_follows_label_count(tmp_path):
    for n, dtype in ((2, np.uint8), (256, np.uint8), (257, np.uint16), (70_000, np.uint32)):
        writer = create_label_writer(tmp_path / f"l{n}.ome.zarr", (2, 4, 4), n, voxel_size=(1, 1, 1))
        assert writer.dtype == dtype
        writer.abort()
        assert list(tmp_path.iterdir()) == []


def test_ome_zarr_labels_layout_and_round_trip(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    labels = np.random.default_rng(1).integers(0, 5, (5, 40, 30)).astype(np.uint8)
    path = tmp_path / "seg.ome.zarr"
    writer = create_label_writer(path, labels.shape, 5, voxel_size=(50, 4.6, 4.6), chunks=(2, 16, 16),
                                 label_names=["a", "b", "c", "d", "e"])
    for z0 in range(0, 5, 2):  # blockwise, chunk-aligned
        for y0 in range(0, 40, 16):
            region = (slice(z0, z0 + 2), slice(y0, y0 + 16), slice(0, 30))
            writer.write(region, labels[region])
    assert not path.exists()  # nothing in place before finalize
    assert writer.finalize(make_provenance(method="test", k=5)) == path

    attrs = json.loads((path / "labels" / "segmentation" / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    assert multiscale["version"] == "0.4" and [a["unit"] for a in multiscale["axes"]] == ["nanometer"] * 3
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [50, 4.6, 4.6]
    colors = [tuple(c["rgba"]) for c in attrs["image-label"]["colors"]]
    assert len(set(colors)) == 5 and attrs["image-label"]["properties"][2] == {"label-value": 2, "name": "c"}
    assert all(c[3] == 255 for c in colors)
    array_meta = json.loads((path / "labels" / "segmentation" / "0" / ".zarray").read_text())
    assert array_meta["dimension_separator"] == "/" and array_meta["compressor"]["cname"] == "zstd"
    assert json.loads((path / ".zattrs").read_text())["orgaseg"]["k"] == 5

    nodes = list(Reader(parse_url(str(path)))())
    label_nodes = [n for n in nodes if n.load(Label) is not None]
    assert len(label_nodes) == 1 and label_nodes[0].data[0].shape == labels.shape

    vol = no_warning_open(path)
    assert vol.dtype == np.uint8 and vol.voxel_size == pytest.approx((50, 4.6, 4.6))
    np.testing.assert_array_equal(vol.read(), labels)


def test_tiff_labels_round_trip_with_voxel_size(tmp_path):
    labels = np.random.default_rng(2).integers(0, 300, (4, 12, 10)).astype(np.uint16)
    path = write_labels(tmp_path / "seg.tif", labels, voxel_size=(45, 4.6, 4.6), provenance={"k": 300})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "nm"
    vol = no_warning_open(path)
    assert vol.dtype == np.uint16 and vol.voxel_size == pytest.approx((45, 4.6, 4.6), rel=1e-6)
    np.testing.assert_array_equal(vol.read(), labels)
    assert read_provenance(path)["k"] == 300


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "seg.ome.zarr"
    first = np.zeros((2, 4, 4), np.uint8)
    write_labels(path, first, voxel_size=(1, 1, 1), provenance={"run": 1})
    with pytest.raises(OrgasegError, match="exists; pass overwrite=True"):
        create_label_writer(path, (2, 4, 4), 2, voxel_size=(1, 1, 1))
    second = np.ones((2, 4, 4), np.uint8)
    write_labels(path, second, voxel_size=(1, 1, 1), provenance={"run": 2}, overwrite=True)
    np.testing.assert_array_equal(open_volume(path).read(), second)
    assert read_provenance(path)["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.ome.zarr", "seg.ome.zarr.provenance.json"]


@pytest.mark.parametrize("name", ["seg.ome.zarr", "seg.tif"])
def test_aborted_write_leaves_existing_output_untouched(tmp_path, name):
    path = tmp_path / name
    original = np.full((2, 6, 6), 3, np.uint8)
    write_labels(path, original, voxel_size=(1, 1, 1), provenance={})
    with pytest.raises(RuntimeError, match="boom"):
        with create_label_writer(path, (2, 6, 6), 9, voxel_size=(1, 1, 1), overwrite=True) as writer:
            writer.write((slice(0, 1), slice(None), slice(None)), np.full((1, 6, 6), 8))
            raise RuntimeError("boom")
    np.testing.assert_array_equal(open_volume(path).read(), original)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.provenance.json"]


def test_writer_rejects_unknown_extension_and_bad_blocks(tmp_path):
    with pytest.raises(OrgasegError, match=r"\.ome\.zarr, \.zarr, \.tif or \.tiff"):
        create_label_writer(tmp_path / "seg.h5", (2, 4, 4), 2, voxel_size=(1, 1, 1))
    with pytest.raises(OrgasegError, match="at most 65536 labels"):
        create_label_writer(tmp_path / "seg.tif", (2, 4, 4), 70_000, voxel_size=(1, 1, 1))
    with create_label_writer(tmp_path / "seg.zarr", (2, 4, 4), 3, voxel_size=(1, 1, 1)) as writer:
        with pytest.raises(ValueError, match="does not fit region"):
            writer.write((slice(0, 1), slice(0, 4), slice(0, 4)), np.zeros((2, 4, 4)))
        with pytest.raises(ValueError, match=r"label ids must lie in 0\.\.2"):
            writer.write((slice(0, 1), slice(0, 4), slice(0, 4)), np.full((1, 4, 4), 3))
    assert list(tmp_path.iterdir()) == []


def test_image_writer_refuses_what_an_imagej_tiff_cannot_be(tmp_path):
    image = np.zeros((2, 4, 4))
    # float64 failed inside tifffile ("does not support data type 'd'"); a .png name held a TIFF
    with pytest.raises(OrgasegError, match=r"im\.tif: an ImageJ TIFF holds uint8, uint16, int16, float32, and the "
                                           r"image is float64"):
        write_tiff_image(tmp_path / "im.tif", image, voxel_size=(1, 1, 1))
    with pytest.raises(OrgasegError, match=r"im\.png: write the image as \.tif or \.tiff"):
        write_tiff_image(tmp_path / "im.png", image.astype(np.float32), voxel_size=(1, 1, 1))
    assert list(tmp_path.iterdir()) == []
    path = write_tiff_image(tmp_path / "im.tiff", image.astype(np.float32), voxel_size=(40, 4, 4))
    assert open_volume(path).voxel_size == (40.0, 4.0, 4.0)


def test_ome_zarr_label_colors_are_the_figure_palette(tmp_path):
    out = write_labels(tmp_path / "c.ome.zarr", np.arange(12, dtype=np.uint8).reshape(1, 3, 4),
                       voxel_size=(1, 1, 1), provenance={})
    attrs = json.loads((out / "labels" / "segmentation" / ".zattrs").read_text())
    colors = [entry["rgba"] for entry in attrs["image-label"]["colors"]]
    expected = np.round(255 * label_colors(12)).astype(int).tolist()
    assert colors == expected and len({tuple(c) for c in colors}) == 12


# --- provenance --------------------------------------------------------------------


def test_provenance_round_trip_with_numpy_values(tmp_path):
    output = tmp_path / "seg.ome.zarr"
    record = make_provenance(method="maester", k=np.int64(6), centres=np.eye(2, dtype=np.float32),
                             input=tmp_path / "raw.tif", config={"lr": np.float32(0.5)})
    assert record["package_version"] and record["created"].endswith("+00:00") and record["host"]
    json_path = write_provenance(output, record)
    assert json_path.name == "seg.ome.zarr.provenance.json"
    for path in (output, json_path):
        back = read_provenance(path)
        assert back["k"] == 6 and back["centres"] == [[1.0, 0.0], [0.0, 1.0]]
        assert back["config"] == {"lr": 0.5} and back["input"] == str(tmp_path / "raw.tif")
    with pytest.raises(OrgasegError, match="no provenance record"):
        read_provenance(tmp_path / "other.tif")


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_a_record_that_cannot_be_written_leaves_the_old_output_and_its_record(tmp_path, monkeypatch, suffix):
    # the record is written before the new labels replace the old: new labels never sit beside the old
    # run's record, which --centers or --mapping would read as theirs
    from orgaseg.io import provenance

    output = tmp_path / f"seg{suffix}"
    write_labels(output, np.ones((2, 8, 8), np.uint8), voxel_size=(10, 10, 10), provenance={"run": "old"})
    real_path = provenance.provenance_path

    def full_disk(path):
        if Path(path) == output:
            raise OSError("No space left on device")
        return real_path(path)

    monkeypatch.setattr(provenance, "provenance_path", full_disk)
    with pytest.raises(OrgasegError, match="cannot write the output: No space left"):  # said as a write error
        write_labels(output, np.full((2, 8, 8), 2, np.uint8), voxel_size=(10, 10, 10), provenance={"run": "new"},
                     overwrite=True)
    monkeypatch.undo()
    assert read_provenance(output)["run"] == "old"
    assert int(open_volume(output).read().max()) == 1  # the old labels
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([output.name, f"{output.name}.provenance.json"])


# --- atomic writes ------------------------------------------------------------------


@pytest.mark.parametrize("data", ["text ✓", b"\x00\xffbytes"])
def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path, data):
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomic(path, data)
    assert (path.read_bytes() if isinstance(data, bytes) else path.read_text()) == data
    assert list(tmp_path.iterdir()) == [path]


_WRITE_IN_AN_ASCII_LOCALE = """
import locale, sys
from pathlib import Path
from orgaseg.io.partial import write_atomic
from orgaseg.organelles.measure import write_table

print(locale.getpreferredencoding(False))
folder = Path(sys.argv[1])
write_atomic(folder / "results.md", "| Zellkern-H\\u00fclle | 0.91 |\\n")
write_table({"id": [1], "class": ["Zellkern-H\\u00fclle"]}, folder / "table.csv")
"""


def test_text_outputs_are_utf_8_whatever_the_locale(tmp_path):
    import os
    import subprocess
    import sys

    # the C locale without Python's UTF-8 mode or locale coercion: its encoding is ASCII
    environment = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    run = subprocess.run([sys.executable, "-c", _WRITE_IN_AN_ASCII_LOCALE, str(tmp_path)], env=environment,
                         capture_output=True, text=True, check=False)
    if run.stdout.split()[:1] and run.stdout.split()[0].lower().replace("-", "") == "utf8":
        pytest.skip("this platform's C locale is UTF-8: no other encoding to write in")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "results.md").read_bytes().decode("utf-8") == "| Zellkern-H\u00fclle | 0.91 |\n"
    assert (tmp_path / "table.csv").read_bytes().decode("utf-8").splitlines() == ["id,class", "1,Zellkern-H\u00fclle"]


def test_atomic_path_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".model.pt")
            temporary.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


_KILLED_WRITER = """
import os, sys
from pathlib import Path
import orgaseg.io.partial as partial

folder = Path(sys.argv[1])
real_remove = partial.remove
# killed (os._exit skips every clean-up, as SIGKILL) while the old output is removed after the swap
partial.remove = lambda path: os._exit(9) if ".old-" in path.name and path.exists() else real_remove(path)
new = folder / "new.ome.zarr"
new.mkdir()
partial.move_into_place(new, folder / "seg.ome.zarr")
"""

_KILLED_ATOMIC_WRITE = """
import os, sys
from pathlib import Path
from orgaseg.io.partial import atomic_path

with atomic_path(Path(sys.argv[1]) / "table.csv") as temporary:
    temporary.write_text("half a table")
    os._exit(9)
"""


def _run_killed(script: str, folder: Path) -> None:
    import subprocess
    import sys

    assert subprocess.run([sys.executable, "-c", script, str(folder)], check=False).returncode == 9


def test_a_later_write_removes_what_killed_runs_left_and_keeps_what_live_ones_hold(tmp_path):
    import socket
    import subprocess
    import sys

    from orgaseg.io.partial import move_into_place, remove_leftovers

    output = tmp_path / "seg.ome.zarr"
    output.mkdir()
    (output / "old-chunk").write_bytes(b"old labels")
    _run_killed(_KILLED_ATOMIC_WRITE, tmp_path)
    _run_killed(_KILLED_WRITER, tmp_path)  # killed before it swept the folder
    killed = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert len(killed) == 2 and any(".seg.ome.zarr.old-" in n for n in killed)  # the old output, whole
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        held = [tmp_path / f".seg.ome.zarr.old-{host}-{live.pid}", tmp_path / f".tmp-{host}-{live.pid}-1.table.csv",
                tmp_path / f".tmp-crop-{host}-{live.pid}-crop.tif",
                tmp_path / f".tmp-another-host-{live.pid}-1.table.csv"]  # another host's pids are not checked
        for path in held:
            path.write_text("a live run's work")
        # an old output moved aside with nothing at its name: the only copy there is
        gone = f".gone.ome.zarr.old-{host}-{killed[0].rsplit('-', 1)[1]}"
        (tmp_path / gone).mkdir()
        new = tmp_path / "newer"
        new.mkdir()
        move_into_place(new, output)
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        assert left == sorted([p.name for p in held] + [gone])
        assert output.is_dir() and not (output / "old-chunk").exists()
        assert remove_leftovers(tmp_path) == []  # nothing more to take while the holder lives
    finally:
        live.kill()
        live.wait()
    assert len(remove_leftovers(tmp_path)) == 3  # its own host's, once it is gone


def test_an_atomic_write_removes_the_temporaries_killed_runs_left_in_its_folder(tmp_path):
    _run_killed(_KILLED_ATOMIC_WRITE, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    write_atomic(tmp_path / "table.csv", "a whole table")
    assert list(tmp_path.iterdir()) == [tmp_path / "table.csv"]


def test_tiff_image_write_failure_leaves_no_file(tmp_path, monkeypatch):
    def failing_imwrite(path, *args, **kwargs):
        Path(path).write_bytes(b"half a tiff")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_tiff_image(tmp_path / "raw.tif", np.zeros((2, 3, 4), np.uint8), voxel_size=(1, 1, 1))
    assert list(tmp_path.iterdir()) == []


# --- normalisation ------------------------------------------------------------------


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_normalization_maps_percentiles_to_unit_range(dtype, top):
    data = np.random.default_rng(3).integers(0, top, (8, 64, 64), endpoint=True).astype(dtype)
    norm = compute_normalization(data, percentiles=(1, 99))
    assert norm.low == pytest.approx(np.percentile(data, 1))
    assert norm.high == pytest.approx(np.percentile(data, 99))
    out = norm.apply(data)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert np.mean(out == 0.0) == pytest.approx(0.01, abs=0.003)
    assert Normalization.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm


def test_normalization_samples_large_volumes_reproducibly():
    data = np.random.default_rng(4).normal(100, 10, (40, 200, 200)).astype(np.float32)
    norm = compute_normalization(data, sample_size=10_000, percentiles=(5, 95), seed=1)
    assert norm == compute_normalization(data, sample_size=10_000, percentiles=(5, 95), seed=1)
    # the 5th and 95th percentiles of N(100, 10) are 100 -/+ 16.45
    assert norm.low == pytest.approx(83.55, abs=1.0) and norm.high == pytest.approx(116.45, abs=1.0)


def test_normalization_of_a_big_volume_reads_only_a_sample():
    class CountingArray:
        shape, dtype, ndim = (100, 1000, 1000), np.dtype(np.uint8), 3
        read = 0

        def __getitem__(self, region):
            block = np.full([len(range(*s.indices(n))) for s, n in zip(region, self.shape)], 9, np.uint8)
            CountingArray.read += block.size
            return block

    norm = compute_normalization(Volume(CountingArray()), sample_size=100_000)
    assert norm.low == norm.high == 9
    assert 100_000 <= CountingArray.read <= 200_000  # of 10^8 voxels


def test_normalization_invert_and_mask():
    data = np.zeros((2, 10, 10), np.uint8)
    data[:, :, 5:] = 200
    data[:, 0, 0] = 100
    mask = data > 0
    norm = compute_normalization(data, percentiles=(0, 100), invert=True, mask=mask)
    assert (norm.low, norm.high, norm.invert) == (100.0, 200.0, True)
    assert norm.apply(np.array([100, 150, 200, 0])).tolist() == [1.0, 0.5, 0.0, 1.0]


def test_normalization_refuses_a_bad_seed_or_sample_size_naming_it():
    data = np.zeros((2, 10, 10), np.uint8)
    # numpy's "expected non-negative integer" and SeedSequence's TypeError named neither
    with pytest.raises(OrgasegError, match="seed=N must be a whole number >= 0, got -1"):
        compute_normalization(data, seed=-1)
    with pytest.raises(OrgasegError, match="seed=N must be a whole number >= 0, got 0.5"):
        compute_normalization(data, seed=0.5)
    with pytest.raises(OrgasegError, match="sample_size must be positive, got 2.5"):
        compute_normalization(data, sample_size=2.5)


def test_normalize_volume_takes_an_array_as_compute_normalization_does():
    from orgaseg.io import normalize_volume

    data = np.array([[[0, 100, 200]]], np.uint8)
    # it failed with "'numpy.ndarray' object has no attribute 'with_transform'"
    view = normalize_volume(data, compute_normalization(data, percentiles=(0, 100)))
    assert view.dtype == np.float32 and view.read().tolist() == [[[0.0, 0.5, 1.0]]]


def test_inverted_normalization_makes_dark_bright_and_round_trips():
    data = np.array([[[10, 20, 30, 40, 50]]], np.uint8)
    plain = compute_normalization(data, percentiles=(0, 100))
    inverted = compute_normalization(data, percentiles=(0, 100), invert=True)
    np.testing.assert_allclose(plain.apply(data), [[[0, 0.25, 0.5, 0.75, 1]]])
    np.testing.assert_allclose(inverted.apply(data), 1 - plain.apply(data))
    assert inverted.apply(data).dtype == np.float32
    # out-of-range values clip before inverting, so the result stays in [0, 1]
    assert inverted.apply(np.array([0, 255])).tolist() == [1.0, 0.0]
    record = json.loads(json.dumps(inverted.to_dict()))
    assert record == {"low": 10.0, "high": 50.0, "invert": True}
    assert Normalization.from_dict(record) == inverted
    # records written before the field existed are not inverted
    assert Normalization.from_dict({"low": 10.0, "high": 50.0}) == plain


def test_inverted_constant_volume_flips_the_step():
    norm = Normalization(low=7, high=7, invert=True)
    assert norm.apply(np.array([5, 7, 9])).tolist() == [1.0, 0.5, 0.0]


def test_nan_and_infinite_intensities_are_named_and_left_out_of_the_range():
    data = np.linspace(0, 1, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    with pytest.warns(OrgasegWarning, match="3 of 192 sampled intensities are NaN or infinite"):
        norm = compute_normalization(data, percentiles=(0, 100))
    finite = data[np.isfinite(data)]
    assert (norm.low, norm.high) == (float(finite.min()), float(finite.max()))
    assert norm.apply(data[0, 0, :3]).tolist() == [0.0, 1.0, 0.0]  # NaN as the darkest value
    with pytest.raises(OrgasegError, match="every sampled intensity is NaN or infinite"):
        compute_normalization(np.full((2, 4, 4), np.nan, np.float32))


def test_constant_volume_normalizes_to_a_step_without_nan():
    data = np.full((3, 8, 8), 7, np.uint16)
    with pytest.warns(OrgasegWarning, match="nearly\\) constant"):
        norm = compute_normalization(data)
    assert norm.low == norm.high == 7
    out = norm.apply(np.array([5, 7, 9], np.uint16))
    assert out.tolist() == [0.0, 0.5, 1.0] and out.dtype == np.float32
    # segment and train refuse it, whatever the method
    with pytest.raises(OrgasegError, match=r"<array>: every sampled intensity \(192 voxels\) is 7: the volume is "
                                           r"constant, with nothing to segment or learn"):
        compute_normalization(data, refuse_constant=True)
    nearly = np.full((4, 32, 32), 7, np.uint16)
    nearly[0, 0, 0] = 9  # nearly constant: warned about, as without refuse_constant
    with pytest.warns(OrgasegWarning, match="nearly\\) constant"):
        assert compute_normalization(nearly, refuse_constant=True).low == 7


@pytest.mark.parametrize("dtype, offset", [(np.uint32, 4_000_000_000), (np.int64, 2**40), (np.float64, 1e9)])
def test_grey_levels_on_a_large_offset_keep_their_steps(dtype, offset):
    # cast to float32 before the offset was taken off, uint32 levels 0..255 above 4e9 fell on 512-wide steps
    # (3 values left) and int64 ones above 2^40 on one (segment: "only 1 distinct feature vector")
    levels = np.random.default_rng(5).integers(0, 256, (2, 16, 16))
    norm = compute_normalization(levels.astype(dtype) + dtype(offset))
    assert norm.low - offset == pytest.approx(np.percentile(levels, 0.5), abs=1e-3)
    assert norm.high - offset == pytest.approx(np.percentile(levels, 99.5), abs=1e-3)
    expected = compute_normalization(levels.astype(np.uint8)).apply(levels.astype(np.uint8))
    np.testing.assert_allclose(norm.apply(levels.astype(dtype) + dtype(offset)), expected, atol=1e-6)
    assert norm.apply(np.array([offset], dtype)).dtype == np.float32


# --- real data --------------------------------------------------------------------------


@pytest.mark.skipif(not (DATA / "vnc" / "stack1" / "raw").is_dir(), reason="../shared/data/vnc not present")
def test_vnc_stack1_raw_folder():
    vol = open_volume(DATA / "vnc" / "stack1" / "raw", voxel_size=(50, 4.6, 4.6))
    assert vol.shape == (20, 1024, 1024) and vol.dtype == np.uint8
    block = vol.read((slice(19, 20), slice(0, 64), slice(0, 64)))
    last = tifffile.imread(DATA / "vnc" / "stack1" / "raw" / "19.tif")
    np.testing.assert_array_equal(block[0], last[:64, :64])


@pytest.mark.skipif(not (DATA / "vnc" / "stack1" / "mitochondria").is_dir(), reason="../shared/data/vnc not present")
def test_vnc_mask_folders_mixing_1_bit_and_8_bit_pngs():
    folder = DATA / "vnc" / "stack1" / "mitochondria"  # 01, 07 and 18 are 1-bit, the others 8-bit
    vol = open_volume(folder, voxel_size=(50, 4.6, 4.6))
    assert vol.shape == (20, 1024, 1024) and vol.dtype == np.uint8
    block = vol.read((slice(0, 2), slice(None), slice(None)))
    assert Image.open(folder / "01.png").mode == "1"
    one_bit = np.asarray(Image.open(folder / "01.png"))
    np.testing.assert_array_equal(block[1], np.where(one_bit, 255, 0))
    np.testing.assert_array_equal(block[0], np.asarray(Image.open(folder / "00.png")))
    assert open_volume(DATA / "vnc" / "stack1" / "synapses", voxel_size=(50, 4.6, 4.6)).dtype == np.uint8
    assert open_volume(DATA / "vnc" / "stack1" / "membranes", voxel_size=(50, 4.6, 4.6)).dtype == np.bool_


# --- pyramids and resumable writers ----------------------------------------------------


def test_mode_downsampling_keeps_the_most_frequent_id_and_breaks_ties_low():
    from orgaseg.io.pyramid import mode_downsample

    cell = np.array([[[3, 3], [1, 2]], [[3, 2], [2, 1]]])  # 3 and 2 three times each, 1 twice
    assert mode_downsample(cell, (2, 2, 2)).tolist() == [[[2]]]
    labels = np.zeros((1, 3, 5), np.uint8)
    labels[0, :, 4] = 7  # the partial last cell holds only 7s
    labels[0, 0:2, 0:2] = [[5, 5], [5, 0]]
    np.testing.assert_array_equal(mode_downsample(labels, (1, 2, 2)), [[[5, 0, 7], [0, 0, 7]]])


def test_pyramid_levels_follow_the_in_plane_size_and_anisotropy():
    from orgaseg.io.pyramid import plan_levels

    assert plan_levels((64, 100, 100), (10, 10, 10)) == []
    assert plan_levels((64, 600, 600), (10, 10, 10)) == [(2, 2, 2), (2, 2, 2), (2, 2, 2)]
    # 50 nm sections stay until the in-plane voxel (4.6 nm x 2^k) passes 25 nm
    assert plan_levels((20, 2048, 2048), (50, 4.6, 4.6)) == [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]


def test_ome_zarr_labels_get_a_mode_pyramid_that_ome_zarr_reads(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    from orgaseg.io.pyramid import mode_downsample

    labels = np.random.default_rng(3).integers(0, 4, (6, 300, 260)).astype(np.uint8)
    path = write_labels(tmp_path / "seg.ome.zarr", labels, voxel_size=(10, 10, 10), provenance={})
    attrs = json.loads((path / "labels" / "segmentation" / ".zattrs").read_text())
    datasets = attrs["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    assert datasets[2]["coordinateTransformations"] == [
        {"type": "scale", "scale": [40.0, 40.0, 40.0]}, {"type": "translation", "translation": [15.0, 15.0, 15.0]}]
    (node,) = [n for n in Reader(parse_url(str(path)))() if n.load(Label) is not None]
    assert [tuple(level.shape) for level in node.data] == [(6, 300, 260), (3, 150, 130), (2, 75, 65)]
    level1 = mode_downsample(labels, (2, 2, 2))
    np.testing.assert_array_equal(np.asarray(node.data[1]), level1)
    np.testing.assert_array_equal(np.asarray(node.data[2]), mode_downsample(level1, (2, 2, 2)))
    np.testing.assert_array_equal(open_volume(path).read(), labels)  # level 0 is what readers open


def test_building_the_pyramid_reports_its_blocks(tmp_path):
    """The pyramid comes after the last labelled block and takes minutes on a large volume: it has a bar."""
    from orgaseg.io.pyramid import level_blocks

    labels = np.random.default_rng(3).integers(0, 4, (6, 300, 260)).astype(np.uint8)
    writer = create_label_writer(tmp_path / "seg.ome.zarr", labels.shape, 4, voxel_size=(10, 10, 10), chunks=(2, 64, 64))
    writer.write((slice(None),) * 3, labels)
    calls = []
    path = writer.finalize({}, progress=lambda description, done, total, **figures: calls.append((description, done, total)))
    group = zarr.open_group(str(path / "labels" / "segmentation"), mode="r")
    blocks = sum(len(level_blocks(group[level], (2, 2, 2))) for level in ("1", "2"))
    assert calls == [("building the pyramid", done, blocks) for done in range(1, blocks + 1)] and blocks >= 2


def test_a_writer_resumes_its_partial_output_only_for_the_same_key(tmp_path):
    path = tmp_path / "seg.ome.zarr"
    first = create_label_writer(path, (2, 8, 8), 3, voxel_size=(1, 1, 1), chunks=(1, 8, 8), resume_key="run-a")
    first.write((slice(0, 1), slice(None), slice(None)), np.full((1, 8, 8), 2))
    first.suspend()
    assert (tmp_path / "seg.ome.zarr.partial").is_dir() and not path.exists()
    again = create_label_writer(path, (2, 8, 8), 3, voxel_size=(1, 1, 1), chunks=(1, 8, 8), resume_key="run-a")
    assert again.resumed
    again.suspend()
    other = create_label_writer(path, (2, 8, 8), 3, voxel_size=(1, 1, 1), chunks=(1, 8, 8), resume_key="run-b")
    assert not other.resumed  # another key: the partial output is discarded
    other.write((slice(1, 2), slice(None), slice(None)), np.ones((1, 8, 8)))
    other.finalize({})
    with pytest.warns(MissingChunksWarning, match="1 of 2 chunks"):  # slice 0 was never written
        np.testing.assert_array_equal(open_volume(path).read()[:, 0, 0], [0, 1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.ome.zarr", "seg.ome.zarr.provenance.json"]


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_outputs_of_a_volume_without_voxel_size_carry_none(tmp_path, suffix, capsys):
    # segment assumes 1 nm for an input without metadata; its outputs must not pass that guess on as fact
    from orgaseg.cli import main

    np.save(tmp_path / "v.npy", np.random.default_rng(0).integers(0, 255, (3, 40, 40), dtype=np.uint8))
    for name, extra in (("guess", []), ("known", ["--voxel-size", "30", "6", "6"])):
        assert main(["segment", str(tmp_path / "v.npy"), "-k", "2", "-o", str(tmp_path / f"{name}{suffix}"),
                     "--quiet", *extra]) == 0
    with pytest.warns(VoxelSizeWarning, match="voxel size unknown"):
        guessed = open_volume(tmp_path / f"guess{suffix}")
    assert guessed.attrs.get("voxel_size_assumed")
    known = open_volume(tmp_path / f"known{suffix}")
    assert known.voxel_size == (30.0, 6.0, 6.0) and not known.attrs.get("voxel_size_assumed")
    capsys.readouterr()
    assert main(["info", str(tmp_path / f"guess{suffix}")]) == 0
    assert "voxel size:  unknown" in capsys.readouterr().out
    assert main(["measure", str(tmp_path / f"guess{suffix}"), "-o", str(tmp_path / f"m{suffix}.csv")]) == 2
    assert "no voxel size in the metadata" in capsys.readouterr().err


def test_a_voxel_size_that_overrides_the_files_own_is_warned_about(tmp_path):
    path = write_tiff_image(tmp_path / "stack.tif", np.zeros((3, 8, 8), np.uint8), voxel_size=(50, 4.6, 4.6))
    with pytest.warns(OrgasegWarning, match=r"4.6 x 4.6 x 50 nm, overrides the file's own, 50 x 4.6 x 4.6 nm.*order"):
        assert open_volume(path, voxel_size=(4.6, 4.6, 50)).voxel_size == (4.6, 4.6, 50.0)
    # ten times the file's own on every axis: Ångström typed for nm, the MRC user's slip
    with pytest.warns(OrgasegWarning, match=r"500 x 46 x 46 nm, overrides the file's own, 50 x 4.6 x 4.6 nm \(z, y, "
                                            r"x\): is it in Å\? voxel_size.* is in nm"):
        open_volume(path, voxel_size=(500, 46, 46))
    # neither a unit slip nor another order: the order was asked about all the same
    with pytest.warns(OrgasegWarning) as caught:
        open_volume(path, voxel_size=(40, 5, 5))
    assert str(caught[0].message).endswith("overrides the file's own, 50 x 4.6 x 4.6 nm (z, y, x)")
    micrometres = write_tiff_image(tmp_path / "um.tif", np.zeros((3, 8, 8), np.uint8), voxel_size=(50e3, 4.6e3, 4.6e3))
    with pytest.warns(OrgasegWarning, match=r"50000 x 4600 x 4600 nm \(z, y, x\): the file's is 1000 times larger "
                                            r"\(a size in nm stored as um\)$"):
        open_volume(micrometres, voxel_size=(50, 4.6, 4.6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        assert open_volume(path, voxel_size=(50, 4.6, 4.6)).voxel_size == (50.0, 4.6, 4.6)


def test_a_volume_indexes_like_a_numpy_array_reading_only_that_part():
    stored = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    reads = []

    class Recorded:
        shape, dtype = stored.shape, stored.dtype

        def __getitem__(self, region):
            reads.append(region)
            return stored[region]

    volume = Volume(Recorded())
    for index in (np.s_[:], np.s_[...], np.s_[0], np.s_[-1, 1:], np.s_[..., 2], np.s_[0, ..., 1], np.s_[:, 1, ::2],
                  np.s_[1, 2, 3], np.int64(1)):
        np.testing.assert_array_equal(volume[index], stored[index])
    assert reads[-2] == (slice(1, 2), slice(2, 3), slice(3, 4))  # one voxel read, not the volume
    for bad, message in ((np.s_[5], "out of range for axis z of size 2"), (np.s_[0, 0, 0, 0], "3 axes"),
                         (np.s_[[0, 1]], "integers, slices and '...'"), (np.s_[..., ...], "one '...'")):
        with pytest.raises(IndexError, match=message):
            volume[bad]


@pytest.mark.parametrize("names", [["unassigned", "mitochondria", "er"], ["background", "mitochondria", "granules"]])
def test_unnamed_voxels_and_background_are_stored_transparent(tmp_path, names):
    path = write_labels(tmp_path / "named.ome.zarr", np.arange(3, dtype=np.uint8).reshape(1, 1, 3), voxel_size=(1, 1, 1),
                        provenance={}, label_names=names)
    attrs = json.loads((path / "labels" / "segmentation" / ".zattrs").read_text())
    assert [c["rgba"][3] for c in attrs["image-label"]["colors"]] == [0, 255, 255]
