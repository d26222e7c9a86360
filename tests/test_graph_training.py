"""``orgaseg train --method sccs|cs2c``: augmented region graphs from training volumes, a checkpoint, reuse."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import orgaseg
from orgaseg.cli import main
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io import compute_normalization, read_provenance
from orgaseg.io.volume import Volume
from orgaseg.methods import METHODS
from orgaseg.methods.graph_method import RegionSampler, orient, segment_arguments
from orgaseg.pipeline.stages import resolve_stages
from orgaseg.pipeline.tasks import VolumeSource

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Anisotropic voxels (in-plane filter bank: fast), 640 nm regions of 64 px, small superpixels and scales.
VOXEL = (40.0, 10.0, 10.0)
OPTIONS = {"region_nm": 640.0, "superpixel_px": 16, "scales_nm": [10, 20, 40]}


def _disks(seed: int, shape=(2, 128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """Dark disks at random places on a bright noisy background: a different layout per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    inside = np.zeros(shape, bool)
    for z in range(shape[0]):
        for _ in range(12):
            cy, cx = rng.uniform(10, shape[1] - 10, 2)
            inside[z] |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(5, 10) ** 2
    image = np.where(inside, 0.2, 0.75) + rng.normal(scale=0.04, size=shape)
    return np.clip(image, 0, 1).astype(np.float32), inside


def _merged_accuracy(labels: np.ndarray, inside: np.ndarray) -> float:
    """Accuracy when each cluster is read as its majority class (disks or background).

    With K = 3 the graph clusterers give the disks' rims a cluster of their own; on these volumes a
    trained sccs or cs2c scores 0.96-0.98 for seeds 0-3, networks trained 2 steps with the seed used
    below 0.87 (sccs) and 0.89 (cs2c).
    """
    return float(sum(max(inside[labels == c].sum(), (~inside[labels == c]).sum()) for c in np.unique(labels))
                 / labels.size)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """sccs (K = 3) trained on one disk volume (tiny preset, 8 region graphs), with its progress calls."""
    folder = tmp_path_factory.mktemp("sccs")
    train, _ = _disks(1)
    calls = []
    record = orgaseg.train("sccs", [train], folder / "sccs.json", k=3, preset="tiny", graphs=8, voxel_size=VOXEL,
                           model_options=OPTIONS, seed=1,
                           progress=lambda description, done, total, **figures: calls.append((description, done, total)))
    return folder / "sccs.json", record, calls


def test_a_trained_sccs_labels_a_new_volume_without_fitting_on_it(trained):
    checkpoint, record, _ = trained
    image, inside = _disks(2)  # another layout than the training volume's
    seg = orgaseg.segment(image, voxel_size=VOXEL, **segment_arguments(checkpoint, method="sccs"))
    labels = np.asarray(seg.labels)
    assert _merged_accuracy(labels, inside) > 0.95
    saved = json.loads(checkpoint.read_text())
    # the clusterer is the checkpoint's, not fitted here; the provenance says where it came from
    assert seg.model.to_dict() == saved["clusterer"] == record["clusterer"]
    assert seg.provenance["centers_from"] == str(checkpoint)
    assert saved["features"]["name"] == "filter-bank" and saved["features"]["options"] == {"scales_nm": [10, 20, 40]}
    assert saved["k"] == 3 and saved["seed"] == 1 and saved["step"] == saved["total_steps"] == 300
    assert saved["training_volumes"][0]["voxel_size"] == list(VOXEL) and saved["encoder"] is None
    assert len(saved["sampling"]["regions"]) == 8
    # one loss per step, as the encoders' checkpoints keep them; training lowered it
    assert len(saved["losses"]) == 300 and saved["losses"] == saved["clusterer"]["state"]["losses"]
    assert np.mean(saved["losses"][-20:]) < 0.5 * np.mean(saved["losses"][:20])
    # segment reads the checkpoint as such when it is given as the model (the napari widget's way)
    again = orgaseg.segment(image, voxel_size=VOXEL, method="sccs", model=checkpoint)
    assert np.array_equal(np.asarray(again.labels), labels) and again.provenance["centers_from"] == str(checkpoint)


