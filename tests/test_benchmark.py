"""The benchmark protocol on a small phantom: every K, both modes, figures, the record."""

import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest

from orgaseg.benchmark import parse_k_range, results_markdown, run_benchmark
from orgaseg.cli import main
from orgaseg.datasets import load_dataset
from orgaseg.errors import OrgasegError
from test_viz import panel_columns


@pytest.fixture(scope="module")
def phantom():
    return load_dataset("phantom", shape=(10, 96, 96), voxel_size=(20.0, 20.0, 20.0))


def test_baseline_benchmark_writes_every_k_in_both_modes(phantom, tmp_path):
    record = run_benchmark(phantom, "baseline", tmp_path, ks=[4, 6], sample_size=20_000)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["ks"] == [4, 6] and saved["dataset"] == "phantom"
    for k in ("4", "6"):
        for mode in ("merge", "strict"):
            scores = saved["results"][k][mode]
            assert set(scores["per_class"]) == set(phantom.classes)
            per_class = [scores["per_class"][c]["dice"] for c in phantom.classes]
            assert scores["mean_dice"] == pytest.approx(np.mean(per_class))
        # merge never scores below strict: it only adds clusters to classes
        assert saved["results"][k]["merge"]["accuracy"] >= saved["results"][k]["strict"]["accuracy"]
    assert saved["segmentation"]["voxels"] == 10 * 96 * 96 and saved["segmentation"]["voxels_per_s"] > 0
    assert saved["results"]["6"]["merge"]["mean_dice"] > 0.4  # the baseline finds the phantom's classes
    assert saved["machine"]["cores"] >= 1 and saved["peak_memory_mb"] > 0
    environment = saved["environment"]
    assert len(environment["git"]["commit"]) == 40 and isinstance(environment["git"]["dirty"], bool)
    assert environment["versions"]["numpy"] == np.__version__ and environment["versions"]["orgaseg"]
    assert saved["stages"] == {"method": "baseline", "encoder": None, "features": "filter-bank",
                               "feature_options": {}, "clusterer": "kmeans", "clusterer_options": {},
                               "pixel_size_nm": 10.0}
    assert saved["working_grids"] == [None]  # the default 10 nm leaves a 20 nm phantom on its own grid
    assert saved["training"]["steps"] == 0 and saved["segmentation"]["cost_estimate"] is None
    markdown = (tmp_path / "results.md").read_text()
    assert "merge mode" in markdown and "strict mode" in markdown
    # the protocol's empty clusters and classes, per K: at K = 6 some clusters lie only outside the cell
    for k, result in saved["results"].items():
        rows = np.asarray(result["confusion"]).sum(axis=1)
        assert result["empty_clusters"] == np.flatnonzero(rows == 0).tolist() and result["empty_classes"] == []
    empty = saved["results"]["6"]["empty_clusters"]
    assert empty and not saved["results"]["4"]["empty_clusters"]
    assert markdown.count("Note: at K =") == 1
    assert (f"Note: at K = 6, empty clusters {', '.join(map(str, empty))} (on no scored voxel, mapped to no class): "
            f"in effect K = {6 - len(empty)} here.") in markdown
    # results written before the field was: no note, no error
    for result in saved["results"].values():
        del result["empty_clusters"], result["empty_classes"]
    assert "Note: at K" not in results_markdown(saved)
    saved["results"]["4"]["empty_classes"] = ["nucleus"]  # a crop without nuclei
    assert "Note: no reference voxel of nucleus: not scored." in results_markdown(saved)
    assert len(panel_columns(mpimg.imread(tmp_path / "figures" / "overlay_k6.png"))) == 5
    confusion = mpimg.imread(tmp_path / "figures" / "confusion_k4.png")[..., :3]
    assert len(np.unique(confusion.reshape(-1, 3).round(2), axis=0)) > 20
    assert record["results"]["6"]["merge"]["mean_dice"] == saved["results"]["6"]["merge"]["mean_dice"]


def test_learned_method_is_trained_then_scored(phantom, tmp_path):
    record = run_benchmark(phantom, "maester", tmp_path, ks=[4], sample_size=5_000, preset="tiny", steps=5,
                           options={"keep": 16}, device="cpu")
    assert record["training"]["steps"] == 5 and record["training"]["preset"] == "tiny"
    assert (tmp_path / "model.pt").exists()
    assert record["features"]["keep"] == 16 and record["stages"]["feature_options"] == {"keep": 16}
    again = run_benchmark(phantom, "maester", tmp_path / "again", ks=[4], sample_size=5_000,
                          model=tmp_path / "model.pt", options={"keep": 16}, device="cpu")
    assert again["training"]["sha256"] == record["training"]["sha256"]
    assert again["results"]["4"] == record["results"]["4"]
    # priced up front as segment prices it, one estimate per evaluation volume (the baseline has none)
    estimates = again["segmentation"]["cost_estimate"]
    assert len(estimates) == len(phantom.evaluation) and all(e["forward_passes"] > 0 for e in estimates)


