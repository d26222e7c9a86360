"""benchmarks/single_image.py: the README's single-image figures, in its quick mode on crops of the real data."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import single_image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "vnc").is_dir(), reason=f"real data not found at {SHARED_DATA} (a clone has no ../shared)"
)


class Stack:
    """A stand-in for a volume: ``read(region)`` of an array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape = array, array.shape

    def read(self, region):
        return self.array[region]


def test_montage_tiles_the_sections_row_by_row_cycling():
    stack = Stack(np.arange(3)[:, None, None] * np.ones((3, 4, 4), int))  # section z holds z
    tiled = single_image.montage(stack, tiles=2, crop=None)
    assert tiled.shape == (8, 8)
    assert tiled[::4, ::4].tolist() == [[0, 1], [2, 0]]
    cropped = single_image.montage(stack, tiles=2, crop=3)
    assert cropped.shape == (6, 6) and cropped[::3, ::3].tolist() == [[0, 1], [2, 0]]


@needs_shared
def test_quick_run_records_every_step(tmp_path):
    output = tmp_path / "single-image"
    single_image.main(["--quick", "--crop", "96", "--data-root", str(SHARED_DATA), "-o", str(output)])
    record = json.loads((output / "results.json").read_text())
    assert record["quick"] is True and record["k"] == 8
    assert record["vnc_section"] == "stack1 section 10, top-left 96 x 96"
    assert set(record["pixel_size"]) == set(single_image.VOXEL_SIZES)
    for row in record["pixel_size"].values():
        assert 0 < row["merge_mean_dice"] <= 1 and 0 < row["strict_mean_dice"] <= 1
    cdeep3m = record["cdeep3m"]
    assert cdeep3m["section"] == "training section 10, top-left 96 x 96"
    for label in ("naming", "refine"):
        scores = cdeep3m[label]
        assert scores["area_over_reference"] == pytest.approx(scores["recall"] / scores["precision"])
        assert isinstance(scores["instances"], int)
    # every connected component of the reference's mitochondria (4-connected in the plane), none left out
    from orgaseg.datasets import load_dataset

    item = load_dataset("cdeep3m-mito", SHARED_DATA).evaluation[0]
    reference = np.asarray(item.reference.read((slice(10, 11), slice(0, 96), slice(0, 96))))
    assert cdeep3m["reference_instances"]["components"] == ndi.label(reference[0] == 1)[1]
    assert cdeep3m["reference_instances"]["cleaned"] <= cdeep3m["reference_instances"]["components"]
    assert record["vnc_naming"]["clicks_per_class"] == 5 and 0 <= record["vnc_naming"]["dice"] <= 1
    assert record["environment"]["git"]["commit"] and "montage" not in record
    markdown = (output / "results.md").read_text()
    assert "Quick mode" in markdown and "| - | none (1 nm guess) |" in markdown


@needs_shared
def test_montage_step_runs_every_command(tmp_path):
    from orgaseg.datasets import load_dataset

    vnc = load_dataset("vnc", SHARED_DATA)
    runner = single_image.Runner(tmp_path, in_process=True)
    result = single_image.montage_step(runner, tmp_path, vnc, crop=48)
    assert result["shape"] == [384, 384]
    assert list(result["steps"]) == ["segment", "name", "instances", "measure --raw"]
    assert (tmp_path / "montage_mito.csv").is_file()
    # the montage TIFF carries its pixel size: the segmentation was made at 4.6 nm without --voxel-size
    provenance = json.loads((tmp_path / "montage_k8.ome.zarr.provenance.json").read_text())
    assert provenance["input"]["voxel_size"] == pytest.approx([4.6, 4.6, 4.6])


def test_a_command_in_its_own_process_reports_its_own_peak_memory(tmp_path):
    """Not the parent's: a child spawned by vfork starts its ``ru_maxrss`` at the parent's peak."""
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "tiny.png")
    held = np.ones(600_000_000, np.uint8)  # this process's peak: 0.6 GB, touched
    del held
    result = single_image.Runner(tmp_path, in_process=False)("info", tmp_path / "tiny.png", "--voxel-size", 1, 1, 1)
    assert 0 < result["peak_gb"] < 0.4 and result["wall_s"] > 0
