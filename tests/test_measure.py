"""Morphometrics: known answers on voxelised ellipsoids, blockwise sums equal to whole-volume ones."""

import csv
import math
import warnings

import numpy as np
import pytest

from orgaseg.cli import main
from orgaseg.errors import OrgasegError
from orgaseg.io import write_labels, write_tiff_image
from orgaseg.organelles import make_instances, measure_instances, write_table
from orgaseg.pipeline.executors import ThreadExecutor

#: (centre nm, semi-axes nm along z, y, x); at 4-8 nm voxels every semi-axis spans 10 voxels or more.
ELLIPSOIDS = [((150.0, 150.0, 150.0), (120.0, 80.0, 60.0)),
              ((170.0, 300.0, 150.0), (100.0, 60.0, 90.0)),
              ((130.0, 150.0, 360.0), (90.0, 45.0, 50.0))]


def thomsen_area(a: float, b: float, c: float, p: float = 1.6075) -> float:
    """Knud Thomsen's approximation of an ellipsoid's surface area (within about 1%)."""
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def draw(shape, voxel_size, ellipsoids, dtype=np.uint16):
    """Label ``i + 1`` for the voxels whose centres lie inside ellipsoid ``i``."""
    labels = np.zeros(shape, dtype)
    grid = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel_size)], indexing="ij")
    for i, (centre, axes) in enumerate(ellipsoids, 1):
        labels[sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes)) <= 1] = i
    return labels


@pytest.mark.parametrize("voxel_size", [(4.0, 4.0, 4.0), (8.0, 4.0, 4.0)])
def test_ellipsoid_volume_area_axes_within_3_percent(voxel_size):
    shape = tuple(int(440 / v) for v in voxel_size)
    labels = draw(shape, voxel_size, ELLIPSOIDS)
    table = measure_instances(labels, voxel_size=voxel_size).table
    assert table["id"].tolist() == [1, 2, 3]
    for row, (centre, (a, b, c)) in enumerate(ELLIPSOIDS):
        volume = 4 / 3 * math.pi * a * b * c / 1e9
        area = thomsen_area(a, b, c) / 1e6
        assert table["volume_um3"][row] == pytest.approx(volume, rel=0.03)
        assert table["surface_area_um2"][row] == pytest.approx(area, rel=0.03)
        axes = [table[f"axis_{n}_length_nm"][row] for n in ("major", "intermediate", "minor")]
        assert axes == pytest.approx(sorted([2 * a, 2 * b, 2 * c], reverse=True), rel=0.03)
        assert table["aspect_ratio"][row] == pytest.approx(max(a, b, c) / min(a, b, c), rel=0.03)
        sphericity = math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area
        assert table["sphericity"][row] == pytest.approx(sphericity, rel=0.03)
        centroid = [table[f"centroid_{x}_nm"][row] for x in "zyx"]
        assert centroid == pytest.approx(centre, abs=max(voxel_size) / 2)
        for x, v, m, s in zip("zyx", voxel_size, centre, (a, b, c)):
            assert m - s - v <= table[f"bbox_min_{x}_nm"][row] <= m - s + v
            assert m + s - v <= table[f"bbox_max_{x}_nm"][row] <= m + s + v


def test_instances_cut_by_the_volume_edge_are_flagged_on_every_face():
    labels = np.zeros((6, 20, 30), dtype=np.uint8)
    labels[2:4, 5:9, 5:9] = 1  # inside
    labels[0:2, 5:9, 12:16] = 2  # on the first section
    labels[2:4, 12:16, 26:30] = 3  # on the last column
    labels[3:6, 16:20, 10:14] = 4  # on the last section and the last row
    table = measure_instances(labels, voxel_size=(50.0, 5.0, 5.0)).table
    assert table["id"].tolist() == [1, 2, 3, 4]
    assert table["touches_border"].tolist() == [False, True, True, True]
    assert table["z_sections"].tolist() == [2, 2, 2, 3]  # the sections each spans (one: a slab)


@pytest.mark.parametrize("sections", [1, 2])
def test_in_a_single_image_or_two_sections_only_the_in_plane_faces_flag_an_instance(sections):
    # every instance reaches a z face here: flagging those would leave nothing to compare sizes of
    labels = np.zeros((sections, 20, 30), dtype=np.uint8)
    labels[:, 5:9, 5:9] = 1
    labels[:, 0:4, 12:16] = 2  # on the first row
    labels[-1, 12:16, 26:30] = 3  # on the last column
    table = measure_instances(labels, voxel_size=(50.0, 5.0, 5.0)).table
    assert table["touches_border"].tolist() == [False, True, True]


