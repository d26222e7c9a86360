"""Refining named clusters with the same clicks (``orgaseg name --refine``) on a phantom with known answers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile

import orgaseg
from orgaseg.cli import main
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io import open_volume
from orgaseg.io.writers import write_tiff_image
from orgaseg.organelles import name_clusters, points_from_arrays
from orgaseg.organelles.refine import (
    DEFAULT_CONTEXT_PX,
    estimate_priors,
    forest_path,
    load_classifier,
    train_classifier,
)
from orgaseg.organelles.segmentation_features import features_at, rebuild_segmentation
from orgaseg.synthetic import CLASS_NAMES, make_cell

VOXEL = (20.0, 20.0, 20.0)
SHAPE = (8, 96, 96)
CLASSES = CLASS_NAMES[1:]


def clicks(labels: np.ndarray, per_class: int, seed: int = 0):
    """``per_class`` random clicks on each phantom class and on the outside of the cell (named "background")."""
    rng = np.random.default_rng(seed)
    coords, names = [], []
    for value, name in enumerate(CLASS_NAMES):
        voxels = np.argwhere(labels == value)
        coords.append(voxels[rng.choice(len(voxels), per_class, replace=False)])
        names += [name] * per_class
    return np.concatenate(coords), names


def dice_by_name(named: np.ndarray, names, labels: np.ndarray) -> dict[str, float]:
    """Dice of each phantom class against the voxels named after it (nothing is matched)."""
    inside = labels > 0  # the phantom's outside is not a class
    out = {}
    for value, name in enumerate(CLASS_NAMES):
        if value == 0:
            continue
        predicted = (named == names.index(name)) & inside if name in names else np.zeros_like(inside)
        truth = labels == value
        out[name] = 2 * np.sum(predicted & truth) / (predicted.sum() + truth.sum())
    return out


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """K = 3 k-means on a phantom of 5 classes: k-means must merge classes."""
    folder = tmp_path_factory.mktemp("refine")
    cell = make_cell(shape=SHAPE, voxel_size=VOXEL, seed=0)
    write_tiff_image(folder / "cell.tif", cell.raw, voxel_size=VOXEL)
    result = orgaseg.segment(folder / "cell.tif", k=3, output=folder / "seg.ome.zarr")
    return folder, cell, result


def test_refine_separates_the_classes_kmeans_merged(merged):
    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 10)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    named = name_clusters(folder / "seg.ome.zarr", annotations=annotations)
    refined = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True)
    before = dice_by_name(named.labels, named.names, cell.labels)
    after = dice_by_name(refined.labels, refined.names, cell.labels)
    assert len(named.naming.names_without_cluster()) >= 2  # 3 clusters cannot carry 6 names
    assert np.mean(list(after.values())) > np.mean(list(before.values())) + 0.3
    for name in named.naming.names_without_cluster():  # the merged classes come back
        assert after[name] > 0.5, (name, after)
    # labelled every voxel through the block runner with the stored classifier
    assert refined.provenance["refined"] and refined.provenance["classifier"]["kind"] == "logistic"
    assert refined.provenance["naming"]["trained_on"] == len(coords)


def test_the_network_separates_the_merged_classes_as_scikit_learn_fits_it(merged):
    from orgaseg.organelles.refine import make_network

    folder, cell, segmentation = merged
    coords, names = clicks(cell.labels, 10)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    refined = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, classifier="mlp",
                            context="none")
    scores = dice_by_name(refined.labels, refined.names, cell.labels)
    assert min(scores.values()) > 0.5, scores
    # the stored weights, run forward in numpy, give scikit-learn's probabilities for the same fit
    classifier = refined.classifier
    features = features_at(rebuild_segmentation(segmentation.provenance), coords)
    clusters = classifier.clusterer.predict(features)
    design = classifier.design(features, clusters)
    targets = np.searchsorted(classifier.classes, [refined.names.index(n) for n in names])
    reference = make_network(seed=0).fit(design, targets)
    np.testing.assert_allclose(classifier.posteriors(design), reference.predict_proba(design), atol=1e-4)


def test_features_at_clicks_are_the_segmentations_features(merged):
    folder, _, segmentation = merged
    rebuilt = rebuild_segmentation(segmentation.provenance)
    assert rebuilt.config()["features"] == segmentation.provenance["config"]["features"]
    coords = np.array([[0, 0, 0], [4, 50, 60], [7, 95, 95]])
    expected = orgaseg.compute_features(folder / "cell.tif")[tuple(coords.T)]
    np.testing.assert_allclose(features_at(rebuilt, coords), expected, rtol=1e-5, atol=1e-5)
    # the clusterer read back labels those voxels as the segmentation did
    seg = np.asarray(open_volume(folder / "seg.ome.zarr").read((slice(None),) * 3))
    np.testing.assert_array_equal(rebuilt.clusterer.predict(features_at(rebuilt, coords)), seg[tuple(coords.T)])
    # the pass is said block by block: one step per block that holds a voxel asked for
    blocked = dataclasses.replace(rebuilt, block_shape=(4, 48, 48))  # 2 x 2 x 2 blocks; the voxels lie in 2 of them
    calls = []
    features = features_at(blocked, coords, progress=lambda *call, **figures: calls.append(call))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert calls == [("features of the annotated voxels", done, 2) for done in range(3)]


@pytest.fixture(scope="module")
def second(merged):
    """Another phantom, segmented with the first one's clusterer."""
    folder, _, _ = merged
    other = make_cell(shape=SHAPE, voxel_size=VOXEL, seed=4)
    write_tiff_image(folder / "other.tif", other.raw, voxel_size=VOXEL)
    assert main(["segment", str(folder / "other.tif"), "-o", str(folder / "other.ome.zarr"), "--quiet",
                 "--centers", str(folder / "seg.ome.zarr.provenance.json")]) == 0
    # the features the default refining classifier reads: the segmentation's, with their superpixel context
    record = json.loads((folder / "other.ome.zarr.provenance.json").read_text())
    rebuilt = rebuild_segmentation(record, context=DEFAULT_CONTEXT_PX)
    everywhere = np.argwhere(np.ones(SHAPE, dtype=bool))
    return other, features_at(rebuilt, everywhere).reshape(SHAPE + (-1,))