@pytest.mark.parametrize("method, options, reason, command_line", [
    ("baseline", {"preset": "tiny"}, r"preset= trains an encoder, and method 'baseline' with these features has none",
     r"--preset trains an encoder"),
    ("sccs", {"steps": 3, "minutes": 0.1}, r"steps=, minutes= train an encoder.*options=\{'preset': NAME\}",
     r"--steps, --minutes train an encoder.*--option preset=NAME"),
    ("sccs", {"model": "trained.json"}, (r"fits 'sccs' on each evaluation volume.*\(model=\) is scored with "
                                         r"orgaseg\.segment\(volume, method='sccs', model=\.\.\.\) and orgaseg\.evaluate"),
     r"\(--model\) is scored with orgaseg segment --model and orgaseg evaluate"),
    ("maester", {"model": "model.pt", "steps": 5}, r"steps= trains a new encoder, and model= gives a trained one",
     r"--steps trains a new encoder, and --model gives a trained one"),
])
def test_training_options_that_would_be_ignored_are_refused(phantom, tmp_path, method, options, reason, command_line):
    # a Python caller reads the arguments as it passes them, the command line its options (walkthrough 17)
    with pytest.raises(OrgasegError, match=reason) as refused:
        run_benchmark(phantom, method, tmp_path, ks=[4], sample_size=5_000, device="cpu", **options)
    assert re.search(command_line, refused.value.for_command_line())
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("arguments, message", [
    ({"seed": -1}, "seed=N must be a whole number >= 0, got -1"),  # was numpy's ValueError, after the output folder
    ({"sample_size": 2.5}, "sample_size=N must be a whole number >= 1, got 2.5"),
])
def test_benchmark_refuses_bad_arguments_before_any_work(phantom, tmp_path, arguments, message):
    with pytest.raises(OrgasegError, match=message):
        run_benchmark(phantom, "baseline", tmp_path / "out", ks=[4], device="cpu", **arguments)
    assert not (tmp_path / "out").exists()


def test_bad_stage_options_are_refused_before_the_training(phantom, tmp_path):
    # they were checked after the encoder had trained (minutes to hours), leaving its checkpoint behind
    events = []
    with pytest.raises(OrgasegError, match="unknown option 'nope': cover-stride takes"):
        run_benchmark(phantom, "maester", tmp_path / "out", ks=[4], preset="tiny", steps=2, options={"nope": 1},
                      device="cpu", progress=lambda *event: events.append(event))
    assert events == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, arguments, message", [
    ("baseline", {"ks": [10**7]}, "K = 10000000"),  # refused when the clusterer is fitted, after the folder was made
    ("maester", {"pixel_size": -3, "preset": "tiny", "steps": 2}, "the pixel size must be a positive number"),
])
def test_a_refused_benchmark_leaves_no_empty_output_folder(phantom, tmp_path, method, arguments, message):
    (tmp_path / "kept").mkdir()  # a folder that was there before is left as it was
    for output in (tmp_path / "new" / "out", tmp_path / "kept"):
        with pytest.raises(OrgasegError, match=message):
            run_benchmark(phantom, method, output, **{"ks": [4], "sample_size": 5_000, "device": "cpu", **arguments})
    assert not (tmp_path / "new").exists() and (tmp_path / "kept").is_dir()


def test_k_ranges():
    assert parse_k_range("4-10") == list(range(4, 11))
    assert parse_k_range("4,6,8") == [4, 6, 8]
    with pytest.raises(OrgasegError):
        parse_k_range("0-3")
    # ks=6 failed with "'int' object is not iterable", and 2.5 was read as 2
    assert parse_k_range(6) == [6] and parse_k_range(np.int64(6)) == [6] and parse_k_range((8, 4)) == [4, 8]
    with pytest.raises(OrgasegError, match=r"K values must be positive integers, got \[4, 2\.5\]"):
        parse_k_range([4, 2.5])


def test_existing_results_need_overwrite(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    assert main(["benchmark", "--dataset", "phantom", "--method", "baseline", "-o", str(tmp_path), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
