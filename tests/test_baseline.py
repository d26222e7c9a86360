"""The classical baseline end to end on the phantom, through the public API."""

import numpy as np
import pytest

import orgaseg
from orgaseg.cluster.kmeans import fit_kmeans
from orgaseg.datasets import load_dataset
from orgaseg.io import compute_normalization


@pytest.fixture(scope="module")
def phantom():
    return load_dataset("phantom", shape=(32, 128, 128), voxel_size=(15.0, 15.0, 15.0)).evaluation[0]


@pytest.fixture(scope="module")
def baseline(phantom):
    return orgaseg.segment(phantom.raw, method="baseline", k=6, seed=0, sample_size=50_000)


def _merge(labels, phantom):
    classes = ("cytoplasm", "nucleus", "mitochondria", "granules", "membrane")
    return orgaseg.evaluate(labels, phantom.reference, classes=classes, background=["cytoplasm"]).to_dict()["merge"]


def test_baseline_beats_intensity_only_kmeans(phantom, baseline):
    raw = phantom.raw.read()
    normalized = compute_normalization(phantom.raw).apply(raw)
    sample = normalized.reshape(-1, 1)[:: max(1, normalized.size // 50_000)]
    intensity = fit_kmeans(sample, 6, seed=0).predict(normalized[..., None])
    base, flat = _merge(baseline.labels, phantom), _merge(intensity, phantom)
    assert base["mean_dice"] > flat["mean_dice"] + 0.05
    assert base["mean_dice_organelles"] > flat["mean_dice_organelles"] + 0.05
    # granules (dark core, bright halo) need texture: intensity alone splits them
    assert base["per_class"]["granules"]["dice"] > flat["per_class"]["granules"]["dice"]


def test_same_input_gives_same_ids(phantom, baseline):
    again = orgaseg.segment(phantom.raw, method="baseline", k=6, seed=0, sample_size=50_000)
    np.testing.assert_array_equal(again.labels, baseline.labels)


def test_provenance_records_what_ran(phantom, baseline):
    record = baseline.provenance
    assert record["method"] == "baseline" and record["k"] == 6
    assert record["input"]["voxel_size"] == [15.0, 15.0, 15.0]
    assert len(record["clusterer"]["centers"]) == 6
    assert record["config"]["extractor"]["scales_nm"][0] == 10.0
    assert {"low", "high"} <= set(record["normalization"])


def test_blockwise_output_matches_in_memory(phantom, baseline, tmp_path):
    out = orgaseg.segment(phantom.raw, method="baseline", k=6, seed=0, sample_size=50_000,
                          block_shape=(8, 64, 128), output=tmp_path / "seg.ome.zarr")
    written = orgaseg.open_volume(out.path).read()
    assert np.mean(written == baseline.labels) > 0.999