@pytest.mark.parametrize("radius, low, high", [(2, -0.32, -0.11), (3, -0.12, -0.05), (5, -0.05, -0.005)])
def test_small_balls_on_isotropic_voxels_come_out_low_by_the_documented_margin(radius, low, high):
    # the README's and the module's figures for objects a few voxels across (16 nm: BetaSeg's voxels)
    voxel_size = (16.0, 16.0, 16.0)
    rng = np.random.default_rng(1)
    for _ in range(4):
        shape = (2 * radius + 8,) * 3
        centre = tuple((n / 2 + rng.uniform(-0.5, 0.5)) * 16.0 for n in shape)
        labels = draw(shape, voxel_size, [(centre, (radius * 16.0,) * 3)])
        area = measure_instances(labels, voxel_size=voxel_size).table["surface_area_um2"][0]
        assert low <= area / (4 * math.pi * (radius * 16.0) ** 2 / 1e6) - 1 <= high


#: Serial sections (vnc's 50 x 4.6 x 4.6 nm): objects spanning 5 to 20 sections.
SECTIONED = [((520.0, 500.0, 500.0), (500.0, 450.0, 450.0)), ((330.0, 560.0, 1300.0), (250.0, 250.0, 250.0)),
             ((680.0, 1200.0, 500.0), (125.0, 300.0, 280.0)), ((700.0, 1250.0, 1200.0), (600.0, 300.0, 250.0))]


def test_serial_sections_are_measured_with_slopes_between_sections():
    # a mesh that steps from section to section comes out 7-16% high on these (the voxel staircase);
    # the signed distance field joins the outlines of adjacent sections by slopes
    voxel_size = (50.0, 4.6, 4.6)
    labels = draw((28, 330, 330), voxel_size, SECTIONED)
    table = measure_instances(labels, voxel_size=voxel_size).table
    assert table["id"].tolist() == [1, 2, 3, 4]
    for row, (_, (a, b, c)) in enumerate(SECTIONED):
        assert table["volume_um3"][row] == pytest.approx(4 / 3 * math.pi * a * b * c / 1e9, rel=0.03)
        assert table["surface_area_um2"][row] == pytest.approx(thomsen_area(a, b, c) / 1e6, rel=0.03)


def test_a_ball_cut_by_the_volume_border_is_closed():
    voxel_size = (5.0, 5.0, 5.0)
    radius = 100.0
    labels = draw((24, 50, 50), voxel_size, [((0.0, 120.0, 120.0), (radius,) * 3)])  # half a ball at z = 0
    table = measure_instances(labels, voxel_size=voxel_size, block_shape=(7, 16, 16)).table
    half_ball = (2 * math.pi * radius**2 + math.pi * radius**2) / 1e6  # dome and flat cut
    assert table["surface_area_um2"][0] == pytest.approx(half_ball, rel=0.03)


@pytest.mark.parametrize("voxel_size", [(8.0, 4.0, 4.0), (50.0, 4.6, 4.6)])
@pytest.mark.parametrize("block_shape", [(7, 13, 11), (1, 64, 64), (32, 5, 64), (3, 50, 7)])
def test_blockwise_measures_equal_whole_volume_ones(block_shape, voxel_size):
    # a Gaussian-smoothed mask is meshed on near-isotropic voxels, a signed distance field on sections
    labels = draw((32, 110, 110), voxel_size, ELLIPSOIDS)
    labels[0:3, 0:4, 100:110] = 7  # an instance at the volume's corner, and one voxel alone
    labels[20, 60, 5] = 9
    raw = np.random.default_rng(0).integers(0, 256, labels.shape).astype(np.uint8)
    mask = np.zeros(labels.shape, bool)
    mask[:, 10:100, 10:100] = True
    whole = measure_instances(labels, voxel_size=voxel_size, raw=raw, mask=mask, block_shape=labels.shape)
    blocks = measure_instances(labels, voxel_size=voxel_size, raw=raw, mask=mask, block_shape=block_shape)
    assert whole.table["id"].tolist() == [1, 2, 3, 7, 9]
    for name, values in whole.table.items():
        if values.dtype == object:
            assert values.tolist() == blocks.table[name].tolist()
        else:
            # marching cubes gives float32 vertices, each block's about its own corner: 1e-7 of a crop's extent
            np.testing.assert_allclose(blocks.table[name], values, rtol=1e-6, atol=1e-9, err_msg=name)
    assert whole.summary["count"] == blocks.summary["count"] == [5]
    np.testing.assert_allclose(blocks.summary["volume_fraction"], whole.summary["volume_fraction"], rtol=1e-12)
    assert whole.table["surface_area_um2"][4] > 0  # a lone voxel still has a surface


