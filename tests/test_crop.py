"""``orgaseg crop``: a region of a volume as a file of its own, with its voxel size and position."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import zarr

from orgaseg.cli import main
from orgaseg.errors import OrgasegError
from orgaseg.io import VoxelSizeWarning, open_volume, read_provenance, write_tiff_image
from orgaseg.io import crop as crop_module
from orgaseg.io.crop import crop_volume, parse_region

VOXEL = (40.0, 5.0, 6.0)


@pytest.fixture
def source(tmp_path):
    data = np.random.default_rng(0).integers(0, 60000, (9, 40, 50)).astype(np.uint16)
    return data, write_tiff_image(tmp_path / "source.tif", data, voxel_size=VOXEL)


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
@pytest.mark.parametrize("block_voxels", [crop_module.COPY_BLOCK_VOXELS, 700])  # one block; many (planes cut in y)
def test_a_crop_holds_the_region_with_its_voxel_size(source, tmp_path, monkeypatch, suffix, block_voxels):
    data, path = source
    monkeypatch.setattr(crop_module, "COPY_BLOCK_VOXELS", block_voxels)
    region = parse_region(["2:7", "5:", ":31"], data.shape)
    out = crop_volume(open_volume(path), region, tmp_path / f"crop{suffix}")
    cropped = open_volume(out)
    assert cropped.voxel_size == VOXEL and cropped.dtype == np.uint16
    np.testing.assert_array_equal(cropped.read(), data[2:7, 5:, :31])
    record = read_provenance(out)
    assert record["region"] == {"start": [2, 5, 0], "stop": [7, 40, 31]} and record["source"] == str(path)
    assert record["origin_nm"] == [80.0, 25.0, 0.0]


def test_an_ome_zarr_crop_lies_where_it_was_in_the_volume(source, tmp_path):
    data, path = source
    out = crop_volume(open_volume(path), parse_region(["3:4", "10:20", "7:9"], data.shape), tmp_path / "c.ome.zarr")
    (multiscale,) = zarr.open_group(str(out), mode="r").attrs["multiscales"]
    transforms = multiscale["datasets"][0]["coordinateTransformations"]
    assert transforms == [{"type": "scale", "scale": list(VOXEL)}, {"type": "translation", "translation": [120.0, 50.0, 42.0]}]


@pytest.mark.parametrize("items, message", [
    (["0:2", ":"], "three ranges"),
    (["0:2", ":", "a:b"], "region x 'a:b': expected START:STOP"),
    (["3", ":", ":"], "region z '3': expected START:STOP"),
    (["0:10", ":", ":"], "not inside the volume's z axis (0:9)"),
    ([":", "20:20", ":"], "region y 20:20 is not inside"),
    ([":", ":", "-5:"], "region x -5:50 is not inside"),
])
def test_a_bad_region_is_refused_with_what_is_wrong(items, message):
    with pytest.raises(OrgasegError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_region(items, (9, 40, 50))


def test_a_region_is_given_in_python_as_slices_pairs_or_one_string():
    # a tuple of slices (np.s_) or of pairs was an AttributeError ('slice' object has no attribute 'split'),
    # and one string was taken letter by letter ("got 9: 0 : 2 ...")
    expected = (slice(0, 2), slice(0, 40), slice(16, 50))
    for items in (["0:2", ":", "16:"], "0:2 : 16:", np.s_[0:2, :, 16:], [(0, 2), (None, None), (16, None)],
                  ((np.int64(0), 2), ":", slice(np.int64(16), None))):
        assert parse_region(items, (9, 40, 50)) == expected
    for items, message in [((slice(0, 4, 2), ":", ":"), ("region z slice(0, 4, 2): expected START:STOP in voxels, "
                                                         "e.g. 0:64 (or : for the whole axis), a slice with step 1 or "
                                                         "a (START, STOP) pair")),
                           (((0, 1.5), ":", ":"), "region z (0, 1.5): expected START:STOP"),
                           ((slice(0, 20), ":", ":"), "region z 0:20 is not inside the volume's z axis")]:
        with pytest.raises(OrgasegError, match=re.escape(message)):
            parse_region(items, (9, 40, 50))


def test_crop_volume_refuses_a_region_that_is_not_three_slices_inside(source, tmp_path):
    _, path = source
    for region, message in [((slice(0, 2), slice(None), slice(0, 5)), "three slices START:STOP"),
                            ((slice(0, 2), slice(0, 41), slice(0, 5)), "region y 0:41 is not inside")]:
        with pytest.raises(OrgasegError, match=message):
            crop_volume(open_volume(path), region, tmp_path / "c.tif")
    assert not list(tmp_path.glob("c.tif*"))
    # an array failed with "'numpy.ndarray' object has no attribute 'origin'"
    with pytest.raises(OrgasegError, match=r"crop_volume copies a Volume \(orgaseg\.open_volume opens one\), got ndarray"):
        crop_volume(open_volume(path).read(), (slice(0, 2), slice(0, 5), slice(0, 5)), tmp_path / "c.tif")
    assert not list(tmp_path.glob("c.tif*"))


def test_crop_command_keeps_an_existing_output_unless_asked(source, tmp_path, capsys):
    data, path = source
    out = tmp_path / "crop.tif"
    assert main(["crop", str(path), "--region", "0:2", ":", ":", "-o", str(out), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["crop", str(path), "--region", "4:5", ":", ":", "-o", str(out), "--quiet"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["crop", str(path), "--region", "4:5", ":", ":", "-o", str(out), "--overwrite", "--quiet"]) == 0
    np.testing.assert_array_equal(open_volume(out).read(), data[4:5])
    assert json.loads((tmp_path / "crop.tif.provenance.json").read_text())["region"]["start"] == [4, 0, 0]


def test_crop_command_refuses_an_unknown_format_and_its_own_input(source, tmp_path, capsys):
    _, path = source
    assert main(["crop", str(path), "--region", ":", ":", ":", "-o", str(tmp_path / "crop.png"), "--quiet"]) == 2
    assert "unknown output format" in capsys.readouterr().err
    assert main(["crop", str(path), "--region", ":", ":", ":", "-o", str(path), "--overwrite", "--quiet"]) == 2
    assert "source.tif" in capsys.readouterr().err and not list(tmp_path.glob(".tmp-crop-*"))
    # a data type ImageJ cannot hold (an MRC's int8 or float16): said before any work, with where it fits
    np.save(tmp_path / "signed.npy", np.zeros((2, 8, 8), np.int8))
    assert main(["crop", str(tmp_path / "signed.npy"), "--region", ":", ":", ":", "-o", str(tmp_path / "c.tif"),
                 "--quiet"]) == 2
    assert ("c.tif: an ImageJ TIFF holds uint8, uint16, int16, float32, and " in capsys.readouterr().err
            and not (tmp_path / "c.tif").exists())
    assert main(["crop", str(tmp_path / "signed.npy"), "--region", ":", ":", ":", "-o", str(tmp_path / "c.ome.zarr"),
                 "--quiet"]) == 0


def test_a_crop_of_a_crop_is_placed_in_the_first_volume(source, tmp_path, capsys):
    data, path = source
    first = crop_volume(open_volume(path), parse_region(["2:8", "10:30", "5:45"], data.shape), tmp_path / "a.ome.zarr")
    assert open_volume(first).origin == (80.0, 50.0, 30.0)
    second = crop_volume(open_volume(first), parse_region(["1:3", "4:9", ":"], (6, 20, 40)), tmp_path / "b.ome.zarr")
    assert open_volume(second).origin == (120.0, 70.0, 30.0)
    np.testing.assert_array_equal(open_volume(second).read(), data[3:5, 14:19, 5:45])
    assert main(["info", str(second)]) == 0
    assert "origin:      120 x 70 x 30 nm" in capsys.readouterr().out


def test_a_crop_of_a_volume_without_voxel_size_is_placed_in_voxels(tmp_path):
    # its translation is in voxels, as its scale: read back, a crop of it and its segmentation keep the place
    import orgaseg

    data = np.random.default_rng(0).integers(0, 255, (9, 40, 50), dtype=np.uint8)
    np.save(tmp_path / "v.npy", data)
    with pytest.warns(VoxelSizeWarning):
        first = crop_volume(open_volume(tmp_path / "v.npy"), parse_region(["2:8", "10:30", "5:45"], data.shape),
                            tmp_path / "a.ome.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VoxelSizeWarning)
        assert open_volume(first).origin == (2.0, 10.0, 5.0)
        second = crop_volume(open_volume(first), parse_region(["1:3", "4:9", ":"], (6, 20, 40)), tmp_path / "b.ome.zarr")
        (multiscale,) = zarr.open_group(str(second), mode="r").attrs["multiscales"]
        assert multiscale["datasets"][0]["coordinateTransformations"][1]["translation"] == [3.0, 14.0, 5.0]
        segmented = orgaseg.segment(first, k=2, output=tmp_path / "seg.ome.zarr")
        assert open_volume(segmented.path).origin == (2.0, 10.0, 5.0)
    # a voxel size given places it in nm
    assert open_volume(segmented.path, voxel_size=VOXEL).origin == (80.0, 50.0, 30.0)


@pytest.fixture
def placed_cell(tmp_path):
    """A phantom cell cropped out of a larger volume: an OME-Zarr whose first voxel lies at an origin."""
    from orgaseg.synthetic import make_cell

    cell = make_cell((6, 48, 48), voxel_size=(30.0, 20.0, 20.0), seed=0)
    full = np.zeros((10, 64, 64), np.float32)
    full[2:8, 10:58, 5:53] = cell.raw
    whole = write_tiff_image(tmp_path / "whole.tif", full, voxel_size=(30.0, 20.0, 20.0))
    crop = crop_volume(open_volume(whole), parse_region(["2:8", "10:58", "5:53"], full.shape), tmp_path / "cell.ome.zarr")
    return cell, crop, (60.0, 200.0, 100.0)


def test_outputs_of_a_crop_lie_where_the_crop_does(placed_cell, tmp_path):
    import orgaseg
    from orgaseg.organelles import make_instances, measure_instances, name_clusters

    _, crop, origin = placed_cell
    segmented = orgaseg.segment(crop, k=3, output=tmp_path / "seg.ome.zarr")
    labels = open_volume(segmented.path)
    assert labels.origin == origin
    # every level of the pyramid is shifted by the origin (napari draws each level over the crop)
    attrs = zarr.open_group(str(segmented.path / "labels" / "segmentation"), mode="r").attrs
    for level in range(len(attrs["multiscales"][0]["datasets"])):
        seen = open_volume(segmented.path, level=level)
        step = np.array(seen.voxel_size) / (30.0, 20.0, 20.0)
        np.testing.assert_allclose(seen.origin, np.array(origin) + (step - 1) / 2 * (30.0, 20.0, 20.0))
    # clicks in nm read off the full volume name the crop's voxels: one voxel of clusters 1 and 2
    clicks, names = [], []
    for value in (1, 2):
        z, y, x = np.argwhere(labels.read() == value)[0]
        clicks.append([origin[0] + 30 * z, origin[1] + 20 * y, origin[2] + 20 * x])
        names.append(f"n{value}")
    named = name_clusters(segmented.path, points=_points_csv(tmp_path, clicks, names),
                          units="nm", output=tmp_path / "named.ome.zarr")
    assert open_volume(named.path).origin == origin
    assert set(named.names) >= {"n1", "n2"}
    instances = make_instances(named.path, tmp_path / "instances.ome.zarr")
    assert open_volume(instances.path).origin == origin
    placed = measure_instances(instances.path).table
    at_zero = measure_instances(np.asarray(open_volume(instances.path).read()), voxel_size=(30.0, 20.0, 20.0)).table
    assert len(placed["id"]) == len(at_zero["id"]) > 0
    for a, axis in enumerate("zyx"):
        for column in (f"centroid_{axis}_nm", f"bbox_min_{axis}_nm", f"bbox_max_{axis}_nm"):
            np.testing.assert_allclose(placed[column], at_zero[column] + origin[a])


def test_a_tiff_output_of_a_crop_says_it_loses_the_place(placed_cell, tmp_path):
    import orgaseg
    from orgaseg.errors import OrgasegWarning

    _, crop, _ = placed_cell
    with pytest.warns(OrgasegWarning, match=r"lies at z, y, x = 60, 200, 100 nm .* write .ome.zarr to keep"):
        orgaseg.segment(crop, k=3, output=tmp_path / "seg.tif")
    assert open_volume(tmp_path / "seg.tif").origin == (0.0, 0.0, 0.0)


def _points_csv(folder, clicks, names):
    path = folder / "clicks.csv"
    path.write_text("z,y,x,name\n" + "".join(f"{z},{y},{x},{n}\n" for (z, y, x), n in zip(clicks, names)))
    return path


def test_points_in_nm_outside_a_placed_volume_name_its_origin(placed_cell, tmp_path):
    import orgaseg
    from orgaseg.organelles import name_clusters

    _, crop, _ = placed_cell
    segmented = orgaseg.segment(crop, k=3, output=tmp_path / "seg.ome.zarr")
    with pytest.raises(OrgasegError, match=r"outside the volume.*first voxel lies at z, y, x = 60, 200, 100 nm"):
        name_clusters(segmented.path, points=_points_csv(tmp_path, [[0, 20, 20]], ["n"]), units="nm")
    # voxel indices of the volume the crop was cut from: the hint names the crop's corner in it
    with pytest.raises(OrgasegError, match=r"outside the volume.*are they voxel indices of the volume this one was "
                                           r"cut from\? its first voxel is voxel 2, 10, 5 \(z, y, x\) of that one"):
        name_clusters(segmented.path, points=_points_csv(tmp_path, [[7, 55, 50], [2, 10, 5]], ["n", "m"]))


def test_a_crop_at_the_corner_has_a_place_and_its_segmentation_keeps_it(source, tmp_path):
    # a reference cut at 0:N of every axis has a translation of zero: against a prediction from elsewhere
    # it is as far apart as any other crop; a segmentation of a corner crop keeps the zero place
    import orgaseg
    from orgaseg.errors import OrgasegWarning
    from orgaseg.evaluation import evaluate

    data, _ = source
    volume = open_volume(write_tiff_image(tmp_path / "raw.tif", data, voxel_size=VOXEL))
    corner = crop_volume(volume, parse_region([":4", ":20", ":"], data.shape), tmp_path / "corner.ome.zarr")
    elsewhere = crop_volume(volume, parse_region(["3:7", ":20", ":"], data.shape), tmp_path / "elsewhere.ome.zarr")
    assert open_volume(corner).origin == (0.0, 0.0, 0.0)
    segmented = {name: orgaseg.segment(path, k=2, output=tmp_path / f"seg-{name}.ome.zarr").path
                 for name, path in (("corner", corner), ("elsewhere", elsewhere))}
    with pytest.warns(OrgasegWarning, match="cover different regions"):
        evaluate(open_volume(segmented["elsewhere"]), open_volume(corner), class_map="0..30000=dark,30001..65535=bright")
    with pytest.warns(OrgasegWarning, match="cover different regions"):
        evaluate(open_volume(segmented["corner"]), open_volume(elsewhere), class_map="0..30000=dark,30001..65535=bright")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        evaluate(open_volume(segmented["corner"]), open_volume(corner), class_map="0..30000=dark,30001..65535=bright")
        # a volume that says nothing of its place (a TIFF, or a segmentation of one) is trusted
        unplaced = orgaseg.segment(tmp_path / "raw.tif", k=2, output=tmp_path / "seg-tif.ome.zarr").path
        evaluate(open_volume(segmented["corner"]), open_volume(tmp_path / "raw.tif").read()[:4, :20] > 30000,
                 classes=["dark", "bright"])
    assert open_volume(unplaced).attrs.get("placed") is None


def test_scores_warn_when_the_prediction_and_reference_lie_apart(source, tmp_path):
    from orgaseg.errors import OrgasegWarning
    from orgaseg.evaluation import evaluate

    data, _ = source
    labels = (data > 30000).astype(np.uint8)
    labelled = write_tiff_image(tmp_path / "labels.tif", labels, voxel_size=VOXEL)
    volume = open_volume(labelled)
    here = crop_volume(volume, parse_region(["1:5", ":20", ":"], data.shape), tmp_path / "here.ome.zarr")
    there = crop_volume(volume, parse_region(["4:8", ":20", ":"], data.shape), tmp_path / "there.ome.zarr")
    also_here = crop_volume(volume, parse_region(["1:5", ":20", ":"], data.shape), tmp_path / "again.ome.zarr")
    with pytest.warns(OrgasegWarning, match="cover different regions"):
        evaluate(open_volume(here), open_volume(there), classes=["other", "bright"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        evaluate(open_volume(here), open_volume(also_here), classes=["other", "bright"])
    # read through a class map (as --dataset and --class-map do), the reference keeps its place
    with pytest.warns(OrgasegWarning, match="cover different regions"):
        evaluate(open_volume(here), open_volume(there), class_map="0=other,1=bright")
    # a reference from a stack of another resolution; one whose voxel size is unknown says nothing
    other = write_tiff_image(tmp_path / "other.tif", labels[1:5, :20], voxel_size=(VOXEL[0], 2 * VOXEL[1], 2 * VOXEL[2]))
    with pytest.warns(OrgasegWarning, match="different stacks or resolutions"):
        evaluate(open_volume(here), open_volume(other), class_map="0=other,1=bright")
    # tenfold on every axis: a voxel size in Å read as nm (an MRC header's), said as such
    angstrom = write_tiff_image(tmp_path / "angstrom.tif", labels[1:5, :20], voxel_size=tuple(v / 10 for v in VOXEL))
    with pytest.warns(OrgasegWarning, match="ten times apart on every axis, as if one were given in Å for nm"):
        evaluate(open_volume(here), open_volume(angstrom), class_map="0=other,1=bright")
    np.save(tmp_path / "plain.npy", labels[1:5, :20])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VoxelSizeWarning)
        plain = open_volume(tmp_path / "plain.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        evaluate(open_volume(here), plain, class_map="0=other,1=bright")


def test_a_crop_removes_the_copy_a_killed_crop_left(source, tmp_path):
    import subprocess
    import sys

    from orgaseg.io.partial import run_tag

    data, path = source
    # a crop killed while copying (SIGKILL runs no clean-up) leaves its hidden copy, named with its host and pid
    killed = subprocess.run([sys.executable, "-c", "from orgaseg.io.partial import run_tag; print(run_tag())"],
                            capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / f".tmp-crop-{killed}-crop.ome.zarr"
    left.mkdir()
    (left / "chunk").write_bytes(b"part of a copy")
    mine = tmp_path / f".tmp-crop-{run_tag()}-other.ome.zarr"  # a live run's (this process's) is its work
    mine.mkdir()
    out = crop_volume(open_volume(path), parse_region(["0:2", ":", ":"], data.shape), tmp_path / "crop.ome.zarr")
    np.testing.assert_array_equal(open_volume(out).read(), data[:2])
    assert not left.exists() and mine.is_dir()