@pytest.mark.parametrize("kind", ["logistic", "mlp", "forest"])
def test_a_refined_mapping_treats_another_volume_the_same(merged, second, tmp_path, kind, capsys):
    folder, cell, _ = merged
    other, features = second
    coords, names = clicks(cell.labels, 10)
    lines = ["z,y,x,name"] + [f"{z},{y},{x},{n}" for (z, y, x), n in zip(coords, names)]
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n")
    assert main(["name", str(folder / "seg.ome.zarr"), "--points", str(tmp_path / "points.csv"), "--refine",
                 "--classifier", kind, "-o", str(tmp_path / "a.ome.zarr"), "--quiet",
                 "--executor", "threads", "--workers", "2"]) == 0
    record = json.loads((tmp_path / "a.ome.zarr.provenance.json").read_text())
    assert "cluster vote (the labels are the refining classifier's): 0 -> " in capsys.readouterr().out
    assert forest_path(tmp_path / "a.ome.zarr").exists() == (kind == "forest")
    # by default logistic regression and the network predict under estimated class frequencies, a forest under
    # the clicks'
    state = record["classifier"]
    assert np.allclose(state["priors"], state["train_priors"]) == (kind == "forest")
    reused = name_clusters(folder / "other.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json",
                           output=tmp_path / "b.ome.zarr")
    assert reused.classifier is not None and reused.classifier.kind == kind
    named = np.asarray(open_volume(tmp_path / "b.ome.zarr").read((slice(None),) * 3))
    # the stored classifier, applied directly to the second volume's features, gives the same labels
    classifier = load_classifier(record["classifier"], folder=tmp_path)
    np.testing.assert_array_equal(named, classifier.predict(features))
    scores = dice_by_name(named, list(record["names"]), other.labels)
    assert np.mean(list(scores.values())) > 0.6, scores
    if kind == "logistic":  # the volume moved: a refined mapping takes --raw as --refine does
        (tmp_path / "moved.tif").write_bytes((folder / "other.tif").read_bytes())
        moved = name_clusters(folder / "other.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json",
                              raw=tmp_path / "moved.tif")
        np.testing.assert_array_equal(moved.labels, named)
        assert main(["name", str(folder / "other.ome.zarr"), "--mapping", str(tmp_path / "a.ome.zarr.provenance.json"),
                     "--workers", "2", "--executor", "threads", "-o", str(tmp_path / "c.ome.zarr"), "--quiet"]) == 0