def test_threads_give_the_same_table():
    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((32, 110, 110), voxel_size, ELLIPSOIDS)
    serial = measure_instances(labels, voxel_size=voxel_size, block_shape=(8, 40, 40))
    with ThreadExecutor(2) as executor:
        threaded = measure_instances(labels, voxel_size=voxel_size, block_shape=(8, 40, 40), executor=executor)
    for name, values in serial.table.items():
        if values.dtype != object:
            np.testing.assert_allclose(threaded.table[name], values, rtol=1e-9, err_msg=name)


def test_intensity_and_volume_fraction_match_numpy():
    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((32, 110, 110), voxel_size, ELLIPSOIDS)
    raw = np.random.default_rng(1).normal(100, 20, labels.shape).astype(np.float32)
    mask = np.zeros(labels.shape, bool)
    mask[:, :, :70] = True
    result = measure_instances(labels, voxel_size=voxel_size, raw=raw, mask=mask, block_shape=(9, 40, 40))
    for row, i in enumerate(result.table["id"]):
        values = raw[labels == i].astype(np.float64)
        assert result.table["mean_intensity"][row] == pytest.approx(values.mean(), rel=1e-9)
        assert result.table["std_intensity"][row] == pytest.approx(values.std(), rel=1e-9)
        assert result.table["voxels"][row] == (labels == i).sum()
    summary = result.summary
    assert summary["class"] == ["all"] and summary["count"] == [3]
    assert summary["volume_fraction"][0] == pytest.approx(((labels > 0) & mask).sum() / mask.sum())
    assert summary["cell_volume_um3"][0] == pytest.approx(mask.sum() * 128 / 1e9)
    volumes = (np.bincount(labels.ravel())[1:] * 128 / 1e9)
    assert summary["median_volume_um3"][0] == pytest.approx(np.median(volumes))
    assert summary["total_volume_um3"][0] == pytest.approx(volumes.sum())


def test_nan_raw_voxels_are_left_out_of_the_intensities_with_a_warning():
    # NaN (outside an aligned stack) made the whole instance's mean and std NaN, written as empty cells unsaid
    from orgaseg.errors import OrgasegWarning

    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((32, 110, 110), voxel_size, ELLIPSOIDS)
    raw = np.random.default_rng(1).normal(100, 20, labels.shape).astype(np.float32)
    first, second = (np.argwhere(labels == i) for i in (1, 2))
    raw[tuple(first[:5].T)] = np.nan  # five voxels of instance 1, in the first block
    raw[tuple(first[-1])] = np.inf  # and one in its last
    raw[labels == 2] = np.nan  # all of instance 2
    with pytest.warns(OrgasegWarning, match=r"6 voxels of 2 instances are NaN or infinite \(no data\): "
                                            r"mean_intensity .* finite voxels, and left empty for the 1 instances"):
        result = measure_instances(labels, voxel_size=voxel_size, raw=raw, block_shape=(9, 40, 40))
    table = {name: dict(zip(result.table["id"], values)) for name, values in result.table.items()}
    values = raw[labels == 1].astype(np.float64)
    values = values[np.isfinite(values)]
    assert table["mean_intensity"][1] == pytest.approx(values.mean(), rel=1e-9)
    assert table["std_intensity"][1] == pytest.approx(values.std(), rel=1e-9)
    assert np.isnan(table["mean_intensity"][2]) and np.isnan(table["std_intensity"][2])
    assert table["voxels"][2] == len(second)
    assert table["mean_intensity"][3] == pytest.approx(raw[labels == 3].astype(np.float64).mean(), rel=1e-9)
    # a single image's table the same (its std divided by all the voxels, the NaN one included)
    image, pixels = labels[16:17], raw[16:17].copy()
    pixels[tuple(np.argwhere(image == 1)[0])] = np.nan
    with pytest.warns(OrgasegWarning, match="NaN or infinite"):
        flat = measure_instances(image, voxel_size=voxel_size, raw=pixels).table
    values = pixels[image == 1].astype(np.float64)
    values = values[np.isfinite(values)]
    assert flat["std_intensity"][0] == pytest.approx(values.std(), rel=1e-9)