def test_an_encoder_command_given_a_graph_checkpoint_says_what_it_is(trained, tmp_path, capsys):
    checkpoint = trained[0]
    raw = tmp_path / "raw.npy"
    np.save(raw, _disks(2)[0].astype(np.float32))
    assert main(["inspect", str(checkpoint), str(raw), "--voxel-size", *map(str, VOXEL), "-o", str(tmp_path / "f"),
                 "--quiet"]) == 2
    assert (f"{checkpoint} is a trained graph clusterer (sccs, cs2c), which has none: inspect draws a ViT's masked "
            "reconstructions of its fields of view (maester, his4mae, sdae-recon)") in capsys.readouterr().err


def test_a_graph_checkpoint_of_a_newer_format_is_refused_on_the_command_line(trained, tmp_path, capsys):
    record = json.loads(trained[0].read_text())
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**record, "format_version": record["format_version"] + 1}))
    raw = tmp_path / "raw.npy"
    np.save(raw, _disks(2)[0])
    assert main(["segment", str(raw), "--method", "sccs", "--model", str(newer), "--voxel-size", *map(str, VOXEL),
                 "-o", str(tmp_path / "s.tif"), "--quiet"]) == 2
    said = capsys.readouterr().err
    assert f"newer.json was written by orgaseg {record['package_version']} in checkpoint format " \
           f"{record['format_version'] + 1}" in said and "upgrade orgaseg" in said
    assert not (tmp_path / "s.tif").exists()


def test_training_reports_every_region_graph_and_the_training_steps(trained):
    _, _, calls = trained
    sampling = [(done, total) for description, done, total in calls if description == "sampling region graphs"]
    assert sampling == [(i, 8) for i in range(1, 9)]
    steps = [(done, total) for description, done, total in calls if description == "training the graph clusterer"]
    assert steps[-1] == (300, 300) and all(total == 300 for _, total in steps)
    assert [done for done, _ in steps] == list(range(1, 301))  # every step: a slow step shows at once


def test_train_and_segment_on_the_command_line_give_the_same_clusterer_and_labels(trained, tmp_path, capsys):
    checkpoint, record, _ = trained
    train, _ = _disks(1)
    image, inside = _disks(2)
    tifffile.imwrite(tmp_path / "train.tif", train)
    tifffile.imwrite(tmp_path / "new.tif", image)
    options = ["--model-option", "region_nm=640", "--model-option", "superpixel_px=16",
               "--model-option", "scales_nm=[10,20,40]"]
    voxel = ["--voxel-size", *map(str, VOXEL)]
    common = ["--quiet", "--method", "sccs", "-k", "3", "--preset", "tiny", "--graphs", "8", "--seed", "1"]
    assert main(["train", str(tmp_path / "train.tif"), "-o", str(tmp_path / "sccs.json"), *common, *options,
                 *voxel]) == 0
    assert json.loads((tmp_path / "sccs.json").read_text())["clusterer"] == record["clusterer"]  # seeded
    losses, window = record["losses"], max(1, min(10, len(record["losses"]) // 10))
    assert f"loss {np.mean(losses[:window]):.4f} -> {np.mean(losses[-window:]):.4f}" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "train.tif"), "-o", str(tmp_path / "sccs.json"), *common, *options,
                 *voxel]) == 2  # exists, no --overwrite
    assert main(["segment", str(tmp_path / "new.tif"), "--quiet", "--method", "sccs", "--model",
                 str(tmp_path / "sccs.json"), "-o", str(tmp_path / "labels.tif"), *voxel]) == 0
    labels = tifffile.imread(tmp_path / "labels.tif")
    expected = orgaseg.segment(image, voxel_size=VOXEL, **segment_arguments(checkpoint, method="sccs")).labels
    assert np.array_equal(labels, np.asarray(expected))
    # the checkpoint says its method
    assert main(["segment", str(tmp_path / "new.tif"), "--quiet", "--model", str(tmp_path / "sccs.json"), "-o",
                 str(tmp_path / "no-method.tif"), *voxel]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "no-method.tif"), labels)
    # --centers labels with the checkpoint as --model does: on the features and pixel size it was trained with
    assert main(["segment", str(tmp_path / "new.tif"), "--quiet", "--centers", str(tmp_path / "sccs.json"), "-o",
                 str(tmp_path / "centers.tif"), *voxel]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "centers.tif"), labels)
    assert read_provenance(tmp_path / "centers.tif")["method"] == "sccs"