def test_a_refined_mapping_on_other_features_says_what_differs(merged, tmp_path):
    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 3)
    name_clusters(folder / "seg.ome.zarr", annotations=points_from_arrays(coords, names, shape=SHAPE), refine=True,
                  output=tmp_path / "a.ome.zarr")
    # the same clusterer on another working grid of as many channels: the names fit, the classifier's features do not
    with pytest.warns(OrgasegWarning):
        orgaseg.segment(folder / "cell.tif", centers=folder / "seg.ome.zarr.provenance.json", pixel_size=16.0,
                        output=tmp_path / "finer.ome.zarr")
    with pytest.raises(OrgasegError, match=r"other features than the classifier of .* was trained on \(pixel_size_nm "
                                           r"16\.0 here, 10\.0 there; .*\): segment it with the same method"):
        name_clusters(tmp_path / "finer.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json")


def test_a_forest_file_that_changed_is_refused(merged, tmp_path):
    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 3)
    name_clusters(folder / "seg.ome.zarr", annotations=points_from_arrays(coords, names, shape=SHAPE), refine=True,
                  classifier="forest", output=tmp_path / "a.ome.zarr")
    record = json.loads((tmp_path / "a.ome.zarr.provenance.json").read_text())
    forest_path(tmp_path / "a.ome.zarr").write_bytes(b"not a forest")
    with pytest.raises(OrgasegError, match="SHA-256 differs"):
        load_classifier(record["classifier"], folder=tmp_path)
    forest_path(tmp_path / "a.ome.zarr").unlink()
    with pytest.raises(OrgasegError, match="is not there"):
        name_clusters(folder / "seg.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json")


def test_refine_finds_an_input_given_by_a_relative_path_from_another_folder(merged, tmp_path, monkeypatch):
    folder, cell, _ = merged
    monkeypatch.chdir(folder)
    assert main(["segment", "cell.tif", "-k", "3", "-o", str(tmp_path / "seg.ome.zarr"), "--quiet"]) == 0
    record = json.loads((tmp_path / "seg.ome.zarr.provenance.json").read_text())
    assert record["input"]["path"] == str(folder.resolve() / "cell.tif")
    coords, names = clicks(cell.labels, 3)
    monkeypatch.chdir(tmp_path)  # the relative path no longer leads to the input
    refined = name_clusters("seg.ome.zarr", annotations=points_from_arrays(coords, names, shape=SHAPE), refine=True)
    assert refined.provenance["refined"]


def test_refine_needs_the_segmented_volume(merged, tmp_path):
    folder, cell, segmentation = merged
    # the same segmentation as made from an in-memory array: its provenance names no input path
    labels = np.asarray(open_volume(folder / "seg.ome.zarr").read((slice(None),) * 3))
    record = {**segmentation.provenance, "input": {**segmentation.provenance["input"], "path": "<array>"}}
    in_memory = dataclasses.replace(segmentation, labels=labels, path=None, provenance=record)
    coords, names = clicks(cell.labels, 2)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    with pytest.raises(OrgasegError, match="in-memory array"):
        name_clusters(in_memory, annotations=annotations, refine=True)
    refined = name_clusters(in_memory, annotations=annotations, refine=True, raw=cell.raw)
    assert refined.labels.shape == SHAPE
    with pytest.raises(OrgasegError, match="has shape"):
        name_clusters(in_memory, annotations=annotations, refine=True, raw=cell.raw[:4])
    with pytest.raises(OrgasegError, match="unknown classifier"):
        train_classifier(np.zeros((2, 3)), np.zeros(2, int), np.array([1, 2]), clusterer=segmentation.model,
                         n_labels=3, kind="svm")


def test_class_frequencies_are_estimated_without_labels():
    # two classes seen through a known likelihood; posteriors under equal training frequencies
    rng = np.random.default_rng(0)
    truth = rng.random(20_000) < 0.15  # 15% of class 1
    x = np.where(truth, rng.normal(2.0, 1.0, truth.size), rng.normal(0.0, 1.0, truth.size))
    likelihood = np.stack([np.exp(-x**2 / 2), np.exp(-(x - 2.0) ** 2 / 2)], axis=1)
    posteriors = likelihood / likelihood.sum(axis=1, keepdims=True)
    estimated = estimate_priors(posteriors, np.array([0.5, 0.5]))
    assert abs(estimated[1] - 0.15) < 0.02 and abs(estimated.sum() - 1) < 1e-9


