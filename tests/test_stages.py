"""The three stages: a clusterer from outside the package, every offered combination, the working pixel size."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import orgaseg
from orgaseg.benchmark import run_benchmark
from orgaseg.cli import main
from orgaseg.cluster import CLUSTERERS
from orgaseg.datasets import load_dataset
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.features import FEATURES
from orgaseg.io import open_volume, read_provenance
from orgaseg.models.encoder import ENCODERS
from orgaseg.pipeline.resample import WorkingGrid
from orgaseg.pipeline.runner import plan_blocks
from orgaseg.pipeline.stages import resolve_stages, split_options

sys.path.insert(0, str(Path(__file__).parent))
from partial_outputs import block_markers  # noqa: E402
from stage_plugins import INTENSITY_BINS  # noqa: E402

TESTS = Path(__file__).parent
BLOCK = (2, 32, 32)


@pytest.fixture(scope="module")
def small():
    return load_dataset("phantom", shape=(4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=2)


# ------------------------------------------------------------------ a clusterer defined in a test module


def test_an_outside_clusterer_segments_reading_raw_and_fitting_on_whole_blocks(small):
    raw = small.evaluation[0].raw
    result = orgaseg.segment(raw, k=3, clusterer=INTENSITY_BINS, block_shape=BLOCK, sample_size=3000)
    normalized = result.provenance["normalization"]
    thresholds = result.model.thresholds
    assert result.model.k == 3 and len(thresholds) == 2 and thresholds[0] < thresholds[1]
    assert result.provenance["config"]["clusterer"] == "intensity-bins"
    # the labels are the intensity bins of each voxel, whatever block it was in
    values = (raw.read().astype(np.float32) - normalized["low"]) / (normalized["high"] - normalized["low"])
    expected = np.digitize(np.clip(values, 0, 1), thresholds)
    assert np.mean(result.labels == expected) > 0.999  # float32 rounding at a threshold may differ
    # whole blocks were sampled until they held the sample: 3000 voxels -> two 2 x 32 x 32 blocks
    assert result.provenance["config"]["sample_size"] == 3000


def test_an_outside_clusterer_is_reused_with_centers_and_routes_its_options(small, tmp_path):
    raw = small.evaluation[0].raw
    first = orgaseg.segment(raw, k=4, clusterer=INTENSITY_BINS, output=tmp_path / "a.ome.zarr",
                            options={"stride": 2}, block_shape=BLOCK)
    assert first.provenance["config"]["clusterer_options"] == {"stride": 2}
    other = load_dataset("phantom", shape=(4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=5).evaluation[0].raw
    again = orgaseg.segment(other, centers=tmp_path / "a.ome.zarr.provenance.json", clusterer=INTENSITY_BINS)
    assert again.model.thresholds.tolist() == first.model.thresholds.tolist()
    assert again.provenance["clusterer"] == first.provenance["clusterer"]
    with pytest.raises(OrgasegError, match="unknown clusterer 'intensity-bins'"):  # not registered: say so
        orgaseg.segment(other, centers=tmp_path / "a.ome.zarr.provenance.json")


def test_an_outside_clusterer_runs_the_benchmark(small, tmp_path):
    record = run_benchmark(small, "baseline", tmp_path, ks=[3], clusterer=INTENSITY_BINS, sample_size=3000)
    assert record["stages"]["clusterer"] == "intensity-bins"
    assert 0.2 < record["results"]["3"]["merge"]["mean_dice"] < 1.0


def test_an_outside_clusterer_resumes_after_sigkill_to_identical_labels(small, tmp_path):
    raw_path = tmp_path / "raw.npy"
    np.save(raw_path, small.evaluation[0].raw.read())
    whole = orgaseg.segment(raw_path, voxel_size=(20, 20, 20), k=3, clusterer=INTENSITY_BINS, block_shape=(1, 16, 16), sample_size=3000,
                            options={"scales_nm": [20.0, 40.0]}).labels
    out = tmp_path / "seg.ome.zarr"
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import orgaseg; from stage_plugins import INTENSITY_BINS; "
              f"orgaseg.segment({str(raw_path)!r}, voxel_size=(20, 20, 20), k=3, clusterer=INTENSITY_BINS, block_shape=(1, 16, 16), "
              f"sample_size=3000, options={{'scales_nm': [20.0, 40.0]}}, output={str(out)!r})")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(orgaseg.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(block_markers(out)) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(block_markers(out))
    assert not out.exists() and 8 <= finished < 64, f"killed too late or too early: {finished} blocks marked"
    result = orgaseg.segment(raw_path, voxel_size=(20, 20, 20), k=3, clusterer=INTENSITY_BINS,
                             block_shape=(1, 16, 16), sample_size=3000, options={"scales_nm": [20.0, 40.0]}, output=out)
    assert read_provenance(out)["blocks"]["skipped"] == finished
    np.testing.assert_array_equal(open_volume(out).read(), whole)
    assert read_provenance(out)["clusterer"]["thresholds"] == result.model.to_dict()["thresholds"]


# ------------------------------------------------------------------ every combination the command line offers


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A barely trained checkpoint of each encoder (the combinations only need to run)."""
    data = load_dataset("phantom", shape=(4, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=1)
    folder = tmp_path_factory.mktemp("encoders")
    paths = {}
    for method, encoder in (("maester", "mae"), ("his4mae", "distilled-mae"), ("han-vae", "patch-vae-3d"),
                            ("han-vae-2d", "patch-vae-2d")):
        paths[encoder] = (method, folder / f"{method}.pt")
        orgaseg.train(method, data.train, paths[encoder][1], preset="tiny", steps=3, device="cpu")
    return paths


def _combinations():
    for features, spec in FEATURES.items():
        encoders = [None] if spec.needs is None else [e for e, s in ENCODERS.items() if s.kind == spec.needs]
        for encoder in encoders:
            for clusterer in CLUSTERERS:
                yield encoder, features, clusterer


def test_the_combinations_cover_every_table_entry():
    combos = list(_combinations())
    assert {c[0] for c in combos} == {None, *ENCODERS}
    assert {c[1] for c in combos} == set(FEATURES) and {c[2] for c in combos} == set(CLUSTERERS)


@pytest.mark.parametrize("encoder, features, clusterer", list(_combinations()))
def test_every_offered_combination_segments_a_phantom(encoder, features, clusterer, checkpoints, tmp_path):
    volume = load_dataset("phantom", shape=(2, 80, 80), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw
    path = tmp_path / "raw.npy"
    np.save(path, volume.read())
    method, model = checkpoints[encoder] if encoder else ("baseline", None)
    args = ["segment", str(path), "--method", method, "--features", features, "--clusterer", clusterer, "-k", "3",
            "--voxel-size", "20", "20", "20", "--sample-size", "4000", "-o", str(tmp_path / "out.tif"), "--quiet"]
    if model is not None:
        args += ["--model", str(model), "--device", "cpu"]
    if clusterer == "minibatch-kmeans":
        args += ["--option", "init_size=1000", "--option", "clusterer.batch_size=512"]
    if "preset" in CLUSTERERS[clusterer].options:  # the graph clusterers that train
        args += ["--option", "preset=tiny"]
    assert main(args) == 0
    labels = open_volume(tmp_path / "out.tif").read()
    provenance = read_provenance(tmp_path / "out.tif")
    # a superpixel graph of two 80 px slices may leave one of three clusters empty
    found = len(np.unique(labels))
    assert labels.shape == volume.shape and (found == 3 or (CLUSTERERS[clusterer].working_grid and found == 2))
    assert (provenance["config"]["features"], provenance["config"]["clusterer"]) == (features, clusterer)
    assert (provenance["config"]["encoder"] or {}).get("encoder") == encoder


def test_features_that_need_an_encoder_say_so(small):
    with pytest.raises(OrgasegError, match="expand-stride features need a trained encoder: pass model=CHECKPOINT"):
        orgaseg.segment(small.evaluation[0].raw, features="expand-stride")


@pytest.mark.parametrize("method", ["baseline", "sccs"])
def test_a_checkpoint_that_the_features_would_not_read_is_refused(method, tmp_path):
    checkpoint = tmp_path / "encoder.pt"
    checkpoint.write_bytes(b"not read")
    with pytest.raises(OrgasegError, match="encoder.pt: filter-bank features read no encoder, so the checkpoint "
                                           "would be ignored; pass features=NAME"):
        resolve_stages(method, model=checkpoint)


def test_an_encoder_checkpoint_without_its_method_names_the_method(checkpoints):
    method, model = checkpoints["mae"]
    # said as the argument is given: method='maester' from Python (it said --method to Python too)
    with pytest.raises(OrgasegError, match=rf"is a checkpoint of {method}, and method 'baseline' with filter-bank "
                                           rf"features reads no encoder: pass method='{method}'") as refused:
        resolve_stages("baseline", model=model)
    assert f"reads no encoder: pass --method {method}" in refused.value.for_command_line()
    # a clusterer over learned features is one option away
    with pytest.raises(OrgasegError, match="or keep method 'sccs' and pass features=NAME with features that read "
                                           "its encoder \\(cover-stride, stride-only, expand-stride\\)"):
        resolve_stages("sccs", model=model)


def test_a_pixel_size_other_than_the_checkpoints_is_an_orgaseg_warning(checkpoints):
    method, model = checkpoints["mae"]
    with pytest.warns(OrgasegWarning, match="was trained at .* shows it other structures than it learned"):
        resolve_stages(method, model=model, pixel_size=7.0, device="cpu")


def test_a_checkpoint_of_the_ablation_is_refused_under_the_method_it_ablates(checkpoints, tmp_path):
    # his4mae and sdae-recon train the same encoder: only the checkpoint's record tells them apart
    data = load_dataset("phantom", shape=(4, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=1)
    ablation = tmp_path / "sdae.pt"
    orgaseg.train("sdae-recon", data.train, ablation, preset="tiny", steps=2, device="cpu")
    with pytest.raises(OrgasegError, match="is a checkpoint of sdae-recon, not his4mae: pass method='sdae-recon'"):
        resolve_stages("his4mae", model=ablation, device="cpu")
    with pytest.raises(OrgasegError,
                       match="is a checkpoint of his4mae, not sdae-recon: pass method='his4mae'") as refused:
        resolve_stages("sdae-recon", model=checkpoints["distilled-mae"][1], device="cpu")
    assert "not sdae-recon: pass --method his4mae" in refused.value.for_command_line()
    assert resolve_stages("sdae-recon", model=ablation, device="cpu").method.name == "sdae-recon"


@pytest.mark.parametrize("features, methods", [("cover-stride", "maester / his4mae / sdae-recon"),
                                               ("voxel-latents", "han-vae"), ("voxel-latents-2d", "han-vae-2d")])
def test_the_missing_encoder_message_names_only_the_methods_whose_encoder_fits(features, methods):
    with pytest.raises(OrgasegError) as raised:
        resolve_stages("baseline", features=features)
    assert f"a checkpoint of {methods} ('orgaseg train'); method 'baseline' has none" in str(raised.value)


def test_the_missing_encoder_message_says_when_the_method_trains_an_encoder_the_features_cannot_read():
    with pytest.raises(OrgasegError, match="method 'han-vae' trains a voxels-3d encoder, which cover-stride cannot read"):
        resolve_stages("han-vae", features="cover-stride")


def test_options_go_to_the_stage_that_declares_them():
    stages = resolve_stages("baseline", clusterer="minibatch-kmeans")
    assert split_options({"scales_nm": [10], "init_size": 9}, stages.features, stages.clusterer) == \
        ({"scales_nm": [10]}, {"init_size": 9})
    with pytest.raises(OrgasegError, match="unknown option 'strid'"):
        split_options({"strid": 2}, stages.features, stages.clusterer)
    expand = FEATURES["expand-stride"]
    with pytest.raises(OrgasegError, match="write features.batch_size or clusterer.batch_size"):
        split_options({"batch_size": 2}, expand, stages.clusterer)
    assert split_options({"features.batch_size": 2}, expand, stages.clusterer) == ({"batch_size": 2}, {})


def test_orgaseg_methods_prints_the_tables(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in (*orgaseg.methods.METHODS, *FEATURES, *CLUSTERERS, *ENCODERS):
        assert name in out


# ------------------------------------------------------------------ working pixel size


def test_a_4_nm_phantom_segmented_at_16_nm_scores_like_one_drawn_at_16_nm():
    # the same physical cell (1 um across) drawn on two grids
    fine = load_dataset("phantom", shape=(24, 256, 256), voxel_size=(4.0, 4.0, 4.0), seed=1)
    coarse = load_dataset("phantom", shape=(6, 64, 64), voxel_size=(16.0, 16.0, 16.0), seed=1)
    scores = []
    for data, pixel_size in ((fine, 16), (coarse, None)):
        item = data.evaluation[0]
        result = orgaseg.segment(item.raw, k=6, pixel_size=pixel_size, sample_size=20_000)
        assert result.labels.shape == item.raw.shape  # labels on the input's own grid
        report = orgaseg.evaluate(result.labels, item.reference, classes=data.classes, background=data.background)
        scores.append(report.to_dict()["merge"]["mean_dice"])
    assert abs(scores[0] - scores[1]) < 0.05, scores
    assert scores[1] > 0.4


def test_resampled_blocks_equal_the_resampled_whole_exactly(small):
    raw = small.evaluation[0].raw
    whole = orgaseg.segment(raw, k=4, pixel_size=50, sample_size=5000)
    parts = orgaseg.segment(raw, k=4, pixel_size=50, sample_size=5000, block_shape=(1, 23, 17))
    np.testing.assert_array_equal(whole.labels, parts.labels)
    grid = whole.provenance["config"]["working_grid"]
    assert grid["working_voxel_size"] == [50.0, 50.0, 50.0] and grid["working_shape"] == [2, 26, 26]


def test_anisotropic_stacks_are_resampled_in_plane_only():
    grid = WorkingGrid.for_pixel_size((20, 1024, 1024), (50.0, 4.6, 4.6), 18.4)
    assert grid.working_voxel_size == (50.0, 18.4, 18.4) and grid.shape == (20, 256, 256)
    iso = WorkingGrid.for_pixel_size((64, 256, 256), (4.0, 4.0, 4.0), 16)
    assert iso.shape == (16, 64, 64)
    with pytest.raises(OrgasegError, match="positive number of nm"):
        WorkingGrid.for_pixel_size((1, 2, 2), (1, 1, 1), 0)


@pytest.mark.parametrize("factor", [1.25, 1.5, 2.0, 2.5, 4.0])
def test_labels_on_the_working_grid_come_back_to_the_voxels_nearest_them_without_a_shift(factor):
    # a voxel centre on the edge between two working cells (one in five at 2.5, 1.25) is as near to either; all
    # taken upwards, the painted-back labels of the graph clusterers lay a quarter of a voxel towards the origin
    grid = WorkingGrid.for_pixel_size((1, 8, 300), (50.0, 4.0, 4.0), 4.0 * factor)
    (_, _, span), (_, _, index) = grid.nearest((slice(0, 1), slice(0, 8), slice(0, 300)))
    voxels = np.arange(300)
    offset = (span.start + index + 0.5) * factor - 0.5 - voxels  # the working pixel's centre from the voxel's
    assert np.abs(offset).max() <= factor / 2 + 1e-9  # the nearest
    assert abs(offset.mean()) < 1e-3
    (_, _, part), (_, _, within) = grid.nearest((slice(0, 1), slice(0, 8), slice(37, 211)))
    np.testing.assert_array_equal(part.start + within, (span.start + index)[37:211])  # a block's are the whole's


def test_a_resampled_volume_lies_where_its_first_pixel_does():
    from orgaseg.io import Volume
    from orgaseg.pipeline.resample import resampled_volume

    volume = Volume(np.zeros((20, 64, 64), np.float32), voxel_size=(50.0, 4.6, 4.6), origin=(100.0, 10.0, 0.0))
    working = resampled_volume(volume, 18.4)
    # working pixel 0 covers input voxels 0-3: its centre is input voxel 1.5's, 6.9 nm past voxel 0's
    assert working.voxel_size == (50.0, 18.4, 18.4)
    assert working.origin == pytest.approx((100.0, 16.9, 6.9))


def test_a_checkpoint_records_its_pixel_size_and_warns_when_used_at_another(checkpoints, tmp_path, small):
    data = load_dataset("phantom", shape=(4, 96, 96), voxel_size=(10.0, 10.0, 10.0), seed=1)
    path = tmp_path / "at20.pt"
    record = orgaseg.train("maester", data.train, path, preset="tiny", steps=2, device="cpu", pixel_size=20)
    assert record["pixel_size_nm"] == 20.0
    assert record["training_volumes"][0]["voxel_size"] == [20.0, 20.0, 20.0]
    raw = data.evaluation[0].raw
    result = orgaseg.segment(raw, method="maester", model=path, k=3, features="expand-stride", device="cpu",
                             sample_size=3000)
    assert result.provenance["config"]["pixel_size_nm"] == 20.0  # the checkpoint's, by default
    with pytest.warns(UserWarning, match="trained at 20 nm; segmenting at native"):
        orgaseg.segment(raw, method="maester", model=path, k=3, features="expand-stride", device="cpu",
                        sample_size=3000, pixel_size="native")


def test_centers_fitted_on_another_encoders_tokens_are_refused(checkpoints, small, tmp_path):
    # MAESTER's and HiS4MAE's tiny tokens have the same width: only the provenance tells them apart
    raw = small.evaluation[0].raw
    his4mae, maester = checkpoints["distilled-mae"][1], checkpoints["mae"][1]
    fitted = orgaseg.segment(raw, method="his4mae", model=his4mae, k=3, device="cpu", sample_size=3000,
                             output=tmp_path / "h.ome.zarr")
    centers = tmp_path / "h.ome.zarr.provenance.json"
    with pytest.raises(OrgasegError, match=r"other features than this run computes: the encoder \(the checkpoint "
                                           rf".*{his4mae.name}; this run: the checkpoint "
                                           rf"{re.escape(str(maester))}, another file \(SHA-256 [0-9a-f]{{12}}\.\.\.\)\)"):
        orgaseg.segment(raw, method="maester", model=maester, features="expand-stride", centers=centers, device="cpu")
    again = orgaseg.segment(raw, method="his4mae", model=his4mae, centers=centers, device="cpu")
    np.testing.assert_array_equal(again.labels, open_volume(fitted.path).read())


def test_centers_bring_the_method_checkpoint_options_and_pixel_size_of_their_run(checkpoints, small, tmp_path,
                                                                                   caplog):
    raw = small.evaluation[0].raw
    his4mae = checkpoints["distilled-mae"][1]
    with pytest.warns(UserWarning, match="segmenting at 40 nm"):
        fitted = orgaseg.segment(raw, method="his4mae", model=his4mae, k=3, device="cpu", sample_size=3000,
                                 options={"stride": 6}, pixel_size=40, output=tmp_path / "h.ome.zarr")
    centers = tmp_path / "h.ome.zarr.provenance.json"
    with caplog.at_level(logging.INFO, logger="orgaseg.segmentation"), pytest.warns(UserWarning, match="at 40"):
        again = orgaseg.segment(raw, centers=centers, device="cpu")
    np.testing.assert_array_equal(again.labels, open_volume(fitted.path).read())
    assert again.provenance["config"] == {**fitted.provenance["config"], "sample_size": again.provenance["config"][
        "sample_size"]}
    assert again.provenance["stages_from_centers"] == {"method": "his4mae", "model": str(his4mae),
                                                       "feature_options": {"stride": 6}, "pixel_size": 40.0}
    assert f"as in {centers}: method his4mae, checkpoint {his4mae}, feature options stride=6, pixel size 40 nm" \
        in caplog.text
    # what is given wins, and must still give the run's features
    with pytest.raises(OrgasegError, match="the dense features"):
        orgaseg.segment(raw, centers=centers, device="cpu", options={"stride": 8})
    # a plain run's provenance brings nothing: nothing is said or recorded
    plain = orgaseg.segment(raw, k=3, sample_size=3000, output=tmp_path / "p.ome.zarr")
    reused = orgaseg.segment(raw, centers=tmp_path / "p.ome.zarr.provenance.json")
    assert reused.provenance["stages_from_centers"] is None
    np.testing.assert_array_equal(reused.labels, open_volume(plain.path).read())
    # the checkpoint moved: the message says which one to pass
    moved = tmp_path / "moved.pt"
    moved.write_bytes(his4mae.read_bytes())
    record = json.loads(centers.read_text())
    record["model"]["path"] = str(tmp_path / "gone.pt")
    centers.write_text(json.dumps(record))
    with pytest.raises(OrgasegError, match=r"gone\.pt, which is not there: pass model="):
        orgaseg.segment(raw, centers=centers, device="cpu")
    with pytest.warns(UserWarning, match="at 40"):
        given = orgaseg.segment(raw, centers=centers, model=moved, device="cpu")
    np.testing.assert_array_equal(given.labels, again.labels)


@pytest.mark.parametrize("method", ["maester", "han-vae-2d"])
def test_training_at_a_pixel_size_normalises_as_segmenting_does(method, tmp_path):
    # segment maps a volume's working-grid intensities to 0..1 with the percentiles of the input volume
    # (orgaseg.segment: compute_normalization(volume)); training must map them with the same ones, else the
    # encoder's input standardisation, measured on training fields of view, does not fit what it reads
    from orgaseg.io import compute_normalization

    data = load_dataset("phantom", shape=(4, 96, 96), voxel_size=(10.0, 10.0, 10.0), seed=1)
    volume = data.train[0]
    record = orgaseg.train(method, [volume], tmp_path / "at30.pt", preset="tiny", steps=2, device="cpu",
                           pixel_size=30)
    assert record["pixel_size_nm"] == 30.0
    assert record["normalizations"][0] == compute_normalization(volume, seed=0).to_dict()


def test_the_cli_takes_a_pixel_size(small, tmp_path, capsys):
    path = tmp_path / "raw.npy"
    np.save(path, small.evaluation[0].raw.read())
    assert main(["segment", str(path), "-k", "3", "--voxel-size", "20", "20", "20", "--pixel-size", "40",
                 "-o", str(tmp_path / "a.tif"), "--quiet"]) == 0
    assert read_provenance(tmp_path / "a.tif")["config"]["pixel_size_nm"] == 40.0
    assert main(["segment", str(path), "--voxel-size", "20", "20", "20", "--pixel-size", "-3", "-o", str(tmp_path / "b.tif"), "--quiet"]) == 2
    assert "pixel size must be a positive number" in capsys.readouterr().err


def test_a_working_pixel_finer_than_the_input_is_warned_about():
    import warnings

    from orgaseg.errors import OrgasegWarning
    from orgaseg.io.volume import Volume

    volume = Volume(np.zeros((2, 40, 40), np.float32), voxel_size=(30.0, 4.6, 4.6))
    with pytest.warns(OrgasegWarning, match=r"2 nm, is 2.3x finer than the input's 4.6 nm.*5.3x the voxels"):
        assert resolve_stages("baseline", pixel_size=2.0).grid(volume) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        resolve_stages("baseline", pixel_size=4.0).grid(volume)  # a little finer: not worth a word
        resolve_stages("baseline", pixel_size=10.0).grid(volume)


def test_a_default_pixel_size_far_coarser_than_the_input_is_warned_about():
    import warnings

    from orgaseg.errors import OrgasegWarning
    from orgaseg.io.volume import Volume

    # a header voxel size ten times too small (0.59 nm for 5.9): the baseline's 10 nm keeps 23 x 30 of 384 x 512
    volume = Volume(np.zeros((2, 384, 512), np.uint8), voxel_size=(4.0, 0.59, 0.59))
    with pytest.warns(OrgasegWarning, match=r"default pixel size, 10 nm, is 17x coarser than the input's 0.59 nm: a "
                                            r"section of 384 x 512 voxels is computed on 23 x 30 working pixels\. Is "
                                            r"the voxel size right \(4 x 0.59 x 0.59 nm\)\?"):
        resolve_stages("baseline").grid(volume)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        resolve_stages("baseline", pixel_size=10.0).grid(volume)  # a pixel size asked for is used as asked
        resolve_stages("baseline").grid(Volume(np.zeros((2, 64, 64), np.uint8), voxel_size=(30.0, 4.6, 4.6)))


def test_long_runs_are_priced_up_front_with_a_faster_strategy(checkpoints, caplog, monkeypatch):
    from orgaseg.io import compute_normalization
    from orgaseg.pipeline import cost
    from orgaseg.pipeline.tasks import VolumeSource

    method, model = checkpoints["mae"]
    volume = load_dataset("phantom", shape=(2, 80, 80), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw
    stages = resolve_stages(method, model=model, features="cover-stride", device="cpu")
    job = stages.job(VolumeSource(volume), compute_normalization(volume))
    # cover-and-stride at m = 4: 25 offsets x 4 x 4 tiles of 20 px per 80 x 80 slice, two slices
    whole = [tuple(slice(0, n) for n in volume.shape)]
    assert cost.forward_passes(job.extractor, whole) == 2 * 25 * 16
    blocks = plan_blocks(job)
    assert len(blocks) == 1
    with caplog.at_level("INFO", logger="orgaseg.pipeline.cost"):
        estimate = cost.estimate_cost(stages, job, blocks)
    assert estimate["forward_passes"] == 2 * 2 * 25 * 16 and estimate["seconds_per_pass"] > 0  # two passes
    assert "about 1,600 encoder forward passes" in caplog.text
    # features kept between the passes are not computed again: all of them, or half
    feature_bytes = 4 * job.extractor.n_features * volume.size
    assert cost.estimate_cost(stages, job, blocks, reuse_bytes=feature_bytes)["forward_passes"] == 2 * 25 * 16
    assert cost.estimate_cost(stages, job, blocks, reuse_bytes=feature_bytes // 2)["forward_passes"] == 3 * 25 * 16
    # four blocks of 40 x 40: each encodes the tiles of its own pixels (2 tiles a side), not its window's
    quarters = plan_blocks(job, (1, 40, 40))
    assert [job.computed_region(b) for b in quarters] == [b.region for b in quarters]
    assert cost.estimate_cost(stages, job, quarters)["forward_passes"] == 2 * 2 * 25 * 16
    windows = [b.read_region for b in quarters]
    assert cost.forward_passes(job.extractor, windows) > cost.forward_passes(job.extractor, whole)
    monkeypatch.setattr(cost, "LONG_S", 0.0)  # as if the volume were large
    with pytest.warns(OrgasegWarning, match=r"expand-stride \(features='expand-stride'\) needs about") as said:
        estimate = cost.estimate_cost(stages, job, blocks)
    assert estimate["expand_stride_passes"] < estimate["forward_passes"]
    # the command line names the option as it is typed
    assert "expand-stride (--features expand-stride) needs about" in said[0].message.for_command_line()


@pytest.mark.parametrize("encoder", ["patch-vae-3d", "patch-vae-2d"])
def test_voxel_latents_are_priced_by_the_patches_they_encode(checkpoints, encoder, caplog):
    from orgaseg.io import compute_normalization
    from orgaseg.pipeline import cost
    from orgaseg.pipeline.tasks import VolumeSource

    method, model = checkpoints[encoder]
    volume = load_dataset("phantom", shape=(4, 48, 48), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw
    stages = resolve_stages(method, model=model, options={"stride": 4}, pixel_size="native", device="cpu")
    job = stages.job(VolumeSource(volume), compute_normalization(volume))
    counts = []
    job.extractor.encoder = lambda patches: counts.append(len(patches)) or torch.zeros(len(patches), job.extractor.latent)
    job.extractor(np.zeros(volume.shape, np.float32))
    whole = [tuple(slice(0, n) for n in volume.shape)]
    assert cost.forward_passes(job.extractor, whole) == sum(counts)  # the patches it encodes, counted
    # grid points at stride 4 from 0 to 48 (13 a side); along z every slice in 2D, every 4th (and the last) in 3D
    assert sum(counts) == (2 if encoder == "patch-vae-3d" else 4) * 13 * 13
    job = stages.job(VolumeSource(volume), compute_normalization(volume))
    with caplog.at_level("INFO", logger="orgaseg.pipeline.cost"):
        estimate = cost.estimate_cost(stages, job, plan_blocks(job))
    assert estimate["forward_passes"] == 2 * sum(counts) and estimate["seconds_per_pass"] > 0
    assert "voxel-latents" in caplog.text and "encoder forward passes" in caplog.text


@pytest.mark.parametrize("options, threads", [(None, 0), ({"keep": 16, "planes": "xy,xz,yz"}, 0), (None, 2)],
                         ids=["xy", "planes", "threads"])
def test_a_pass_of_one_block_moves_its_bar_with_the_encoder_batches(checkpoints, options, threads):
    from orgaseg.pipeline.executors import ThreadExecutor

    method, model = checkpoints["mae"]
    volume = load_dataset("phantom", shape=(8, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw
    calls = []
    result = orgaseg.segment(volume, method=method, model=model, k=3, options=options, sample_size=2000,
                             executor=ThreadExecutor(threads) if threads else None,
                             progress=lambda description, done, total, **figures: calls.append((description, done, total)))
    assert result.provenance["blocks"]["blocks"] == 1
    sampling = [done for description, done, total in calls if description == "sampling features"]
    inside = [done for done in sampling if 0 < done < 1]
    assert len(inside) >= 2 and inside == sorted(inside) and sampling[0] == 0 and sampling[-1] == 1
    assert not any("features" in description and description != "sampling features" for description, *_ in calls)


def test_blocks_on_threads_move_their_bar_forward_only(checkpoints):
    from orgaseg.pipeline.executors import ThreadExecutor

    method, model = checkpoints["mae"]
    volume = load_dataset("phantom", shape=(8, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw
    calls = []
    result = orgaseg.segment(volume, method=method, model=model, k=3, sample_size=2000, block_shape=(4, 64, 64),
                             executor=ThreadExecutor(2),
                             progress=lambda description, done, total, **figures: calls.append((description, done, total)))
    assert result.provenance["blocks"]["blocks"] == 2
    shown = [done for description, done, total in calls if description == "sampling features"]  # the pass that encodes
    assert shown == sorted(shown) and shown[-1] == 2 and any(not float(done).is_integer() for done in shown)


def test_the_command_line_says_what_a_learned_run_will_cost(checkpoints, tmp_path, capsys, monkeypatch):
    method, model = checkpoints["mae"]
    path = tmp_path / "cell.npy"
    np.save(path, load_dataset("phantom", shape=(2, 80, 80), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw.read())
    command = ["segment", str(path), "--voxel-size", "20", "20", "20", "--method", method, "--model", str(model),
               "-k", "3", "--keep", "16"]
    assert main(command + ["-o", str(tmp_path / "a.tif")]) == 0
    assert "encoder forward passes over 12,800 voxels" in capsys.readouterr().err
    assert main(command + ["-o", str(tmp_path / "b.tif"), "--quiet"]) == 0
    assert "forward passes" not in capsys.readouterr().err
    # on a working grid, the voxels counted are the grid's
    assert main(command + ["-o", str(tmp_path / "d.tif"), "--pixel-size", "40"]) == 0
    assert "forward passes over 1,600 working voxels of 40 x 40 x 40 nm" in capsys.readouterr().err
    from orgaseg.pipeline import cost

    monkeypatch.setattr(cost, "LONG_S", 0.0)  # as if the volume were large: a warning (printed as 'warning: ...',
    # as every warning is: tests/test_cli.py), with --quiet too
    with pytest.warns(OrgasegWarning, match="forward passes over .* also divides the work$") as caught:
        assert main(command + ["-o", str(tmp_path / "c.tif"), "--quiet"]) == 0
    # said in the caller's terms (walkthrough 17): the command line's option, a Python caller's argument
    warning = next(w.message for w in caught if "divides the work" in str(w.message))
    assert warning.for_command_line().endswith("; a coarser --pixel-size also divides the work")
    assert str(warning).endswith("; a coarser pixel_size= also divides the work")


def test_the_estimate_counts_only_the_passes_a_run_makes(checkpoints, tmp_path, caplog):
    # a fresh run samples then labels; reused centres, or a resumed run's own clusterer, only label (what is left)
    import logging

    method, model = checkpoints["mae"]
    raw = load_dataset("phantom", shape=(4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0].raw
    run = {"method": method, "model": model, "k": 3, "sample_size": 2000, "block_shape": (1, 64, 64),
           "feature_memory": 0, "device": "cpu"}
    fresh = orgaseg.segment(raw, output=tmp_path / "a.ome.zarr", **run).provenance
    per_pass = fresh["cost_estimate"]["forward_passes"] // 2
    reused = orgaseg.segment(raw, centers=tmp_path / "a.ome.zarr.provenance.json",
                             **{**run, "k": None}).provenance
    assert reused["cost_estimate"]["forward_passes"] == per_pass

    def stop_after_one(description, done, total, **figures):
        if description == "labelling blocks" and done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        orgaseg.segment(raw, output=tmp_path / "b.ome.zarr", progress=stop_after_one, **run)
    with caplog.at_level(logging.INFO, logger="orgaseg.pipeline.cost"):
        resumed = orgaseg.segment(raw, output=tmp_path / "b.ome.zarr", **run).provenance
    assert resumed["blocks"]["skipped"] == 1
    assert resumed["cost_estimate"]["forward_passes"] == per_pass * 3 // 4  # three of the four blocks, once
    assert "(labelling the 3 blocks not done, 1 done before)" in caplog.text
    assert "about under" not in caplog.text  # 'under 1 s' or 'about 3 s'


def test_interpolated_kmeans_scores_label_like_interpolated_features(small, tmp_path):
    raw = small.evaluation[0].raw
    scores = orgaseg.segment(raw, k=5, pixel_size=50, sample_size=5000)  # k scores interpolated per voxel
    features = orgaseg.segment(raw, k=5, pixel_size=50, sample_size=5000, output=tmp_path / "f.tif",
                               save_features=tmp_path / "f.zarr")  # every feature interpolated (and saved)
    assert scores.model.to_dict()["centers"] == features.model.to_dict()["centers"]
    # the same labels up to float rounding at near-ties between two centres
    assert np.mean(scores.labels == open_volume(tmp_path / "f.tif").read()) > 0.999


def test_a_method_default_pixel_size_only_coarsens(small):
    import dataclasses

    row = dataclasses.replace(orgaseg.methods.METHODS["baseline"], pixel_size_nm=30.0)
    fine = small.evaluation[0].raw  # 20 nm voxels
    coarse = dataclasses.replace(fine, voxel_size=(40.0, 40.0, 40.0))
    grid = lambda **kw: orgaseg.segment(k=3, method=row, sample_size=3000, **kw).provenance["config"]["working_grid"]
    assert grid(data=fine)["working_voxel_size"] == [30.0, 30.0, 30.0]
    assert grid(data=coarse) is None  # already coarser than the default: its own grid
    assert grid(data=coarse, pixel_size=30)["working_voxel_size"] == [30.0, 30.0, 30.0]  # asked for: as given
    assert grid(data=fine, pixel_size="native") is None
    # a z between the in-plane voxel and twice it, coarser than the default: kept, not refined to it
    deep = dataclasses.replace(fine, voxel_size=(36.0, 20.0, 20.0))
    assert grid(data=deep)["working_voxel_size"] == [36.0, 30.0, 30.0]
    assert grid(data=deep, pixel_size=30)["working_voxel_size"] == [30.0, 30.0, 30.0]
    # so is a y or x coarser than the default when the other is finer (pixels that are not square; axes
    # swapped): x at 500 nm was refined to 30 nm, 17x the voxels for nothing
    oblong = dataclasses.replace(fine, voxel_size=(20.0, 20.0, 500.0))
    assert grid(data=oblong)["working_voxel_size"] == [30.0, 30.0, 500.0]
    assert grid(data=dataclasses.replace(fine, voxel_size=(20.0, 40.0, 20.0)))["working_voxel_size"] == [30.0, 40.0, 30.0]
    assert grid(data=oblong, pixel_size=30)["working_voxel_size"] == [30.0, 30.0, 30.0]


def test_the_baseline_works_at_10_nm_by_default_but_never_on_a_guessed_voxel_size(tmp_path):
    raw = (np.random.default_rng(0).random((2, 64, 64)) * 255).astype(np.uint8)
    grid = lambda data, **kw: orgaseg.segment(data, k=3, sample_size=3000, **kw).provenance["config"]["working_grid"]
    assert grid(raw, voxel_size=(5, 5, 5))["working_voxel_size"] == [10.0, 10.0, 10.0]
    assert grid(raw) is None  # an array without a voxel size: assumed 1 nm, not resampled
    np.save(tmp_path / "raw.npy", raw)
    with pytest.warns(UserWarning, match="voxel size unknown"):
        assert grid(tmp_path / "raw.npy") is None
    assert grid(raw, voxel_size=(5, 5, 5), pixel_size="native") is None


def test_a_refine_says_what_it_will_cost(checkpoints, tmp_path, capsys):
    # a refine encodes the blocks holding its annotations, then every block (less what it kept in memory)
    from orgaseg.organelles import name_clusters, points_from_arrays

    method, model = checkpoints["mae"]
    raw = load_dataset("phantom", shape=(4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=4).evaluation[0]
    path = tmp_path / "cell.npy"
    np.save(path, raw.raw.read())
    labels = raw.reference.read()
    seg = tmp_path / "seg.ome.zarr"
    assert main(["segment", str(path), "--voxel-size", "20", "20", "20", "--method", method, "--model", str(model),
                 "-k", "3", "--block-shape", "1", "64", "64", "--quiet", "-o", str(seg)]) == 0
    coords = np.concatenate([np.argwhere(labels[:1] == value)[:5] for value in (0, 1)])  # all on the first slice
    points = points_from_arrays(coords, ["a"] * 5 + ["b"] * 5, shape=labels.shape)

    def passes(**options):
        return name_clusters(seg, annotations=points, refine=True, prior="clicks", **options).provenance["cost_estimate"]

    labelling = passes()["forward_passes"]  # the first slice's features are kept for the labelling pass
    twice = passes(feature_memory=0)["forward_passes"]
    assert 0 < twice - labelling < labelling / 2  # one block of four encoded again, with the context's margin
    assert name_clusters(seg, annotations=points, refine=False).provenance["cost_estimate"] is None
    frame = tmp_path / "points.csv"
    frame.write_text("z,y,x,name\n" + "".join(f"{z},{y},{x},{n}\n" for (z, y, x), n in
                                              zip(coords, ["a"] * 5 + ["b"] * 5)))
    assert main(["name", str(seg), "--points", str(frame), "--refine", "--prior", "clicks",
                 "-o", str(tmp_path / "named.ome.zarr")]) == 0
    assert (f"about {labelling:,} encoder forward passes over 16,384 voxels (training on 1 block, then labelling, "
            "which reuses the features kept in memory)") in capsys.readouterr().err
    # a checkpoint given for the refine must be the segmentation's own (another reads other features)
    other = checkpoints["distilled-mae"][1]
    with pytest.raises(OrgasegError, match=rf"{other.name} is not the checkpoint the segmentation was made with"):
        name_clusters(seg, annotations=points, refine=True, model=other)
    copy = tmp_path / "moved.pt"
    copy.write_bytes(model.read_bytes())
    moved = name_clusters(seg, annotations=points, refine=True, prior="clicks", model=copy)
    assert moved.provenance["model"] == {"path": str(copy.resolve()), "sha256": read_provenance(seg)["model"]["sha256"]}
    np.testing.assert_array_equal(moved.labels, name_clusters(seg, annotations=points, refine=True,
                                                              prior="clicks").labels)


def test_a_segmentation_returned_in_memory_is_reused_as_centers_with_its_stages(small):
    raw = small.evaluation[0].raw
    first = orgaseg.segment(raw, k=3, options={"scales_nm": [20, 40]}, block_shape=BLOCK, sample_size=3000)
    other = load_dataset("phantom", shape=(4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=5).evaluation[0].raw
    # the Segmentation itself, as its provenance file would be: its clusterer and its feature options
    again = orgaseg.segment(other, centers=first, block_shape=BLOCK)
    assert again.provenance["clusterer"] == first.provenance["clusterer"]
    assert again.provenance["config"]["feature_options"] == first.provenance["config"]["feature_options"]
    assert again.provenance["stages_from_centers"] == {"feature_options": {"scales_nm": [20, 40]}}
    by_model = orgaseg.segment(other, centers=first.model, options={"scales_nm": [20, 40]}, block_shape=BLOCK)
    assert np.array_equal(again.labels, by_model.labels)
    with pytest.raises(OrgasegError, match="the Segmentation given as centers: its clusterer was fitted on other "
                                           "features"):
        orgaseg.segment(other, centers=first, options={"scales_nm": [10, 40]})
    with pytest.raises(OrgasegError, match=r"centers: got a ndarray; give an earlier segmentation's provenance"):
        orgaseg.segment(other, centers=np.zeros((3, 30)))


def test_a_clusterer_reused_on_an_array_without_voxel_size_says_so_when_the_features_differ(small):
    raw = np.asarray(small.evaluation[0].raw.read())
    fitted = orgaseg.segment(raw, voxel_size=(50, 4.6, 4.6), k=3, block_shape=BLOCK, sample_size=3000).model
    # the feature count alone was said, with no word of the 1 nm the array was taken at
    with pytest.warns(OrgasegWarning, match="voxel size unknown"), \
            pytest.raises(OrgasegError, match=r"expects \d+ features but these dense features give \d+: .*; this "
                                              r"volume's voxel size is unknown \(taken as 1 nm, which changes the "
                                              r"features\): pass voxel_size=\(z, y, x\)"):
        orgaseg.segment(raw, centers=fitted, block_shape=BLOCK)