def test_cs2c_trains_and_recovers_the_classes(tmp_path):
    train, _ = _disks(4)
    record = orgaseg.train("cs2c", [train], tmp_path / "cs2c.json", k=3, preset="tiny", graphs=8, voxel_size=VOXEL,
                           model_options=OPTIONS, seed=1)
    assert record["clusterer"]["kind"] == "cs2c" and record["total_steps"] == 250  # 5/6 of the preset's steps
    image, inside = _disks(5)
    seg = orgaseg.segment(image, voxel_size=VOXEL, **segment_arguments(tmp_path / "cs2c.json", method="cs2c"))
    assert _merged_accuracy(np.asarray(seg.labels), inside) > 0.95
    # the same trained CS²C labels with its spatial centroids too
    spatial = orgaseg.segment(image, voxel_size=VOXEL, method="cs2c", model=tmp_path / "cs2c.json",
                              clusterer="cs2c-spa")
    assert spatial.provenance["clusterer"]["kind"] == "cs2c-spa" and spatial.model.kind == "cs2c-spa"
    assert _merged_accuracy(np.asarray(spatial.labels), inside) > 0.9


def _sampler(image: np.ndarray, voxel_size, seed=0, region_nm=640.0) -> RegionSampler:
    volume = Volume(image, voxel_size=voxel_size)
    stages = resolve_stages("sccs", options={"scales_nm": [20]}, pixel_size="native")
    job = stages.job(VolumeSource(volume), compute_normalization(volume))
    return RegionSampler([job], region_nm, seed=seed)


def test_the_region_sampler_mirrors_and_turns_raw_and_features_alike():
    image = np.random.default_rng(0).random((3, 96, 80)).astype(np.float32)
    sampler = _sampler(image, VOXEL)
    normalization = sampler.jobs[0].normalization
    draws = [sampler.draw(i) for i in range(64)]
    assert {(d.flip, d.turns) for d in draws} == {(f, t) for f in (False, True) for t in range(4)}
    assert {d.axis for d in draws} == {0}  # anisotropic: xy planes only
    changed = 0
    for draw in draws[:12]:
        features, raw, voxel_size = sampler.read(draw)
        plane = normalization.apply(image[draw.region])[0]
        assert plane.shape == (64, 64)
        expected = np.rot90(plane[:, ::-1] if draw.flip else plane, draw.turns)
        np.testing.assert_allclose(raw[0], expected, rtol=1e-6)
        plain_features, plain_raw, _ = sampler.read(dataclasses.replace(draw, flip=False, turns=0))
        np.testing.assert_allclose(features[0], orient(plain_features[0], draw.flip, draw.turns), rtol=1e-6)
        changed += not np.allclose(raw, plain_raw)
        assert features.shape == (1, 64, 64, plain_features.shape[-1]) and voxel_size == VOXEL
    assert changed >= 8  # identity draws aside, augmented regions differ from the plain ones


