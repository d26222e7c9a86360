"""``orgaseg crop``: a region of a volume as a file of its own, with its voxel size and position."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from orgaseg.cli import main
from orgaseg.errors import OrgasegError
from orgaseg.io import crop as crop_module
from orgaseg.io import open_volume, read_provenance, write_tiff_image
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


def test_crop_volume_refuses_a_region_that_is_not_three_slices_inside(source, tmp_path):
    _, path = source
    for region, message in [((slice(0, 2), slice(None), slice(0, 5)), "three slices START:STOP"),
                            ((slice(0, 2), slice(0, 41), slice(0, 5)), "region y 0:41 is not inside")]:
        with pytest.raises(OrgasegError, match=message):
            crop_volume(open_volume(path), region, tmp_path / "c.tif")
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