def test_refine_predicts_under_the_estimated_frequencies(merged):
    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 10)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    estimated = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True)  # logistic: estimated
    as_clicked = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, prior="clicks")
    state = estimated.provenance["classifier"]
    np.testing.assert_allclose(as_clicked.classifier.priors, [1 / 6] * 6)  # 10 clicks of each of 6 names
    # the estimate, made without labels, follows the classes' shares of the volume
    shares = np.bincount(cell.labels.ravel(), minlength=6) / cell.labels.size
    assert estimated.names[1:] == CLASS_NAMES
    np.testing.assert_allclose(state["priors"], shares, atol=0.08)
    assert np.max(np.abs(np.array(state["train_priors"]) - shares)) > 0.2  # the clicks' own are far off
    assert load_classifier(state, folder=folder).priors.tolist() == pytest.approx(state["priors"])
    with pytest.raises(OrgasegError, match="unknown prior"):
        name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, prior="uniform")


def test_the_classifier_reads_the_superpixel_context_it_records(merged, tmp_path):
    folder, cell, segmentation = merged
    coords, names = clicks(cell.labels, 10)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    own = len(segmentation.provenance["clusterer"]["mean"])
    with_context = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True)
    alone = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, context="none",
                          output=tmp_path / "alone.ome.zarr")
    assert with_context.provenance["classifier"]["context"] == list(DEFAULT_CONTEXT_PX)
    assert np.shape(with_context.provenance["classifier"]["coef"])[1] == 5 * own + 3  # + one-hot of K = 3
    assert alone.provenance["classifier"]["context"] == []
    assert np.shape(alone.provenance["classifier"]["coef"])[1] == own + 3
    # a classifier without context is reused without it
    reused = name_clusters(folder / "seg.ome.zarr", mapping=tmp_path / "alone.ome.zarr.provenance.json")
    np.testing.assert_array_equal(reused.labels, open_volume(tmp_path / "alone.ome.zarr").read((slice(None),) * 3))


def test_the_classifier_reads_the_adjacent_slices_when_asked(merged, tmp_path):
    folder, cell, segmentation = merged
    coords, names = clicks(cell.labels, 10)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    refined = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, z_context=True,
                            output=tmp_path / "z.ome.zarr")
    own = len(segmentation.provenance["clusterer"]["mean"])
    state = refined.provenance["classifier"]
    assert state["z_context"] is True and np.shape(state["coef"])[1] == 2 * 5 * own + 3
    # the features: the superpixel context's, then their mean on the slices above and below
    everywhere = np.argwhere(np.ones(SHAPE, dtype=bool))
    plain = features_at(rebuild_segmentation(segmentation.provenance, context=DEFAULT_CONTEXT_PX), everywhere)
    with_slices = features_at(rebuild_segmentation(segmentation.provenance, context=DEFAULT_CONTEXT_PX,
                                                   z_context=True), everywhere)
    plain, with_slices = plain.reshape(SHAPE + (-1,)), with_slices.reshape(SHAPE + (-1,))
    q = plain.shape[-1]
    np.testing.assert_allclose(with_slices[..., :q], plain, atol=1e-5)
    np.testing.assert_allclose(with_slices[3, ..., q:], (plain[2] + plain[4]) / 2, atol=1e-5)
    # a reused classifier brings its adjacent slices along
    reused = name_clusters(folder / "seg.ome.zarr", mapping=tmp_path / "z.ome.zarr.provenance.json")
    assert reused.classifier.z_context
    np.testing.assert_array_equal(reused.labels, open_volume(tmp_path / "z.ome.zarr").read((slice(None),) * 3))


