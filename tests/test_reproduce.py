"""benchmarks/reproduce.py and benchmarks/render_results.py: the plan's logic on a tiny phantom, the page."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import render_results  # noqa: E402
import reproduce  # noqa: E402



def _reproduce(*args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "reproduce.py"), *args], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_plan_is_consistent():
    names = [run.name for run in reproduce.RUNS]
    assert len(names) == len(set(names))
    for run in reproduce.RUNS:
        assert run.section in reproduce.SECTIONS
        assert set(getattr(run, "requires", ())) <= set(names)
        if isinstance(run, reproduce.BenchmarkRun):
            # committed results train by steps, never by minutes
            assert (run.steps is not None) == (run.preset is not None)
            assert "minutes" not in run.arguments()
    cpu = [run for run in reproduce.RUNS if isinstance(run, reproduce.BenchmarkRun) and run.section == "cpu"]
    assert {(run.dataset, run.method, run.pixel_size) for run in cpu} == {
        (dataset, method, pixel)
        for dataset, pixels in (("vnc", ("native", 9.2, 18.4)), ("cdeep3m-mito", ("native", 11.8, 23.6)))
        for method in ("baseline", "maester", "his4mae") for pixel in pixels
    } | {(dataset, method, 16.0) for dataset in ("vnc", "cdeep3m-mito") for method in ("han-vae-2d", "han-vae")} | {
        ("vnc", "sdae-recon", 9.2), ("cdeep3m-mito", "sdae-recon", 11.8)}
    gpu = [run for run in reproduce.RUNS if run.section == "gpu"]
    assert {(run.dataset, run.method, run.preset, run.device) for run in gpu} == {
        (dataset, method, "paper", "cuda") for dataset in ("vnc", "cdeep3m-mito") for method in ("maester", "his4mae")
    }


def test_select_adds_what_a_script_reads():
    runs, asked = reproduce.select(reproduce.RUNS, "cpu", ["throughput-*"])
    assert asked == {"throughput-vnc-maester-cpu"}
    assert [run.name for run in runs] == ["vnc-maester-cpu-native", "throughput-vnc-maester-cpu"]
    with pytest.raises(SystemExit, match="matches no run"):
        reproduce.select(reproduce.RUNS, "cpu", ["vnc-maester-paper-*"])
    assert all(run.section == "gpu" for run in reproduce.select(reproduce.RUNS, "gpu", None)[0])


def test_a_run_on_another_runs_encoder_requires_it():
    runs, asked = reproduce.select(reproduce.RUNS, "cpu", ["cdeep3m-mito-sccs-his4mae-11.8nm"])
    assert [run.name for run in runs] == ["cdeep3m-mito-his4mae-cpu-11.8nm", "cdeep3m-mito-sccs-his4mae-11.8nm"]
    graph = runs[1]
    assert graph.method == "his4mae" and graph.clusterer == "sccs" and graph.steps is None
    assert graph.arguments(Path("/r"))["model"] == "/r/cdeep3m-mito-his4mae-cpu-11.8nm/model.pt"
    assert "{results}/cdeep3m-mito-his4mae-cpu-11.8nm/model.pt" in graph.describe()


def test_tiny_plan_end_to_end(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "results.md"
    common = ("--tiny", "--section", "all", "--results", str(results), "--docs", str(docs))
    benchmarks = [run for run in reproduce.RUNS if isinstance(run, reproduce.BenchmarkRun)]

    listing = _reproduce(*common, "--list")
    for run in reproduce.RUNS:
        assert run.name in listing
    assert not results.exists()  # --list runs nothing

    output = _reproduce(*common)
    page = docs.read_text()
    by_name = {run.name: run for run in benchmarks}
    for run in benchmarks:
        tiny = run.tiny()
        record = json.loads((results / run.name / "results.json").read_text())
        assert record["dataset"] == "phantom" and record["method"] == run.method
        assert record["ks"] == list(tiny.ks) and record["seed"] == tiny.seed
        assert record["sample_size"] == tiny.sample_size
        # a run on another run's encoder reports that run's training
        trained = tiny if run.model is None else by_name[run.requires[0]].tiny()
        assert record["preset"] == trained.preset
        assert record["training"]["steps"] == (trained.steps or 0)
        if run.model is not None:
            assert record["training"]["checkpoint"] == str(results / run.requires[0] / "model.pt")
        assert record["pixel_size_nm"] == (None if tiny.pixel_size == "native" else tiny.pixel_size)
        if run.features is not None:
            assert record["stages"]["features"] == run.features
            stages = record["stages"]  # each option reaches the stage it belongs to
            assert {**stages["feature_options"], **stages["clusterer_options"]} == tiny.options
        environment = record["environment"]
        assert {"git", "versions", "machine"} <= set(environment)
        assert environment["versions"]["orgaseg"] and environment["machine"]["cores"]
        if run.preset is not None:  # the checkpoint is kept beside the results (the gpu section is fetched back)
            assert (results / run.name / "model.pt").is_file()
        assert f"[{run.name}](results/{run.name}/)" in page
    for run in reproduce.RUNS:
        if isinstance(run, reproduce.ScriptRun):
            assert f"{run.name}: not run with --tiny" in output

    again = _reproduce(*common)
    for run in benchmarks:
        assert f"{run.name}: done, skipped" in again


def _record(**changes) -> dict:
    """A results.json as run_benchmark writes it, for two K and two classes."""
    def scores(mean, mito):
        return {"per_class": {"cytoplasm": {"dice": 0.9}, "mitochondria": {"dice": mito}}, "mean_dice": mean,
                "mean_dice_organelles": mito, "accuracy": 0.8, "mapping": {}}

    record = {
        "dataset": "phantom", "method": "maester", "preset": "tiny", "options": {"stride": 40},
        "stages": {"features": "expand-stride", "feature_options": {"stride": 40}, "clusterer": "kmeans",
                   "clusterer_options": {}, "pixel_size_nm": None},
        "pixel_size_nm": None, "features": {"kind": "expand_stride", "stride": 40}, "classes": ["cytoplasm", "mitochondria"], "background": ["cytoplasm"],
        "notes": [], "ks": [4, 5], "seed": 0, "sample_size": 1000,
        "training": {"preset": "tiny", "wall_s": 12.4, "steps": 30},
        "segmentation": {"wall_s": 2.0, "voxels": 2000, "voxels_per_s": 1000.0},
        "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None},
        "results": {"4": {"merge": scores(0.5, 0.25), "strict": scores(0.4, 0.25)},
                    "5": {"merge": scores(0.7, 0.55), "strict": scores(0.3, 0.55)}},
    }
    record.update(changes)
    return record


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_render_results(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    environment = {"git": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True, "branch": "main"},
                   "versions": {}, "machine": {"cpu": "Test CPU", "cores": 16, "gpu": "Test GPU"}}
    new = _record(pixel_size_nm=18.4, environment=environment)
    new["stages"].update(clusterer="minibatch-kmeans", clusterer_options={"batch_size": 1024}, pixel_size_nm=18.4)
    # before the stages were recorded: no stages, no pixel size, the feature strategy among the options
    old = _record(method="baseline", preset=None, options={"scales_nm": [4.6, 9.2]},
                  training={"preset": None, "wall_s": 0.0, "steps": 0})
    for key in ("stages", "pixel_size_nm", "features"):
        del old[key]
    older_maester = _record(options={"features": "stride-only"}, features={"kind": "cover_stride", "mode": "stride"})
    del older_maester["stages"], older_maester["pixel_size_nm"]
    records = {"new-run": new, "old-run": old, "older-maester": older_maester}
    for name, record in records.items():
        (results / name).mkdir(parents=True)
        (results / name / "results.json").write_text(json.dumps(record))
    (results / "scaling").mkdir()
    (results / "scaling" / "results.json").write_text(json.dumps({"runs": {}}))
    (results / "scaling" / "results.md").write_text("table")
    output = tmp_path / "docs" / "results.md"

    text = render_results.render_results(results, output)
    assert output.read_text() == text
    assert "do not edit by hand" in text
    assert "0123456789 (dirty) (1 result)" in text and "not recorded (2 results)" in text
    assert "Test CPU, 16 cores, Test GPU" in text and "Test CPU, 2 cores" in text
    rows = {line.split("](")[0][3:]: _cells(line) for line in text.splitlines() if line.startswith("| [")}
    assert set(rows) == set(records)
    header = _cells(next(line for line in text.splitlines() if line.startswith("| run |")))
    row = dict(zip(header, rows["new-run"]))
    assert row["method"] == "maester" and row["preset"] == "tiny"
    assert row["features"] == "expand-stride stride=40" and row["clusterer"] == "minibatch-kmeans batch_size=1024"
    assert row["pixel size"] == "18.4 nm" and row["steps"] == "30"
    # merge mode at the best K (5), the range over K, strict mode at its own best K (4)
    assert row["best K"] == "5" and row["mean Dice"] == "0.700" and row["mitochondria"] == "0.550"
    assert row["mean Dice over K"] == "0.500-0.700 (K 4-5)" and row["strict mean Dice"] == "0.400"
    assert row["training (s)"] == "12" and row["voxels/s"] == "1,000"
    assert row["run"] == "[new-run](../benchmarks/results/new-run/)"
    row = dict(zip(header, rows["old-run"]))
    # fields that results from before the pixel size and the clusterer lack
    assert row["pixel size"] == "native" and row["clusterer"] == "kmeans"
    assert row["features"] == "default scales_nm=4.6,9.2"
    assert row["steps"] == "-" and row["training (s)"] == "-"
    assert row["commit"] == "not recorded"
    assert dict(zip(header, rows["older-maester"]))["features"] == "stride-only"
    assert "[scaling](../benchmarks/results/scaling/results.md)" in text


def test_render_results_names_the_ks_that_ran(tmp_path):
    """The range over K names the K of the run: gaps are not written as a span (K 4-10 and 14 is not K 4-14)."""
    results = tmp_path / "results"
    base = _record()
    gapped = _record(ks=[4, 5, 14], results={**base["results"], "14": base["results"]["5"]})
    single = _record(ks=[8], results={"8": base["results"]["5"]})
    for name, record in {"gapped": gapped, "single": single, "contiguous": base}.items():
        (results / name).mkdir(parents=True)
        (results / name / "results.json").write_text(json.dumps(record))
    text = render_results.render_results(results, tmp_path / "results.md")
    header = _cells(next(line for line in text.splitlines() if line.startswith("| run |")))
    rows = {line.split("](")[0][3:]: dict(zip(header, _cells(line)))
            for line in text.splitlines() if line.startswith("| [")}
    assert rows["gapped"]["mean Dice over K"] == "0.500-0.700 (K 4-5, 14)"
    assert rows["single"]["mean Dice over K"] == "0.700-0.700 (K 8)"
    assert rows["contiguous"]["mean Dice over K"] == "0.500-0.700 (K 4-5)"
