"""The command line end to end, and its answers to bad input."""

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import tifffile

from orgaseg.cli import main
from test_viz import panel_columns
from orgaseg.synthetic import make_cell


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """A small phantom written as ImageJ TIFFs (raw, reference classes with 255 outside the cell)."""
    folder = tmp_path_factory.mktemp("phantom")
    cell = make_cell((16, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=0)
    raw = folder / "raw.tif"
    tifffile.imwrite(raw, cell.raw, imagej=True, resolution=(1 / 0.02, 1 / 0.02),
                     metadata={"spacing": 0.02, "unit": "um", "axes": "ZYX"})
    reference = np.where(cell.labels == 0, 255, cell.labels - 1).astype(np.uint8)
    ref = folder / "reference.tif"
    tifffile.imwrite(ref, reference, imagej=True, resolution=(1 / 0.02, 1 / 0.02),
                     metadata={"spacing": 0.02, "unit": "um", "axes": "ZYX"})
    return raw, ref


def test_info_describes_a_volume(phantom_files, capsys):
    raw, _ = phantom_files
    assert main(["info", str(raw)]) == 0
    out = capsys.readouterr().out
    assert "16 x 96 x 96" in out and "uint8" in out and "20 x 20 x 20 nm" in out
    assert "levels:" not in out  # one resolution


def test_info_warns_of_pixels_no_electron_microscope_has(tmp_path, capsys):
    path = tmp_path / "um.tif"  # nm written as um: 8 nm pixels read as 8 um
    tifffile.imwrite(path, np.zeros((4, 32, 32), np.uint8), imagej=True, resolution=(1 / 8, 1 / 8),
                     metadata={"spacing": 30, "unit": "micron", "axes": "ZYX"})
    with pytest.warns(UserWarning) as caught:
        assert main(["info", str(path)]) == 0
    assert [w.message.for_command_line() for w in caught] == [
        (f"{path}: pixels of 8000 x 8000 nm (y x) are coarser than an electron microscope's (1 um or more): a size "
         "in nm stored as um reads 1000 times too large; --voxel-size Z Y X overrides the file's")]
    assert "voxel size:  30000 x 8000 x 8000 nm" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 999 nm pixels (an X-ray or array-tomography stack's) are not warned of
        assert main(["info", str(path), "--voxel-size", "999", "999", "999"]) == 0


def test_info_lists_the_levels_of_a_pyramid(tmp_path, capsys):
    from orgaseg.io import write_labels

    path = write_labels(tmp_path / "seg.ome.zarr", np.zeros((8, 512, 512), np.uint8), voxel_size=(10, 5, 5), provenance={})
    for level in ("0", "2"):  # whichever level is read, all of them are listed
        assert main(["info", str(path), "--level", level]) == 0
        assert ("levels:      3 (--level N): 0: 8 x 512 x 512 at 10 x 5 x 5 nm; 1: 8 x 256 x 256 at 10 x 10 x 10 nm; "
                "2: 4 x 128 x 128 at 20 x 20 x 20 nm") in capsys.readouterr().out


def test_info_gives_a_volume_of_unknown_voxel_size_its_place_and_levels_in_voxels(tmp_path, capsys):
    from orgaseg.io import write_labels

    np.save(tmp_path / "raw.npy", np.zeros((6, 64, 64), np.uint8))  # no voxel size
    assert main(["crop", str(tmp_path / "raw.npy"), "--region", "2:5", "8:40", "16:48", "-o",
                 str(tmp_path / "c.ome.zarr"), "--quiet"]) == 0
    main(["info", str(tmp_path / "c.ome.zarr")])
    assert "origin:      2 x 8 x 16 voxels (z y x" in capsys.readouterr().out  # not nm: 1 nm is a guess
    path = write_labels(tmp_path / "seg.ome.zarr", np.zeros((8, 512, 512), np.uint8), voxel_size=None, provenance={})
    main(["info", str(path)])
    # each level's voxel size is as unknown as the first's: not listed as 1 nm
    assert "levels:      3 (--level N): 0: 8 x 512 x 512; 1: 4 x 256 x 256; 2: 2 x 128 x 128\n" in capsys.readouterr().out


def test_segment_then_evaluate(phantom_files, tmp_path, capsys):
    raw, ref = phantom_files
    out = tmp_path / "seg.ome.zarr"
    assert main(["segment", str(raw), "--method", "baseline", "-k", "6", "-o", str(out), "--quiet"]) == 0
    assert out.exists()
    record = json.loads((tmp_path / "seg.ome.zarr.provenance.json").read_text())
    assert record["method"] == "baseline" and record["k"] == 6
    assert np.asarray(record["clusterer"]["centers"]).shape[0] == 6
    report_dir = tmp_path / "report"
    code = main(["evaluate", str(out), "--reference", str(ref), "--classes", "cytoplasm", "nucleus",
                 "mitochondria", "granules", "membrane", "--background", "cytoplasm", "--raw", str(raw),
                 "-o", str(report_dir), "--quiet"])
    assert code == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["k"] == 6
    assert set(report["merge"]["per_class"]) == {"cytoplasm", "nucleus", "mitochondria", "granules", "membrane"}
    assert report["merge"]["mean_dice"] > 0.4
    # the overlay shows raw, clusters, clusters mapped to classes, reference: five panels
    assert len(panel_columns(mpimg.imread(report_dir / "overlay.png"))) == 5
    confusion = mpimg.imread(report_dir / "confusion.png")[..., :3]
    assert len(np.unique(confusion.reshape(-1, 3).round(2), axis=0)) > 20  # a heat map, not a blank figure


def test_existing_output_is_refused_then_replaced_with_overwrite(phantom_files, tmp_path, capsys):
    raw, _ = phantom_files
    out = tmp_path / "seg.tif"
    assert main(["segment", str(raw), "-k", "3", "-o", str(out), "--quiet"]) == 0
    before = out.read_bytes()
    assert main(["segment", str(raw), "-k", "4", "-o", str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["segment", str(raw), "-k", "4", "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert tifffile.imread(out).max() == 3


def test_centers_reuse_gives_same_ids(phantom_files, tmp_path, capsys):
    raw, _ = phantom_files
    first, second = tmp_path / "a.tif", tmp_path / "b.tif"
    assert main(["segment", str(raw), "-k", "5", "-o", str(first), "--quiet"]) == 0
    assert main(["segment", str(raw), "-o", str(second), "--centers", f"{first}.provenance.json", "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(first), tifffile.imread(second))
    # the reused clusterer fixes K: the same K is accepted, another one refused (it used to be ignored)
    assert main(["segment", str(raw), "-k", "5", "-o", str(tmp_path / "c.tif"), "--centers",
                 f"{first}.provenance.json", "--quiet"]) == 0
    assert main(["segment", str(raw), "-k", "4", "-o", str(tmp_path / "d.tif"), "--centers",
                 f"{first}.provenance.json", "--quiet"]) == 2
    assert "K = 4 was asked for, but the reused clusterer" in capsys.readouterr().err
    assert not (tmp_path / "d.tif").exists()
    # the run's pixel size and options come with its clusterer, and are said
    coarse = tmp_path / "coarse.tif"
    assert main(["segment", str(raw), "-k", "4", "--pixel-size", "30", "--scales-nm", "40", "80", "160", "-o",
                 str(coarse), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["segment", str(raw), "-o", str(tmp_path / "e.tif"), "--centers", f"{coarse}.provenance.json"]) == 0
    assert (f"as in {coarse}.provenance.json: feature options scales_nm=[40.0, 80.0, 160.0], pixel size 30 nm"
            in capsys.readouterr().err)
    np.testing.assert_array_equal(tifffile.imread(coarse), tifffile.imread(tmp_path / "e.tif"))
    # the contrast comes with them: an inverted run's clusterer reads inverted intensities, and only those
    inverted = tmp_path / "inverted.tif"
    assert main(["segment", str(raw), "-k", "4", "--invert", "-o", str(inverted), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["segment", str(raw), "-o", str(tmp_path / "f.tif"), "--centers", f"{inverted}.provenance.json"]) == 0
    assert f"as in {inverted}.provenance.json: inverted intensities" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(inverted), tifffile.imread(tmp_path / "f.tif"))
    assert main(["segment", str(raw), "--invert", "-o", str(tmp_path / "g.tif"), "--centers",
                 f"{first}.provenance.json", "--quiet"]) == 2
    assert "fitted on the intensities as they were; inverting them here (--invert)" in capsys.readouterr().err
    # what only a fit reads is said to take no effect
    with pytest.warns(UserWarning, match=r"sample_size.* and the clusterer option n_init take no effect: the "
                                         r"reused clusterer \(.*a\.tif\.provenance\.json\) is not fitted again"):
        assert main(["segment", str(raw), "-o", str(tmp_path / "h.tif"), "--centers", f"{first}.provenance.json",
                     "--sample-size", "5000", "--option", "n_init=3", "--quiet"]) == 0
    record = json.loads((tmp_path / "h.tif.provenance.json").read_text())
    assert record["given_without_effect"] == ["sample_size", "clusterer option n_init"]  # not as if they had one
    # a volume whose voxel size is unknown computes its features at 1 nm: the warning says what to pass
    np.save(tmp_path / "unknown.npy", tifffile.imread(raw))
    with pytest.warns(UserWarning, match="this volume's voxel size is unknown \\(taken as 1 nm\\): pass"):
        main(["segment", str(tmp_path / "unknown.npy"), "-o", str(tmp_path / "u.tif"), "--centers",
              f"{first}.provenance.json", "--quiet"])
    # the segmentation given for its provenance, or a named output's provenance: the error names what to give
    assert main(["segment", str(raw), "-o", str(tmp_path / "i.tif"), "--centers", str(first), "--quiet"]) == 2
    assert f"{first} is an output, not its provenance: give {first}.provenance.json" in capsys.readouterr().err
    assert main(["name", str(first), "--points", str(_points_csv(tmp_path)), "-o", str(tmp_path / "n.tif"),
                 "--quiet"]) == 0
    assert main(["segment", str(raw), "-o", str(tmp_path / "i.tif"), "--centers", f"{tmp_path / 'n.tif'}.provenance.json",
                 "--quiet"]) == 2
    assert (f"n.tif.provenance.json is the provenance of a named output ('orgaseg name'), which holds no clusterer: "
            f"give its segmentation's, {first}.provenance.json" in capsys.readouterr().err)
    assert main(["name", str(first), "--mapping", str(tmp_path / "n.tif"), "-o", str(tmp_path / "m.tif"),
                 "--quiet"]) == 2
    assert f"n.tif is an output, not its provenance: give {tmp_path / 'n.tif'}.provenance.json" in capsys.readouterr().err
    # the run whose provenance is reused is not replaced, even with --overwrite
    before = (tmp_path / "a.tif").read_bytes()
    assert main(["segment", str(raw), "-o", str(first), "--centers", f"{first}.provenance.json", "--overwrite",
                 "--quiet"]) == 2
    assert f"its provenance, {first}.provenance.json, is an input of this run" in capsys.readouterr().err
    assert first.read_bytes() == before


def test_clusters_that_label_no_voxel_are_said(phantom_files, tmp_path, capsys):
    raw, _ = phantom_files
    # (the first call installs the command line's warning display, which pytest.warns then records)
    assert main(["segment", str(raw), "-k", "3", "-o", str(tmp_path / "a.tif"), "--quiet"]) == 0
    fitted = json.loads(Path(f"{tmp_path / 'a.tif'}.provenance.json").read_text())["clusterer"]
    centres = np.asarray(fitted["centers"]) * np.asarray(fitted["scale"]) + np.asarray(fitted["mean"])
    far = np.full((1, centres.shape[1]), 1e6)  # a centre no voxel is nearest to
    np.save(tmp_path / "centres.npy", np.vstack([centres, far]).astype(np.float32))
    out = tmp_path / "s.tif"
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"cluster 3 of K = 4 labels no voxel of this volume: it holds 3 clusters"):
        assert main(["segment", str(raw), "--centers", str(tmp_path / "centres.npy"), "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    counts = json.loads(Path(f"{out}.provenance.json").read_text())["label_voxels"]
    assert counts == np.bincount(tifffile.imread(out).ravel(), minlength=4).tolist() and counts[3] == 0
    shares = ", ".join(f"{i} {100 * n / sum(counts):.1f}%" for i, n in enumerate(counts))
    assert f"share of the voxels per cluster: {shares}" in printed.out and shares.endswith("3 0.0%")


def test_centers_fitted_on_other_features_are_refused(phantom_files, tmp_path, capsys):
    # the same width (30 filter-bank features) at other scales: the ids would name other structures
    raw, _ = phantom_files
    first = tmp_path / "a.tif"
    assert main(["segment", str(raw), "-k", "4", "-o", str(first), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "b.tif"
    assert main(["segment", str(raw), "--scales-nm", "20", "40", "80", "160", "320", "-o", str(out), "--centers",
                 f"{first}.provenance.json", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "its clusterer was fitted on other features than this run computes: the dense features" in err
    assert "scales_nm" in err and "leave out --centers" in err and not out.exists()
    # another working pixel size: refused where it drops filter scales, said where the width is the same
    assert main(["segment", str(raw), "--pixel-size", "40", "-o", str(out), "--centers",
                 f"{first}.provenance.json", "--quiet"]) == 2
    assert ("35 feature channels at working voxels of 20 x 20 x 20 nm (this run: 28 at 40 x 40 x 40 nm)"
            in capsys.readouterr().err)
    with pytest.warns(UserWarning, match="fitted on working voxels of 20 x 20 x 20 nm, this run computes features "
                                         "on 18 x 18 x 18 nm"):
        assert main(["segment", str(raw), "--pixel-size", "18", "-o", str(out), "--centers",
                     f"{first}.provenance.json", "--quiet"]) == 0


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t, raw, ref: ["info", str(t / "missing.tif")], "missing.tif"),
        (lambda t, raw, ref: ["info", str(_touch(t / "volume.xyz"))], "volume.xyz"),
        (lambda t, raw, ref: ["info", str(_npy(t / "line.npy", np.zeros(10)))], "dimension"),
        (lambda t, raw, ref: ["segment", str(raw), "--method", "nope", "-o", str(t / "s.tif")], "unknown method"),
        (lambda t, raw, ref: ["segment", str(raw), "-o", str(t / "s.png")], ".png"),
        (lambda t, raw, ref: ["segment", str(_npy(t / "tiny.npy", np.arange(8, dtype=np.uint8).reshape(2, 2, 2))),
                              "-k", "20", "-o", str(t / "s.tif")], "K = 20"),
        (lambda t, raw, ref: ["segment", str(raw), "-k", "100000", "-o", str(t / "s.ome.zarr")],
         "K = 100000 needs a sample of at least 1,000,000 voxels (10 per cluster) but this run samples 147,456"),
        (lambda t, raw, ref: ["segment", str(raw), "--voxel-size", "0", "1", "1", "-o", str(t / "s.tif")], "voxel"),
        (lambda t, raw, ref: ["segment", str(raw), "--voxel-size", "4.6", "4.6", "-o", str(t / "s.tif")],
         "two numbers (y x) are the pixel size of a single image (one plane), but this volume has 16 planes"),
        (lambda t, raw, ref: ["segment", str(raw), "--option", "n_init=abc", "-o", str(t / "s.tif")],
         "option n_init must be a whole number >= 1, got 'abc'"),
        (lambda t, raw, ref: ["segment", str(raw), "--level", "1", "-o", str(t / "s.tif")], "holds one resolution"),
        (lambda t, raw, ref: ["segment", str(raw), "-o", str(raw), "--overwrite"], "is also an input of this run"),
        (lambda t, raw, ref: ["train", str(raw), "--method", "baseline", "-o", str(t / "m.pt")], "does not learn"),
        (lambda t, raw, ref: ["segment", str(_npy(t / "blank.npy", np.full((2, 16, 16), 7, np.uint8))), "--voxel-size",
                              "10", "10", "10", "-o", str(t / "s.tif")], "is 7: the volume is constant"),
        (lambda t, raw, ref: ["train", str(_npy(t / "blank.npy", np.full((2, 16, 16), 7, np.uint8))), "--method",
                              "maester", "--voxel-size", "10", "10", "10", "-o", str(t / "m.pt")],
         "is 7: the volume is constant"),
        (lambda t, raw, ref: ["segment", str(raw), "--method", "han-vae-2d", "--model", str(_han_vae_2d(t, raw)),
                              "--stride", "96", "-o", str(t / "s.tif")], "is not smaller than the planes' 96 x 96"),
        (lambda t, raw, ref: ["evaluate", str(raw), "--reference", str(ref), "--mask",
                              str(_npy(t / "empty.npy", np.zeros((16, 96, 96), np.uint8))), "-o", str(t / "r")], "mask"),
        (lambda t, raw, ref: ["evaluate", str(raw), "--reference", str(_npy(t / "small.npy", np.zeros((2, 3, 3), np.uint8))),
                              "-o", str(t / "r")], "shape"),
        (lambda t, raw, ref: ["benchmark", "--dataset", "nope", "--method", "baseline", "-o", str(t / "b")], "nope"),
        (lambda t, raw, ref: ["benchmark", "--dataset", "vnc", "--data-root", str(t / "nowhere"), "--method",
                              "baseline", "-o", str(t / "b")], "nowhere"),
        (lambda t, raw, ref: ["benchmark", "--dataset", "phantom", "--method", "baseline", "-k", "4-x",
                              "-o", str(t / "b")], "K range"),
    ],
)
def test_bad_input_exits_2_with_one_line(phantom_files, tmp_path, capsys, make_args, message):
    raw, ref = phantom_files
    code = main(make_args(tmp_path, raw, ref) + ["--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message.lower() in err.lower()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_refusal_that_depends_on_the_volume_names_it(phantom_files, tmp_path, capsys):
    # in a batch log of many volumes, "every filter-bank scale ... is below half a voxel" did not say whose
    raw, _ = phantom_files
    assert main(["segment", str(raw), "--voxel-size", "20000", "20000", "20000", "-o", str(tmp_path / "s.tif"),
                 "--quiet"]) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]  # after the warning that the given size overrides 20 nm
    assert last_line.startswith(f"orgaseg segment: error: {raw}: every filter-bank scale"), last_line
    assert main(["segment", str(raw), "-k", "100000", "-o", str(tmp_path / "s.ome.zarr"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(f"orgaseg segment: error: {raw}: K = 100000 needs a sample")
    tiny = _npy(tmp_path / "tiny.npy", np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    assert main(["segment", str(tiny), "-k", "20", "-o", str(tmp_path / "s.tif"), "--quiet"]) == 2
    assert f"orgaseg segment: error: {tiny}: K = 20 is larger than the volume" in capsys.readouterr().err
    import orgaseg

    with pytest.raises(orgaseg.OrgasegError, match=r"^K = 20 is larger than the volume"):  # an array has no name
        orgaseg.segment(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), voxel_size=(10, 10, 10), k=20)


def test_a_single_image_takes_its_pixel_size_as_two_numbers_and_a_stack_refuses_them(tmp_path, capsys):
    # one plane has no thickness: --voxel-size Y X gives its pixel size, its Z then its Y (as from metadata)
    from PIL import Image

    from orgaseg.io import write_labels

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 40)) * 255).astype(np.uint8)).save(tmp_path / "em.png")
    png = str(tmp_path / "em.png")
    assert main(["info", png, "--voxel-size", "4.6", "5", "--quiet"]) == 0
    assert "voxel size:  4.6 x 4.6 x 5 nm (z y x)" in capsys.readouterr().out
    assert main(["info", "--voxel-size", "4.6", "4.6", "4.6", png, "--quiet"]) == 0  # three still end before the path
    assert main(["crop", png, "--region", ":", "0:8", "0:8", "--voxel-size", "4.6", "4.6", "-o",
                 str(tmp_path / "c.ome.zarr"), "--quiet"]) == 0
    assert "voxel size 4.6 x 4.6 x 4.6 nm" in capsys.readouterr().out
    out = tmp_path / "s.ome.zarr"
    assert main(["segment", png, "-k", "2", "--voxel-size", "4.6", "4.6", "-o", str(out), "--quiet"]) == 0
    assert json.loads(Path(f"{out}.provenance.json").read_text())["input"]["voxel_size"] == [4.6, 4.6, 4.6]
    section = np.zeros((1, 30, 40), np.uint8)
    section[0, 2:12, 2:12] = 1
    write_labels(tmp_path / "named.tif", section, voxel_size=(1.0, 1.0, 1.0), provenance={})
    named = str(tmp_path / "named.tif")
    assert main(["instances", named, "--voxel-size", "5", "5", "--min-size-nm2", "2500", "-o",
                 str(tmp_path / "i.tif"), "--quiet"]) == 0
    assert "class 1: 1" in capsys.readouterr().out
    assert main(["measure", named, "--voxel-size", "5", "5", "-o", str(tmp_path / "t.csv"), "--quiet"]) == 0
    assert "0.0025" in (tmp_path / "t.csv").read_text()  # 100 pixels of 5 x 5 nm in um^2
    capsys.readouterr()
    # a stack's planes need their spacing; one number or four is no voxel size
    stack = _npy(tmp_path / "stack.npy", np.zeros((3, 8, 8), np.uint8))
    for command in (["info", str(stack)], ["segment", str(stack), "-o", str(tmp_path / "t.tif")],
                    ["measure", str(stack), "-o", str(tmp_path / "u.csv")]):
        assert main([*command, "--voxel-size", "4.6", "4.6", "--quiet"]) == 2
        assert ("stack.npy: voxel size 4.6 4.6 nm: two numbers (y x) are the pixel size of a single image (one "
                "plane), but this volume has 3 planes: pass --voxel-size Z Y X with z") in capsys.readouterr().err
    assert main(["info", png, "--voxel-size", "4.6", "--quiet"]) == 2
    assert ("--voxel-size must be three positive numbers (z y x nm), or two (y x) for a single image, got 4.6"
            in capsys.readouterr().err)
    assert main(["info", png, "--voxel-size", "1", "2", "3", "4", "--quiet"]) == 2
    assert "unrecognized arguments: 4" in capsys.readouterr().err
    # argparse cannot stop at two numbers: a path right after them is taken for the third, and said so
    assert main(["info", "--voxel-size", "4.6", "4.6", png, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"got {png!r}; two numbers just before the input path take it for the third: give the path first" in err
    assert main(["info", png, "--voxel-size", "4.6", "x", "--quiet"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("expected numbers in nm, Z Y X (Y X for a single image), got 'x'")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", [["segment", "{raw}", "-k", "3", "-o", "{out}/s.tif"],
                                     ["train", "{raw}", "--method", "sccs", "--preset", "tiny", "-o", "{out}/c.json"]],
                         ids=["baseline segment", "sccs train"])
def test_cuda_without_a_cuda_device_is_refused_where_nothing_would_run_on_it(phantom_files, tmp_path, capsys, command):
    raw, _ = phantom_files
    line = [part.format(raw=raw, out=tmp_path) for part in command]
    assert main([*line, "--device", "cuda", "--quiet"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("method, said", [
    ("baseline", "method 'baseline' does not learn, there is nothing to train; methods that learn: sccs, cs2c, maester"),
    ("cs2c-spa", "'cs2c-spa' is a clusterer, not a method; methods that learn: sccs, cs2c, maester"),
    ("nope", "unknown method 'nope'; choose one of sccs, cs2c, maester"),
])
def test_train_names_only_the_methods_that_learn(tmp_path, capsys, method, said):
    assert main(["train", str(tmp_path / "v.tif"), "--method", method, "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert said in err and "baseline," not in err


def test_console_script_exit_code_and_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "orgaseg.cli", "info", str(tmp_path / "absent.zarr")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "absent.zarr" in result.stderr and "Traceback" not in result.stderr


def test_a_file_a_lazy_reader_keeps_open_is_not_a_warning_to_the_user(tmp_path):
    # a boolean TIFF is read through tifffile's zarr store, which holds the file open to the end
    tifffile.imwrite(tmp_path / "mask.tif", np.random.default_rng(0).random((4, 16, 16)) > 0.5)
    result = subprocess.run([sys.executable, "-m", "orgaseg.cli", "instances", str(tmp_path / "mask.tif"), "-o",
                             str(tmp_path / "i.ome.zarr"), "--quiet"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "unclosed file" not in result.stderr, result.stderr


def test_a_reader_that_stops_early_is_not_an_error():
    # `orgaseg methods | head -1`: the command's print meets a closed pipe
    script = ("import sys, orgaseg.cli as cli\n"
              "def closed(*args):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
              "cli.cmd_methods = closed\nsys.exit(cli.main(['methods']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    listing = subprocess.run([sys.executable, "-m", "orgaseg", "methods"], capture_output=True, text=True, check=False)
    assert listing.returncode == 0 and "baseline" in listing.stdout


def test_a_bar_moved_by_fractions_of_a_block_counts_whole_blocks(capsys):
    import time

    from orgaseg.progress import TqdmProgress

    progress = TqdmProgress()
    for done in (0.5, 1.5, 2):
        time.sleep(0.15)  # past tqdm's least interval between two draws, so that each update is drawn
        progress("sampling features", done, 2)
    err = capsys.readouterr().err
    assert "75%" in err and "| 1/2 [" in err and "| 2/2 [" in err and ".5/2" not in err


def test_a_log_file_gets_whole_progress_lines_not_bars_redrawn_with_carriage_returns(phantom_files, tmp_path):
    # a batch script's log (stderr to a file) filled with a bar redrawn ten times a second
    raw, _ = phantom_files
    result = subprocess.run([sys.executable, "-m", "orgaseg", "segment", str(raw), "-k", "3",
                             "-o", str(tmp_path / "s.ome.zarr")], capture_output=True, check=False)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "\r" not in err and "|" not in err, err
    lines = err.splitlines()
    assert any(line.startswith("labelling blocks: 1/1 (100%), ") and " elapsed" in line for line in lines), err
    assert any(line.startswith("sampling features: 0/1 (0%), ") for line in lines), err


def test_progress_lines_come_at_the_start_every_interval_and_at_the_end(capsys, monkeypatch):
    from orgaseg import progress as progress_module
    from orgaseg.progress import TqdmProgress

    clock = {"now": 100.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock["now"])
    progress = TqdmProgress(bars=False, line_interval_s=30)
    for done, now in [(0, 100), (1, 110), (2, 131), (3, 140), (4, 165)]:
        clock["now"] = float(now)
        progress("labelling blocks", done, 4, voxels_per_s=1234.5)
    err = capsys.readouterr().err
    assert err.splitlines() == ["labelling blocks: 0/4 (0%), 00:00 elapsed, voxels_per_s=1234",
                                "labelling blocks: 2/4 (50%), 00:31 elapsed, voxels_per_s=1234",
                                "labelling blocks: 4/4 (100%), 01:05 elapsed, voxels_per_s=1234"]
    TqdmProgress(bars=False, disable=True)("labelling blocks", 4, 4)  # --quiet: nothing
    assert capsys.readouterr().err == ""


def test_an_interrupted_command_says_what_it_kept_next_to_interrupted_not_around_a_bar():
    script = ("import logging, sys, orgaseg.cli as cli\n"
              "bars = cli.TqdmProgress\n"  # bars as on a terminal: the captured stderr is none
              "cli.TqdmProgress = lambda **options: bars(**{**options, 'bars': True})\n"
              "def stopped(args, progress):\n"
              "    progress('labelling', 3, 8)\n"
              "    logging.getLogger('orgaseg.pipeline.outputs').warning('kept the finished work in x.partial')\n"
              "    raise KeyboardInterrupt\n"
              "cli.cmd_info = stopped\nsys.exit(cli.main(['info', 'x.zarr']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)  # bytes: keeps \r
    err = result.stderr.decode()
    shown = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]  # what a terminal shows
    assert result.returncode == 130
    assert [line for line in shown if line.strip()] == ["kept the finished work in x.partial",
                                                        "orgaseg info: interrupted"], err


def test_finished_work_kept_after_a_crash_is_logged_in_command_line_words(capsys, monkeypatch):
    # the note is a Python caller's (call it again) where it is logged; the command line says what to run again
    from orgaseg import cli
    from orgaseg.errors import Note, in_words

    def crashed(args, progress):
        again = in_words("call it again with the same arguments", "rerun the same command")
        logging.getLogger("orgaseg.pipeline.outputs").warning(Note(f"kept the finished work in x.partial; {again}"))
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_info", crashed)
    assert cli.main(["info", "x.zarr"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == "kept the finished work in x.partial; rerun the same command"


def test_a_demo_stopped_before_it_segmented_is_said_before_a_second_draws_its_phantom(tmp_path, capsys, monkeypatch):
    # Ctrl-C while the demo samples its features leaves the phantom, the reference and the clicks; the rerun was
    # refused only once it had drawn its phantom again (9 s), naming one file ("phantom_raw.tif exists")
    from orgaseg import demo

    out = tmp_path / "demo"
    out.mkdir()
    for name in ("phantom_raw.tif", "phantom_reference.tif", "clicks.csv"):
        (out / name).write_text("earlier")
    monkeypatch.setattr(demo, "load_dataset", lambda *args, **kwargs: pytest.fail("the phantom was drawn"))
    assert main(["demo", "-o", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"orgaseg demo: error: {out} holds an earlier demo's outputs (phantom_raw.tif, phantom_reference.tif, "
        "clicks.csv, of a demo stopped before it segmented); pass --overwrite to replace them")
    assert (out / "phantom_raw.tif").read_text() == "earlier"


def test_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--shape", "24", "96", "96", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    for name in ("segmentation.ome.zarr", "overlay.png", "report/report.json", "report/report.md",
                 "report/confusion.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["merge"]["mean_dice"] > 0.4
    assert f"mean Dice {report['merge']['mean_dice']:.3f} against the phantom's reference (" in printed
    # clusters that lie only on unscored voxels (outside the cell) are said to, on the same line
    outside = report["empty_clusters"]
    assert (f"{', '.join(map(str, outside))} lie" in printed) == bool(outside)
    assert main(["demo", "-o", str(out), "--shape", "24", "96", "96", "--quiet"]) == 2
    # its clicks name the segmentation's clusters, as the README's first naming command does
    assert main(["name", str(out / "segmentation.ome.zarr"), "--points", str(out / "clicks.csv"), "-o",
                 str(tmp_path / "named.ome.zarr"), "--quiet"]) == 0
    reference = tifffile.imread(out / "phantom_reference.tif")
    rows = (out / "clicks.csv").read_text().splitlines()[1:]
    names = [row.split(",")[3] for row in rows]
    assert len(set(names)) >= 4 and all(names.count(name) == 5 for name in names)  # a small phantom may lack one
    for row in rows:
        z, y, x, name = row.split(",")
        assert report["classes"][reference[int(z), int(y), int(x)]] == name


def _touch(path):
    path.write_bytes(b"not a volume")
    return path


def _points_csv(folder):
    path = folder / "points.csv"
    path.write_text("z,y,x,name\n0,0,0,first\n1,1,1,second\n")
    return path


def _han_vae_2d(folder, raw):
    """A han-vae-2d checkpoint trained for two steps on ``raw``."""
    import orgaseg

    path = folder / "han-vae-2d.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        orgaseg.train("han-vae-2d", [raw], path, preset="tiny", steps=2, device="cpu", seed=0)
    return path


def _npy(path, array):
    np.save(path, array)
    return path


def test_one_message_names_python_arguments_in_python_and_options_on_the_command_line(tmp_path, capsys):
    import orgaseg

    path = tmp_path / "channels.npy"
    np.save(path, np.zeros((2, 3, 16, 16), np.uint8))
    with pytest.raises(orgaseg.OrgasegError) as error:
        orgaseg.open_volume(path, axes="zcyx")
    assert "pass channel=N to choose one, or axes='zyx'" in str(error.value)
    assert main(["info", str(path), "--axes", "zcyx"]) == 2
    err = capsys.readouterr().err
    assert "pass --channel N to choose one, or --axes ORDER" in err and "channel=N" not in err
    assert main(["info", str(path), "--axes", "zcyx", "--channel", "2", "--voxel-size", "20", "5", "5"]) == 0
    assert "2 x 16 x 16" in capsys.readouterr().out


def test_a_message_says_which_options_this_command_lacks_and_the_way_round(tmp_path, capsys):
    import warnings

    from orgaseg.errors import OrgasegWarning
    from orgaseg.io import open_volume

    path = tmp_path / "channels.tif"
    data = np.ones((4, 2, 16, 16), np.uint8)
    data[:, 1] = 0  # an empty channel: a crop of it stores its chunks of zeros too
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    assert main(["instances", str(path), "-o", str(tmp_path / "i.ome.zarr")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pass --channel N to choose one" in err[0]
    assert err[0].endswith("(--channel N, --axes ORDER: not options of orgaseg instances; orgaseg crop PATH --region "
                           ": : : with them -o VOLUME.ome.zarr makes a copy that it reads)")
    for command in (["info"], ["train", "--method", "maester", "-o", str(tmp_path / "m.pt")]):
        assert main([command[0], str(path), *command[1:]]) == 2
        assert "not an option" not in capsys.readouterr().err  # info and train have them
    # the way round works, and its output reads back without a word
    copy = tmp_path / "copy.ome.zarr"
    assert main(["crop", str(path), "--region", ":", ":", ":", "--channel", "1", "--voxel-size", "50", "5", "5",
                 "-o", str(copy), "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        assert open_volume(copy).shape == (4, 16, 16)


def test_every_option_has_help_text_and_stage_choices_come_from_the_tables(capsys, monkeypatch):
    from orgaseg.cli import build_parser
    from orgaseg.cluster import CLUSTERERS
    from orgaseg.features import FEATURES
    from orgaseg.methods import METHODS

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    missing = [(name, action.option_strings or action.dest) for name, sub in commands.items()
               for action in sub._actions if not action.help and action.dest != "help"]
    assert missing == []
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would break names like sdae-recon at the hyphen
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in (*METHODS, *FEATURES, *CLUSTERERS):
        assert name in text
    sample = text.rsplit("--sample-size SAMPLE_SIZE", 1)[1].split("--block-shape", 1)[0]  # the help, not the usage
    for name, spec in CLUSTERERS.items():  # each clusterer's default sample, read from its table entry
        assert name in sample and f"{spec.default_sample_size:,}" in sample


def test_a_block_shape_warning_is_said_once_per_run(phantom_files, tmp_path):
    raw, _ = phantom_files
    done = subprocess.run([sys.executable, "-m", "orgaseg.cli", "segment", str(raw), "-k", "2", "--block-shape", "2",
                           "16", "16", "--sample-size", "3000", "-o", str(tmp_path / "seg.ome.zarr"), "--quiet"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: blocks of 2 x 16 x 16") == 1, done.stderr


def test_methods_gives_each_graph_clusterer_its_own_preset_steps(capsys):
    # CS²C trains 5/6 of SCCS's steps: `orgaseg methods` said SCCS's counts for cs2c and cs2c-spa too
    from types import SimpleNamespace

    from orgaseg.cluster.graph_clusterers import _neural_config

    assert main(["methods"]) == 0
    listed = dict(zip(("sccs", "cs2c", "cs2c-spa"),
                      [line.split("preset: ", 1)[1] for line in capsys.readouterr().out.splitlines()
                       if "preset: training length" in line]))
    for kind, said in listed.items():
        steps = {p: _neural_config(SimpleNamespace(kind=kind, options={"preset": p})).steps
                 for p in ("paper", "cpu", "tiny")}
        assert said == (f"training length: paper ({steps['paper']} steps), cpu ({steps['cpu']}, default) "
                        f"or tiny ({steps['tiny']})"), (kind, said)
    assert "tiny (250)" in listed["cs2c"] and "tiny (300)" in listed["sccs"]


def test_benchmark_help_says_its_training_options_are_for_encoders(tmp_path, capsys, monkeypatch):
    # sccs and cs2c learn (orgaseg train takes them), but benchmark fits them on each volume: its --preset,
    # --steps, --minutes and --model are refused for them; the help said "for methods that learn"
    from orgaseg.cli import build_parser

    actions = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices["benchmark"]._actions}
    for dest in ("preset", "model", "steps", "minutes"):
        assert "encoder" in actions[dest], dest
    assert "--option preset=NAME" in actions["preset"] and "auto" in actions["device"]
    assert main(["benchmark", "--dataset", "phantom", "--method", "sccs", "--preset", "tiny", "-k", "2",
                 "-o", str(tmp_path / "b"), "--quiet"]) == 2
    assert "--option preset=NAME" in capsys.readouterr().err


def test_inspect_help_names_the_checkpoints_it_reads(tmp_path, capsys):
    # inspect draws a ViT's masked reconstructions: its help said any trained checkpoint (orgaseg train)
    from orgaseg.cli import build_parser
    from orgaseg.methods import METHODS

    sub = build_parser()._subparsers._group_actions[0]
    said = sub.choices["inspect"]._actions[[a.dest for a in sub.choices["inspect"]._actions].index("checkpoint")].help
    summary = next(a.help for a in sub._choices_actions if a.dest == "inspect")
    for name in ("maester", "his4mae", "sdae-recon"):
        assert name in said and name in summary
    assert "ViT" in said and METHODS["sccs"].trains  # sccs trains, and inspect refuses its checkpoint:
    (tmp_path / "c.json").write_text('{"format": "orgaseg-graph-clusterer"}')
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((2, 32, 32), np.uint8))
    assert main(["inspect", str(tmp_path / "c.json"), str(tmp_path / "v.tif"), "-o", str(tmp_path / "i"),
                 "--voxel-size", "10", "10", "10", "--quiet"]) == 2
    assert "maester, his4mae, sdae-recon" in capsys.readouterr().err


def test_axes_help_says_a_given_order_replaces_the_metadata(tmp_path, capsys):
    # the help said "when the metadata does not say"; an OME-Zarr's own axes are replaced (with a warning: test_io)
    from orgaseg.cli import build_parser
    from orgaseg.io import write_labels

    said = next(a.help for a in build_parser()._subparsers._group_actions[0].choices["info"]._actions
                if a.dest == "axes")
    assert "when the metadata does not say" not in said and "replaces the metadata" in said
    path = write_labels(tmp_path / "v.ome.zarr", np.zeros((2, 8, 16), np.uint8), voxel_size=(40, 5, 5), provenance={})
    assert main(["info", str(path), "--axes", "xyz", "--quiet"]) == 0
    assert "16 x 8 x 2 (axes zyx)" in capsys.readouterr().out


def test_benchmark_data_root_help_names_the_variable_that_sets_its_default(tmp_path, monkeypatch):
    # the help said "default ../shared/data", and $ORGASEG_DATA_ROOT comes first
    from orgaseg.cli import build_parser
    from orgaseg.datasets.base import DATA_ROOT_ENV, default_data_root

    said = next(a.help for a in build_parser()._subparsers._group_actions[0].choices["benchmark"]._actions
                if a.dest == "data_root")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert default_data_root() == tmp_path and f"${DATA_ROOT_ENV}" in said


def test_every_device_option_gives_its_default():
    # segment's said none, and inspect's default (cpu) is not the others' (auto)
    from orgaseg.cli import build_parser

    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest == "device":
                assert f"default {action.default or 'auto'}" in action.help or \
                    f"{action.default}: " in action.help, (name, action.help)


def test_every_block_shape_option_gives_its_default():
    # segment, instances and measure said "block shape in voxels", not what they use without one
    from orgaseg.cli import build_parser

    helps = {name: action.help for name, sub in build_parser()._subparsers._group_actions[0].choices.items()
             for action in sub._actions if action.dest == "block_shape"}
    assert sorted(helps) == ["instances", "measure", "segment"]
    assert "default: blocks of at most 512 MiB of features" in helps["segment"]
    for name in ("instances", "measure"):
        assert "default: blocks of about 4 Mi voxels, whole slices where they fit" in helps[name], helps[name]


def test_benchmark_last_line_names_the_figures_folder_and_what_its_time_is(tmp_path, capsys, monkeypatch):
    # it said "figures/" (not where they are) and a bare "(70.17 s)", the segmentation's time, not the run's
    import orgaseg.benchmark

    def run(dataset, method, output, **kwargs):
        (output / "results.md").write_text("# results\n")
        return {"segmentation": {"wall_s": 70.17}}

    monkeypatch.setattr(orgaseg.benchmark, "run_benchmark", run)
    out = tmp_path / "bench"
    out.mkdir()
    assert main(["benchmark", "--dataset", "phantom", "-o", str(out), "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'figures'}/ (segmentation 70.17 s for all K)"


def test_a_sample_too_small_for_k_names_the_option_that_enlarges_it(phantom_files, tmp_path, capsys):
    # it said "a larger sample size", naming no option
    raw, _ = phantom_files
    assert main(["segment", str(raw), "--sample-size", "10", "-o", str(tmp_path / "s.ome.zarr"), "--quiet"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("use a smaller K or a larger sample (--sample-size N)")