def test_a_logistic_refine_on_a_working_grid_labels_like_the_interpolated_features(tmp_path):
    # at a working pixel size coarser than the input's, logistic regression's scores (and the k-means scores
    # its cluster one-hot needs) are interpolated onto the input grid instead of every feature channel
    voxel_size, shape = (20.0, 10.0, 10.0), (4, 128, 128)
    cell = make_cell(shape=shape, voxel_size=voxel_size, seed=0)
    write_tiff_image(tmp_path / "cell.tif", cell.raw, voxel_size=voxel_size)
    segmentation = orgaseg.segment(tmp_path / "cell.tif", k=3, pixel_size=20, output=tmp_path / "seg.ome.zarr")
    assert segmentation.provenance["config"]["working_grid"]["factors"] == [1.0, 2.0, 2.0]
    coords, names = clicks(cell.labels, 10)
    annotations = points_from_arrays(coords, names, shape=shape)
    refined = name_clusters(tmp_path / "seg.ome.zarr", annotations=annotations, refine=True,
                            output=tmp_path / "refined.ome.zarr")
    assert refined.classifier.affine_scores
    labels = np.asarray(open_volume(tmp_path / "refined.ome.zarr").read((slice(None),) * 3))
    everywhere = np.argwhere(np.ones(shape, dtype=bool))
    features = features_at(rebuild_segmentation(segmentation.provenance, context=DEFAULT_CONTEXT_PX), everywhere)
    direct = refined.classifier.predict(features.reshape(shape + (-1,)))
    assert np.mean(labels == direct) > 0.999  # the same up to float rounding at near-ties
    assert min(dice_by_name(labels, list(refined.names), cell.labels).values()) > 0.3
    # the scores' algebra with the cluster's part made to matter (on the phantom its weights are small)
    coef = np.array(refined.classifier.model["coef"])
    coef[:, -3:] = 20 * np.random.default_rng(0).standard_normal((len(coef), 3))
    loud = dataclasses.replace(refined.classifier, model={**refined.classifier.model, "coef": coef})
    sample = features[::5]
    assert np.mean(loud.labels_from_scores(loud.scores(sample)) == loud.predict(sample)) > 0.999
    # the network is not affine in the features: it reads the interpolated features themselves
    network = name_clusters(tmp_path / "seg.ome.zarr", annotations=annotations, refine=True, classifier="mlp")
    assert not network.classifier.affine_scores


def test_a_network_refine_on_a_working_grid_labels_a_slab_at_a_time_as_the_whole_block(tmp_path, monkeypatch):
    # the network reads every interpolated feature channel; a block interpolates them a slab at a time
    from orgaseg.pipeline import tasks

    voxel_size, shape = (20.0, 10.0, 10.0), (4, 128, 128)
    cell = make_cell(shape=shape, voxel_size=voxel_size, seed=0)
    write_tiff_image(tmp_path / "cell.tif", cell.raw, voxel_size=voxel_size)
    segmentation = orgaseg.segment(tmp_path / "cell.tif", k=3, pixel_size=20, output=tmp_path / "seg.ome.zarr")
    annotations = points_from_arrays(*clicks(cell.labels, 10), shape=shape)
    whole = name_clusters(tmp_path / "seg.ome.zarr", annotations=annotations, refine=True, classifier="mlp")
    n_features = whole.classifier.n_features
    slabs = []
    interpolate = tasks.WorkingGrid.to_input

    def recording(grid, features, start, region):
        slabs.append(tuple(r.stop - r.start for r in region))
        return interpolate(grid, features, start, region)

    monkeypatch.setattr(tasks.WorkingGrid, "to_input", recording)
    monkeypatch.setattr(tasks, "SLAB_BYTES", 4 * n_features * 1000)
    by_slab = name_clusters(tmp_path / "seg.ome.zarr", annotations=annotations, refine=True, classifier="mlp")
    # parts of planes (31 x 31 voxels), from every plane of the block, and the same labels
    assert slabs and max(int(np.prod(s)) for s in slabs) <= 1000 and {s[0] for s in slabs} == {1}
    assert sum(int(np.prod(s)) for s in slabs) == int(np.prod(shape))
    np.testing.assert_array_equal(by_slab.labels, whole.labels)
    everywhere = np.argwhere(np.ones(shape, dtype=bool))
    features = features_at(rebuild_segmentation(segmentation.provenance, context=DEFAULT_CONTEXT_PX), everywhere)
    direct = whole.classifier.predict(features.reshape(shape + (-1,)))
    assert np.mean(whole.labels == direct) > 0.999  # the same up to float rounding at near-ties