def test_the_region_sampler_draws_every_plane_of_a_near_isotropic_volume():
    image = np.random.default_rng(1).random((48, 40, 56)).astype(np.float32)
    sampler = _sampler(image, (10.0, 10.0, 10.0), region_nm=300.0)  # 30 px regions
    draws = [sampler.draw(i) for i in range(40)]
    assert {d.axis for d in draws} == {0, 1, 2}
    draw = next(d for d in draws if d.axis == 1)  # an xz plane: z rows, x columns
    _, raw, _ = sampler.read(dataclasses.replace(draw, flip=False, turns=0))
    plane = sampler.jobs[0].normalization.apply(image[draw.region])[:, 0, :]
    assert plane.shape == (30, 30)
    np.testing.assert_allclose(raw[0], plane, rtol=1e-6)
    assert sampler.draw(7) == _sampler(image, (10.0, 10.0, 10.0), region_nm=300.0).draw(7)  # seeded


def test_graph_training_says_what_is_wrong(tmp_path):
    image, _ = _disks(1, shape=(1, 32, 32))
    train = METHODS["sccs"].train
    with pytest.raises(OrgasegError, match="needs at least 60 superpixels"):
        train([image], tmp_path / "a.json", k=60, steps=10, graphs=1, voxel_size=VOXEL,
              model_options={"region_nm": 320.0, "superpixel_px": 64})
    with pytest.raises(OrgasegError, match="2D or 3D"):
        train([np.zeros((2, 2, 8, 8), np.float32)], tmp_path / "a.json", k=2)
    # a constant volume was refused with "use a smaller K", of the preset's K that no one gave
    with pytest.raises(OrgasegError, match=r"every sampled intensity \(1,024 voxels\) is 0: the volume is constant"):
        train([np.zeros((1, 32, 32), np.float32)], tmp_path / "a.json", k=2, voxel_size=VOXEL)
    (tmp_path / "exists.json").write_text("{}")
    with pytest.raises(OrgasegError, match="exists"):
        train([image], tmp_path / "exists.json", k=2)
    with pytest.raises(OrgasegError, match="cannot resume"):
        train([image], tmp_path / "exists.json", k=2, resume=True)
    with pytest.raises(OrgasegError, match="fixed number of steps"):
        train([image], tmp_path / "b.json", k=2, minutes=1.0)
    with pytest.raises(OrgasegError, match=r"need a trained encoder: .* \(encoder=CKPT\)$") as refused:
        train([image], tmp_path / "b.json", k=2, features="expand-stride")
    assert refused.value.for_command_line().endswith("(orgaseg train --encoder CKPT)")
    with pytest.raises(OrgasegError, match="unknown preset"):
        train([image], tmp_path / "b.json", k=2, preset="huge")
    with pytest.raises(OrgasegError, match=r"arguments of their own \(preset=, steps=\), not model options") as refused:
        train([image], tmp_path / "b.json", k=2, model_options={"steps": 5})
    assert "(--preset, --steps; preset=, steps=), not model options" in refused.value.for_command_line()
    with pytest.raises(OrgasegError, match="unknown option") as refused:
        train([image], tmp_path / "b.json", k=2, model_options={"bogus": 5})
    # the options it lists are those train takes as options: not the preset and the steps (refused above)
    listed = str(refused.value).split("sccs takes ")[1].split(", ")
    assert "kappa" in listed and "preset" not in listed and "steps" not in listed, listed
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    assert main(["train", "x.tif", "--method", "baseline", "-o", str(tmp_path / "c.json")]) == 2
    assert main(["train", "x.tif", "--method", "maester", "-k", "4", "-o", str(tmp_path / "c.json")]) == 2


def test_segmenting_with_a_graph_checkpoint_checks_what_it_is_given(trained):
    checkpoint, _, _ = trained
    with pytest.raises(OrgasegError, match="checkpoint of method 'sccs', not 'cs2c': pass method='sccs'$") as refused:
        segment_arguments(checkpoint, method="cs2c")
    assert refused.value.for_command_line().endswith("not 'cs2c': pass --method sccs")
    with pytest.raises(OrgasegError, match="trained on filter-bank features"):
        segment_arguments(checkpoint, method="sccs", features="expand-stride")
    with pytest.raises(OrgasegError, match="not both"):
        segment_arguments(checkpoint, method="sccs", centers=checkpoint)
    with pytest.warns(OrgasegWarning, match="other structures"):  # orgaseg's own, as its other warnings
        arguments = segment_arguments(checkpoint, method="sccs", pixel_size=20.0)
    assert arguments["pixel_size"] == 20.0 and arguments["centers"] == str(checkpoint)