def test_a_segmentation_or_named_volume_is_measured_with_a_warning(tmp_path):
    # their ids are clusters or classes: each is measured as one object
    from orgaseg.errors import OrgasegWarning

    labels = (draw((32, 110, 110), (8.0, 4.0, 4.0), ELLIPSOIDS) > 0).astype(np.uint8)
    for command, zero in (("segment", "a cluster"), ("name", "unassigned")):
        record = {"clusterer": {}} if command == "segment" else {"naming": {}}
        path = write_labels(tmp_path / f"{command}.ome.zarr", labels, voxel_size=(8.0, 4.0, 4.0), provenance=record)
        with pytest.warns(OrgasegWarning, match=rf"is the output of orgaseg {command}: .* id 0 \({zero}\)") as caught:
            assert measure_instances(path).table["id"].tolist() == [1]
        warning = next(w.message for w in caught if "id 0" in str(w.message))
        assert str(warning).endswith("number the organelles first with orgaseg.organelles.make_instances")
        assert warning.for_command_line().endswith("number the organelles first with 'orgaseg instances'")


def test_classes_come_from_the_instance_volume(tmp_path, capsys):
    voxel_size = (8.0, 4.0, 4.0)
    classes = (draw((32, 110, 110), voxel_size, ELLIPSOIDS) > 0).astype(np.uint8)
    classes[draw((32, 110, 110), voxel_size, ELLIPSOIDS) == 3] = 2
    named = write_labels(tmp_path / "named.ome.zarr", classes, voxel_size=voxel_size, provenance={},
                         label_names=["unassigned", "mitochondria", "granules"])
    instances = make_instances(named, tmp_path / "inst.ome.zarr")
    result = measure_instances(instances.path)
    assert result.table["class"].tolist() == instances.classes
    assert result.summary["class"] == ["granules", "mitochondria", "all"]
    assert result.summary["count"] == [1, 2, 3]
    tiff = make_instances(named, tmp_path / "inst.tif")  # classes from the provenance record
    assert measure_instances(tiff.path).table["class"].tolist() == instances.classes
    # a class numbered without an instance has its row: a count of 0 is a result, not a missing one
    with_nucleus = write_labels(tmp_path / "nucleus.ome.zarr", classes, voxel_size=voxel_size, provenance={},
                                label_names=["unassigned", "mitochondria", "granules", "nucleus"])
    with pytest.warns(UserWarning, match="no instance of nucleus"):
        counted = make_instances(with_nucleus, tmp_path / "inst_nucleus.ome.zarr")
    summary = measure_instances(counted.path).summary
    assert summary["class"] == ["granules", "mitochondria", "nucleus", "all"]
    assert summary["count"] == [1, 2, 0, 3] and summary["total_volume_um3"][2] == 0.0
    assert math.isnan(summary["median_volume_um3"][2])
    assert main(["measure", str(counted.path), "-o", str(tmp_path / "t.csv"), "--quiet"]) == 0
    assert "\nnucleus: 0 instances\n" in capsys.readouterr().out