def test_refine_thins_blocks_whose_context_features_would_be_large_and_labels_the_same(merged, monkeypatch):
    from orgaseg.organelles import segmentation_features

    folder, cell, segmentation = merged
    annotations = points_from_arrays(*clicks(cell.labels, 10), shape=SHAPE)
    recorded = tuple(segmentation.provenance["blocks"]["shape"])
    job = rebuild_segmentation(segmentation.provenance, context=DEFAULT_CONTEXT_PX, z_context=True)
    assert job.block_shape == recorded and recorded[0] > 1
    default = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, z_context=True)
    # room for one plane of these features: blocks one plane deep, the same labels
    plane = 4 * job.job.extractor.n_features * recorded[1] * recorded[2]
    monkeypatch.setattr(segmentation_features, "FEATURE_BYTES", plane + 1)
    assert rebuild_segmentation(segmentation.provenance, context=DEFAULT_CONTEXT_PX,
                                z_context=True).block_shape == (1,) + recorded[1:]
    thin = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, z_context=True)
    np.testing.assert_array_equal(thin.labels, default.labels)


def test_refine_blocks_of_an_isotropic_volume_count_the_working_planes_they_hold():
    # at 4 nm on a 10 nm working grid z is resampled too: N input planes hold N / 2.5 working planes of features
    import types

    from orgaseg.organelles.segmentation_features import thinner_blocks
    from orgaseg.pipeline.resample import WorkingGrid
    from orgaseg.pipeline.runner import FEATURE_BYTES

    grid = WorkingGrid.for_pixel_size((400, 1000, 1000), (4.0, 4.0, 4.0), 10.0)
    job = types.SimpleNamespace(grid=grid, extractor=types.SimpleNamespace(n_features=350))

    def held(planes: int) -> int:  # the most bytes of working features a block of ``planes`` holds, wherever it starts
        regions = [(slice(start, start + planes), slice(0, 500), slice(0, 500)) for start in range(5)]
        return max(4 * 350 * int(np.prod([r.stop - r.start for r in grid.working_region(region)])) for region in regions)

    planes = thinner_blocks(job, (400, 500, 500))[0]
    assert 0.75 * FEATURE_BYTES <= held(planes) <= FEATURE_BYTES


def test_the_labelling_pass_reuses_the_training_passs_features(merged, monkeypatch):
    import contextlib

    from orgaseg.organelles import naming

    folder, cell, _ = merged
    annotations = points_from_arrays(*clicks(cell.labels, 10), shape=SHAPE)
    caches = []
    reusing = naming.reusing_features

    @contextlib.contextmanager
    def recording(jobs, max_bytes):
        with reusing(jobs, max_bytes) as made:
            caches.extend(made)
            yield made

    monkeypatch.setattr(naming, "reusing_features", recording)
    reused = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True)
    assert caches[0].hits > 0 and caches[0].used > 0
    computed = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, feature_memory=0)
    assert caches[1].hits == 0 and caches[1].max_bytes == 0
    np.testing.assert_array_equal(reused.labels, computed.labels)


@pytest.mark.parametrize("selection", [{"channel": 1}, {"axes": "zxy"}])
def test_refine_reads_the_volume_as_it_was_segmented(merged, tmp_path, selection):
    """A channel of a multichannel file, or a volume read with other axes, is read the same way again."""
    _, cell, _ = merged
    if "channel" in selection:  # the cell in channel 1, its inverse in channel 0
        stored = np.stack([cell.raw.max() - cell.raw, cell.raw], axis=1)
        tifffile.imwrite(tmp_path / "cell.tif", stored, imagej=True, resolution=(50.0, 50.0),
                         metadata={"spacing": 0.02, "unit": "um", "axes": "ZCYX"})
        reference = cell.labels
    else:  # read with axes zxy, the stored volume is the cell transposed (y and x have one size: no shape tells)
        write_tiff_image(tmp_path / "cell.tif", cell.raw, voxel_size=VOXEL)
        reference = cell.labels.transpose(0, 2, 1)
    raw = open_volume(tmp_path / "cell.tif", **selection)
    orgaseg.segment(tmp_path / "cell.tif", k=3, output=tmp_path / "seg.ome.zarr", **selection)
    record = json.loads((tmp_path / "seg.ome.zarr.provenance.json").read_text())
    assert {name: record["input"][name] for name in selection} == selection
    coords, names = clicks(reference, 5)
    annotations = points_from_arrays(coords, names, shape=raw.shape)
    refined = name_clusters(tmp_path / "seg.ome.zarr", refine=True, annotations=annotations)
    given = name_clusters(tmp_path / "seg.ome.zarr", refine=True, annotations=annotations, raw=raw)
    np.testing.assert_array_equal(refined.labels, given.labels)
    # the file moved: --raw names the copy, read as the original was
    (tmp_path / "moved").mkdir()
    (tmp_path / "cell.tif").rename(tmp_path / "moved" / "cell.tif")
    moved = name_clusters(tmp_path / "seg.ome.zarr", refine=True, annotations=annotations,
                          raw=tmp_path / "moved" / "cell.tif")
    np.testing.assert_array_equal(refined.labels, moved.labels)
    if "channel" in selection:  # the channel saved on its own is read as it comes
        write_tiff_image(tmp_path / "channel1.tif", cell.raw, voxel_size=VOXEL)
        alone = name_clusters(tmp_path / "seg.ome.zarr", refine=True, annotations=annotations,
                              raw=tmp_path / "channel1.tif")
        np.testing.assert_array_equal(refined.labels, alone.labels)