def test_a_checkpoint_trained_at_the_default_pixel_size_segments_by_its_rule(tmp_path):
    # the default (10 nm) coarsens only finer volumes: trained on a 5 nm and a 20 nm volume, the checkpoint
    # keeps a 20 nm volume at its own pixel size when it segments one, as training did, instead of upsampling it
    fine, _ = _disks(1, shape=(2, 256, 256))  # serial sections: in-plane features on both grids
    coarse, _ = _disks(2)
    record = orgaseg.train("sccs", [Volume(fine, voxel_size=(100.0, 5.0, 5.0)),
                                    Volume(coarse, voxel_size=(100.0, 20.0, 20.0))], tmp_path / "sccs.json", k=3,
                           preset="tiny", graphs=8, model_options=OPTIONS, seed=1)
    assert [v["working_voxel_size"] for v in record["training_volumes"]] == [[100.0, 10.0, 10.0],
                                                                             [100.0, 20.0, 20.0]]
    assert record["pixel_size_nm"] == 10.0 and record["coarsen_only"]
    arguments = segment_arguments(tmp_path / "sccs.json", method="sccs")
    for image, voxel_size, grid in ((coarse, (100.0, 20.0, 20.0), None),
                                    (fine, (100.0, 5.0, 5.0), [100.0, 10.0, 10.0])):
        seg = orgaseg.segment(image, voxel_size=voxel_size, **arguments)
        working = seg.provenance["config"]["working_grid"]
        assert (working and working["working_voxel_size"]) == grid
    # 40 nm sections: in-plane features on the 10 nm grid, 3D ones on the 20 nm grid: no one clusterer reads both
    with pytest.raises(OrgasegError, match=r"the training volumes give different features: an array \(18 channels at "
                                           r"40 x 10 x 10 nm\) and an array \(20 channels at 40 x 20 x 20 nm\)"):
        orgaseg.train("sccs", [Volume(fine, voxel_size=(40.0, 5.0, 5.0)),
                               Volume(coarse, voxel_size=(40.0, 20.0, 20.0))],
                      tmp_path / "mixed.json", k=3, preset="tiny", graphs=8, model_options=OPTIONS)


@pytest.mark.skipif(not (SHARED_DATA / "vnc").is_dir(), reason=f"real data not found at {SHARED_DATA / 'vnc'}")
def test_an_evaluation_volume_is_refused_as_training_input(tmp_path, monkeypatch):
    monkeypatch.setenv("ORGASEG_DATA_ROOT", str(SHARED_DATA))
    with pytest.raises(OrgasegError, match="evaluation volume of the vnc dataset"):
        orgaseg.train("sccs", [SHARED_DATA / "vnc" / "stack1" / "raw"], tmp_path / "a.json", k=2)
    assert not (tmp_path / "a.json").exists()
    # a crop of it (and a crop of that crop) is one too: the crops' provenance names where they come from
    from orgaseg.io.crop import crop_volume

    stack = orgaseg.open_volume(SHARED_DATA / "vnc" / "stack1" / "raw", voxel_size=(50, 4.6, 4.6))
    crop = crop_volume(stack, (slice(0, 2), slice(0, 256), slice(0, 256)), tmp_path / "crop.tif")
    again = crop_volume(orgaseg.open_volume(crop), (slice(0, 1), slice(0, 128), slice(0, 128)), tmp_path / "again.tif")
    for path in (crop, again):
        with pytest.raises(OrgasegError, match=rf"{path.name} \(a crop of .*\) is an evaluation volume of the vnc"):
            orgaseg.train("sccs", [path], tmp_path / "a.json", k=2)