@pytest.mark.parametrize("record", [{"clusterer": {"kind": "kmeans"}}, {"naming": {}}])
def test_measuring_class_labels_warns_that_they_are_not_instances(tmp_path, record):
    from orgaseg.errors import OrgasegWarning

    voxel_size = (8.0, 4.0, 4.0)
    classes = (draw((32, 110, 110), voxel_size, ELLIPSOIDS) > 0).astype(np.uint8)
    labels = write_labels(tmp_path / "seg.ome.zarr", classes, voxel_size=voxel_size, provenance=record)
    zero = "a cluster" if "clusterer" in record else "unassigned"
    with pytest.warns(OrgasegWarning, match=f"id 0 \\({zero}\\) is taken for background.*organelles.make_instances"):
        result = measure_instances(labels)
    assert result.table["id"].tolist() == [1]  # still measured, as one object (id 0 is not)
    instances = make_instances(labels, tmp_path / "inst.ome.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        assert len(measure_instances(instances.path).table["id"]) == 3


def test_a_single_image_is_measured_in_its_plane_areas_outlines_and_no_z(tmp_path, capsys):
    # a 2D micrograph has no thickness: its instances get areas, perimeters and in-plane shape, not a slab's
    # volume, surface and sphericity, and no z columns (whatever thickness the voxel size gives)
    import tifffile

    from orgaseg.cli import main
    from orgaseg.errors import OrgasegWarning

    yy, xx = np.mgrid[:120, :160]
    section = np.zeros((120, 160), np.uint8)
    section[((yy - 40) / 20.0) ** 2 + ((xx - 50) / 20.0) ** 2 <= 1] = 1  # a disc 20 px in radius
    section[((yy - 60) / 30.0) ** 2 + ((xx - 120) / 12.0) ** 2 <= 1] = 2  # an ellipse 60 x 24 px
    section[100:110, 10:30] = 3  # a box
    tifffile.imwrite(tmp_path / "section.tif", section, imagej=True, resolution=(1 / 4.6, 1 / 4.6),
                     metadata={"unit": "nm"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        result = measure_instances(tmp_path / "section.tif", mask=np.ones((1, 120, 160), np.uint8))
    table = result.table
    assert list(table) == ["id", "class", "pixels", "area_um2", "perimeter_um", "circularity", "centroid_y_nm",
                           "centroid_x_nm", "bbox_min_y_nm", "bbox_min_x_nm", "bbox_max_y_nm", "bbox_max_x_nm",
                           "touches_border", "axis_major_length_nm", "axis_minor_length_nm", "aspect_ratio"]
    pixels = [int((section == v).sum()) for v in (1, 2, 3)]
    assert table["pixels"].tolist() == pixels
    np.testing.assert_allclose(table["area_um2"], np.array(pixels) * 4.6**2 / 1e6)
    # outlines within 3% of the analytic perimeters (Ramanujan's for the ellipse; the box loses its corners)
    ellipse = np.pi * (3 * 42 - np.sqrt((3 * 30 + 12) * (30 + 3 * 12)))
    np.testing.assert_allclose(table["perimeter_um"], np.array([2 * np.pi * 20, ellipse, 60]) * 4.6 / 1e3, rtol=0.05)
    assert abs(table["perimeter_um"][0] / (2 * np.pi * 20 * 4.6e-3) - 1) < 0.03
    assert 0.9 < table["circularity"][0] <= 1 and table["circularity"][1] < 0.85
    np.testing.assert_allclose(table["axis_major_length_nm"][:2], [40 * 4.6, 60 * 4.6], rtol=0.03)
    np.testing.assert_allclose(table["axis_minor_length_nm"][:2], [40 * 4.6, 24 * 4.6], rtol=0.05)
    np.testing.assert_allclose(table["centroid_y_nm"][:2], [40 * 4.6, 60 * 4.6])
    # the thickness plays no part: a section of a 50 nm stack gives the same table
    again = measure_instances(section[None], voxel_size=(50, 4.6, 4.6), mask=np.ones((1, 120, 160), np.uint8)).table
    for name in table:
        np.testing.assert_array_equal(again[name], table[name])
    # blocks give the outlines of the whole image
    blocked = measure_instances(section[None], voxel_size=(50, 4.6, 4.6), block_shape=(1, 37, 29)).table
    for name in set(table) - {"class"}:
        np.testing.assert_allclose(blocked[name].astype(float), table[name].astype(float), rtol=1e-9)
    summary = result.summary
    assert list(summary) == ["class", "count", "total_area_um2", "median_area_um2", "mean_area_um2",
                             "cell_area_um2", "area_fraction"]
    assert summary["cell_area_um2"][0] == pytest.approx(120 * 160 * 4.6**2 / 1e6)
    assert summary["area_fraction"][-1] == pytest.approx(sum(pixels) / (120 * 160))
    assert main(["measure", str(tmp_path / "section.tif"), "-o", str(tmp_path / "t.csv"), "--quiet"]) == 0
    assert "um^2" in capsys.readouterr().out
    with warnings.catch_warnings():  # two sections are a volume, measured as before
        warnings.simplefilter("error", OrgasegWarning)
        assert "volume_um3" in measure_instances(np.stack([section, section]), voxel_size=(50, 4.6, 4.6)).table


def test_bad_inputs_give_clear_errors(tmp_path):
    labels = draw((16, 40, 40), (8.0, 4.0, 4.0), ELLIPSOIDS[:1])
    with pytest.raises(OrgasegError, match="no voxel size.*voxel_size"):
        measure_instances(labels)
    whole = measure_instances(labels.astype(np.float32), voxel_size=(8, 4, 4))  # Fiji's 32-bit label images
    assert whole.table["volume_um3"].tolist() == measure_instances(labels, voxel_size=(8, 4, 4)).table["volume_um3"].tolist()
    with pytest.raises(OrgasegError, match="instance ids must hold integer labels; its float32 values include 0.5"):
        measure_instances(labels.astype(np.float32) / 2, voxel_size=(8, 4, 4))
    with pytest.raises(OrgasegError, match="instance ids holds the negative value -2"):  # was measured as an instance
        measure_instances(np.where(labels == 0, -2, labels.astype(np.int8)), voxel_size=(8, 4, 4))
    with pytest.raises(OrgasegError, match="raw volume has shape"):
        measure_instances(labels, voxel_size=(8, 4, 4), raw=np.zeros((16, 40, 41)))
    with pytest.raises(OrgasegError, match="cell mask is empty"):
        measure_instances(labels, voxel_size=(8, 4, 4), mask=np.zeros(labels.shape, bool))
    with pytest.raises(OrgasegError, match="two numbers .* a single image .* this volume has 16 planes"):
        measure_instances(labels, voxel_size=(8, 4))
    with pytest.raises(OrgasegError, match="voxel_size must be 3 positive"):
        measure_instances(labels, voxel_size=(8, 4, 4, 4))
    table = {"id": np.array([1, 2]), "volume_um3": np.array([0.5, float("nan")])}
    path = write_table(table, tmp_path / "t.csv")
    with open(path) as handle:
        assert list(csv.reader(handle)) == [["id", "volume_um3"], ["1", "0.5"], ["2", ""]]
    with pytest.raises(OrgasegError, match="exists; pass overwrite=True"):
        write_table(table, path)
    with pytest.raises(OrgasegError, match=r"\.csv or \.parquet"):
        write_table(table, tmp_path / "t.xlsx")
    # a CSV used to be cut to the shortest column without a word
    with pytest.raises(OrgasegError, match="columns have different lengths: id 2, volume_um3 1"):
        write_table({"id": [1, 2], "volume_um3": [0.5]}, tmp_path / "ragged.csv")
    assert not (tmp_path / "ragged.csv").exists()


def test_parquet_without_pyarrow_asks_for_csv(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(OrgasegError, match="needs pyarrow.*write .csv"):
        write_table({"id": [1]}, tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def test_parquet_tables_hold_what_the_csv_ones_do(tmp_path):
    # named instances, a NaN-free table and an empty one: the same columns, types and values as the CSV
    pq = pytest.importorskip("pyarrow.parquet", reason="the parquet extra (pip install -e '.[parquet]') is not installed")
    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((32, 110, 110), voxel_size, ELLIPSOIDS).astype(np.uint8)
    named = write_labels(tmp_path / "named.ome.zarr", (labels > 0).astype(np.uint8), voxel_size=voxel_size,
                         provenance={"command": "name"}, label_names=["unassigned", "mitochondria, outer"])
    instances = make_instances(named, tmp_path / "inst.ome.zarr")
    result = measure_instances(instances.path)
    for columns, stem in ((result.table, "table"), (result.summary, "summary")):
        write_table(columns, tmp_path / f"{stem}.parquet")
        write_table(columns, tmp_path / f"{stem}.csv")
        read = pq.read_table(tmp_path / f"{stem}.parquet").to_pydict()
        with open(tmp_path / f"{stem}.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert list(read) == list(columns) == list(rows[0])
        for name, values in read.items():
            assert len(values) == len(rows)
            for value, row in zip(values, rows):
                if isinstance(value, bool):  # a flag: True / False in the CSV
                    assert str(value) == row[name]
                else:
                    assert (value == row[name] if isinstance(value, str) else value == pytest.approx(float(row[name])))
    assert read["class"] == ["mitochondria, outer", "all"]
    empty = measure_instances(np.zeros((4, 8, 8), np.uint8), voxel_size=voxel_size)
    write_table(empty.table, tmp_path / "empty.parquet")
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_cli_measure(tmp_path, capsys):
    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((32, 110, 110), voxel_size, ELLIPSOIDS).astype(np.uint8)
    instances = write_tiff_image(tmp_path / "inst.tif", labels, voxel_size=voxel_size)
    raw = write_tiff_image(tmp_path / "raw.tif", (labels * 50).astype(np.uint8), voxel_size=voxel_size)
    mask = write_tiff_image(tmp_path / "cell.tif", np.ones_like(labels), voxel_size=voxel_size)
    table, summary = tmp_path / "table.csv", tmp_path / "summary.csv"
    args = ["measure", str(instances), "--raw", str(raw), "--mask", str(mask), "-o", str(table),
            "--summary", str(summary), "--quiet", "--block-shape", "16", "64", "64"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "all: 3 instances" in printed
    total = printed.split("total ")[1].split(" um^3")[0]
    assert f"% of the cell ({total} um^3 inside it)" in printed  # the mask is the whole volume: all inside
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in rows] == [1, 2, 3]
    assert [float(r["mean_intensity"]) for r in rows] == [50.0, 100.0, 150.0]
    assert float(rows[0]["volume_um3"]) == pytest.approx(4 / 3 * math.pi * 120 * 80 * 60 / 1e9, rel=0.03)
    with open(summary) as handle:
        assert next(csv.DictReader(handle))["class"] == "all"
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["measure", str(instances), "-o", str(tmp_path / "t.json"), "--quiet"]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err
    # a missing input is named before the existing table is
    assert main(["measure", str(tmp_path / "gone.tif"), "-o", str(table), "--quiet"]) == 2
    assert "gone.tif: no such file or directory" in capsys.readouterr().err
    assert main(args[:3] + [str(tmp_path / "gone-raw.tif")] + args[4:]) == 2
    assert "gone-raw.tif: no such file or directory" in capsys.readouterr().err
    # one path for both tables: refused before any work, nothing written, with or without --overwrite
    same = tmp_path / "same.csv"
    for extra in ([], ["--overwrite"]):
        assert main(["measure", str(instances), "-o", str(same), "--summary", str(same), "--quiet", *extra]) == 2
        assert "the summary needs a path of its own" in capsys.readouterr().err and not same.exists()


def test_raw_and_mask_are_read_on_the_instances_grid_whatever_their_tiff_metadata_says(tmp_path):
    import tifffile

    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((16, 40, 40), voxel_size, ELLIPSOIDS[:1])
    half = np.zeros(labels.shape, np.uint8)
    half[:8] = 1
    # ImageJ's way of storing a 3D array without axes: the reader takes its first axis for channels
    tifffile.imwrite(tmp_path / "mask.tif", half, imagej=True)
    tifffile.imwrite(tmp_path / "raw.tif", (labels * 100).astype(np.uint8), imagej=True)
    result = measure_instances(labels, voxel_size=voxel_size, raw=tmp_path / "raw.tif", mask=tmp_path / "mask.tif")
    assert result.table["mean_intensity"][0] == pytest.approx(100.0)
    assert result.summary["volume_fraction"][0] == pytest.approx(np.count_nonzero(labels[:8]) / half.sum())
    tifffile.imwrite(tmp_path / "stack4d.tif", np.zeros((2, 16, 40, 40), np.uint8))
    with pytest.raises(OrgasegError, match=r"the mask volume must be a 3D volume of the instances' shape"):
        measure_instances(labels, voxel_size=voxel_size, mask=tmp_path / "stack4d.tif")
    # a raw stored with a channel axis of one entry is that channel; of two, refused naming the channels
    tifffile.imwrite(tmp_path / "raw1c.tif", (labels * 100).astype(np.uint8)[:, None], imagej=True,
                     metadata={"axes": "ZCYX"})
    result = measure_instances(labels, voxel_size=voxel_size, raw=tmp_path / "raw1c.tif")
    assert result.table["mean_intensity"][0] == pytest.approx(100.0)
    tifffile.imwrite(tmp_path / "raw2c.tif", np.stack([labels * 100, labels * 50], axis=1).astype(np.uint8),
                     imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(OrgasegError, match=r"the raw volume must be a 3D volume .* data has 2 channels"):
        measure_instances(labels, voxel_size=voxel_size, raw=tmp_path / "raw2c.tif")


def test_a_raw_volume_or_mask_from_another_place_is_warned_about():
    from orgaseg.errors import OrgasegWarning
    from orgaseg.io.volume import Volume

    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((16, 40, 40), voxel_size, ELLIPSOIDS[:1])
    instances = Volume(labels, voxel_size=voxel_size, origin=(160.0, 0.0, 0.0))
    here = Volume(labels * 100, voxel_size=voxel_size, origin=(160.0, 0.0, 0.0))
    elsewhere = Volume(labels * 100, voxel_size=voxel_size, origin=(480.0, 0.0, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        measure_instances(instances, raw=here, mask=here)
    with pytest.warns(OrgasegWarning, match=r"the instances' first voxel lies at z, y, x = 160, 0, 0 nm, the raw "
                                            r"volume's at z, y, x = 480, 0, 0 nm: .* intensities are read from voxels"):
        measure_instances(instances, raw=elsewhere)
    with pytest.warns(OrgasegWarning, match=r"the mask's at z, y, x = 480, 0, 0 nm: .* volume fractions count voxels"):
        measure_instances(instances, mask=elsewhere)


def test_raw_and_mask_inside_a_container_have_keys_of_their_own(tmp_path, capsys):
    import h5py

    voxel_size = (8.0, 4.0, 4.0)
    labels = draw((16, 40, 40), voxel_size, ELLIPSOIDS[:1]).astype(np.uint8)
    instances = write_tiff_image(tmp_path / "inst.tif", labels, voxel_size=voxel_size)
    with h5py.File(tmp_path / "cell.h5", "w") as f:
        f["raw"] = labels * 100
        f["mask"] = np.ones_like(labels)
    table = tmp_path / "table.csv"
    measure = ["measure", str(instances), "--raw", str(tmp_path / "cell.h5"), "--mask", str(tmp_path / "cell.h5"),
               "-o", str(table), "--quiet"]
    assert main(measure) == 2
    err = capsys.readouterr().err
    assert "cell.h5 needs a key; pass --raw-key NAME" in err and "not an option" not in err and not table.exists()
    assert main([*measure, "--raw-key", "raw"]) == 2
    assert "cell.h5 needs a key; pass --mask-key NAME" in capsys.readouterr().err
    assert main([*measure, "--raw-key", "raw", "--mask-key", "mask"]) == 0
    with open(table) as handle:
        assert float(next(csv.DictReader(handle))["mean_intensity"]) == 100.0
    with pytest.raises(OrgasegError, match="needs a key; pass raw_key=NAME"):
        measure_instances(instances, raw=tmp_path / "cell.h5")


def test_a_second_measure_on_the_same_table_is_refused_before_it_measures(tmp_path, capsys, monkeypatch):
    import json
    import socket
    import subprocess
    import sys

    from orgaseg.organelles import measure as measure_module

    labels = draw((16, 40, 40), (8.0, 4.0, 4.0), ELLIPSOIDS[:1]).astype(np.uint8)
    instances = write_tiff_image(tmp_path / "inst.tif", labels, voxel_size=(8.0, 4.0, 4.0))
    table, summary = tmp_path / "table.csv", tmp_path / "summary.csv"
    args = ["measure", str(instances), "-o", str(table), "--summary", str(summary), "--quiet"]
    measured = []
    real = measure_module.measure_instances
    monkeypatch.setattr(measure_module, "measure_instances", lambda *a, **k: measured.append(1) or real(*a, **k))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for held in (table, summary):
            lock = held.with_name(held.name + ".partial") / "lock.json"
            lock.parent.mkdir()
            lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
            for extra in ([], ["--overwrite"]):
                assert main(args + extra) == 2
                assert (f"another orgaseg run (process {other.pid}) is writing {held}: wait for it to finish"
                        in capsys.readouterr().err)
                assert not measured and not table.exists() and not summary.exists()
                assert lock.is_file()  # the other run's lock stays
            lock.parent.joinpath("lock.json").unlink()
            lock.parent.rmdir()
        assert not list(tmp_path.glob("*.partial"))  # the refused run took no lock of its own either
    finally:
        other.kill()
        other.wait()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(measure_module, "measure_instances", interrupted)
    assert main(args) == 130  # Ctrl-C: the run's locks go with it
    assert not list(tmp_path.glob("*.partial")) and not table.exists()
    assert main(["measure", str(instances), "-o", str(tmp_path / "new" / "t.csv"), "--quiet"]) == 130
    assert not (tmp_path / "new").exists()  # nor a folder made for the table
    monkeypatch.setattr(measure_module, "measure_instances", real)
    assert main(args) == 0 and table.is_file() and summary.is_file()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*"))