def test_a_raw_volume_given_inside_a_container_has_its_own_key(merged, tmp_path, capsys):
    import h5py

    folder, cell, _ = merged
    with h5py.File(tmp_path / "moved.h5", "w") as f:  # the segmented volume, moved into a container
        f["em/raw"] = cell.raw
        f["em/mask"] = cell.labels > 0
    coords, names = clicks(cell.labels, 3)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    expected = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True)
    with pytest.raises(OrgasegError, match="needs a key; pass raw_key=NAME"):
        name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, raw=tmp_path / "moved.h5")
    given = name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, raw=tmp_path / "moved.h5",
                          raw_key="em/raw")
    np.testing.assert_array_equal(given.labels, expected.labels)


def test_a_raw_volume_from_another_place_is_warned_about(merged, tmp_path):
    import dataclasses
    import warnings

    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 3)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    def at(z):
        return dataclasses.replace(open_volume(folder / "cell.tif"), origin=(z, 0.0, 0.0))

    orgaseg.segment(at(400.0), k=3, output=tmp_path / "placed.ome.zarr")
    with pytest.warns(OrgasegWarning, match=r"first voxel lies at .*: they cover different regions, and the features "
                                            r"would be computed from another place than the clusters were"):
        name_clusters(tmp_path / "placed.ome.zarr", annotations=annotations, refine=True, raw=at(800.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        name_clusters(tmp_path / "placed.ome.zarr", annotations=annotations, refine=True, raw=at(400.0))


def test_another_volume_of_the_same_shape_is_told_by_its_intensities(merged, tmp_path, capsys):
    import warnings

    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 3)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    # a plain TIFF: no place, no voxel size, nothing but its voxels says it is another volume
    other = make_cell(shape=SHAPE, voxel_size=VOXEL, seed=5).raw
    tifffile.imwrite(tmp_path / "other.tif", (other.astype(np.float32) * 0.8).astype(other.dtype))
    with pytest.warns(OrgasegWarning, match=r"other\.tif: its intensities span .* to .* \(percentiles 0\.5 and "
                                            r"99\.5\), the segmented volume's .* to .*, which are used: is it the "
                                            r"volume that was segmented\?"):
        name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, raw=tmp_path / "other.tif")
    tifffile.imwrite(tmp_path / "copy.tif", cell.raw)  # the segmented voxels, without their metadata
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        warnings.filterwarnings("ignore", message=".*no voxel size")
        name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, raw=tmp_path / "copy.tif")


def test_a_raw_volume_of_another_voxel_size_is_said_to_be_read_at_the_segmented_ones(merged, tmp_path):
    import warnings

    folder, cell, _ = merged
    coords, names = clicks(cell.labels, 3)
    annotations = points_from_arrays(coords, names, shape=SHAPE)
    write_tiff_image(tmp_path / "coarse.tif", cell.raw, voxel_size=tuple(2 * v for v in VOXEL))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name_clusters(folder / "seg.ome.zarr", annotations=annotations, refine=True, raw=tmp_path / "coarse.tif")
    said = [str(w.message) for w in caught if issubclass(w.category, OrgasegWarning)]
    expected = (f"{tmp_path / 'coarse.tif'}: its voxel size, 40 x 40 x 40 nm, is not the segmented volume's, "
                "20 x 20 x 20 nm, which is used: is it the volume that was segmented?")
    assert said == [expected], said
