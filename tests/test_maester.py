"""MAESTER end to end: a tiny model trained on a phantom segments it, cover-and-stride and stride-only."""

import json
import warnings

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest

import orgaseg
from orgaseg.cli import main
from orgaseg.cluster.kmeans import fit_kmeans
from orgaseg.io import compute_normalization
from orgaseg.models.encoder import load_encoder
from orgaseg.viz import label_colors

CLASSES = ("cytoplasm", "nucleus", "mitochondria", "granules", "membrane")


@pytest.fixture(scope="module")
def checkpoint(phantom, tmp_path_factory):
    path = tmp_path_factory.mktemp("maester") / "tiny.pt"
    orgaseg.train("maester", phantom.train, path, preset="tiny", steps=300, device="cpu", seed=0)
    return path


def _merge(labels, item):
    report = orgaseg.evaluate(labels, item.reference, classes=CLASSES, background=["cytoplasm"])
    return report.to_dict()["merge"]


def test_tiny_model_segments_phantom_better_than_intensity_kmeans(phantom, checkpoint):
    # The phantom's nucleus differs from the cytoplasm by texture (speckled chromatin), not by mean grey
    # level: intensity k-means cannot find it, a briefly trained encoder does (Dice ~0.6 against 0.2-0.3
    # over seeds 0 and 1). Mitochondria and granules need longer training (see the README).
    item = phantom.evaluation[0]
    learned = orgaseg.segment(item.raw, method="maester", model=checkpoint, k=8, sample_size=50_000)
    raw = item.raw.read()
    normalized = compute_normalization(item.raw).apply(raw)
    intensity = fit_kmeans(normalized.reshape(-1, 1)[::4], 8, seed=0).predict(normalized[..., None])
    ours, flat = _merge(learned.labels, item), _merge(intensity, item)
    assert ours["per_class"]["nucleus"]["dice"] > flat["per_class"]["nucleus"]["dice"] + 0.2
    assert ours["per_class"]["cytoplasm"]["dice"] > flat["per_class"]["cytoplasm"]["dice"]
    assert learned.provenance["model"]["sha256"]
    assert learned.provenance["config"]["features"] == "cover-stride"
    assert learned.provenance["config"]["extractor"]["kind"] == "cover_stride"


def test_a_constant_volume_is_refused_by_segment_and_train_as_by_the_baseline(checkpoint, tmp_path):
    # its encoder's tokens vary with the position embeddings: k-means split a constant volume into K clusters
    constant = orgaseg.io.as_volume(np.full((2, 96, 96), 7, np.uint8), voxel_size=(10, 10, 10), path="blank.tif")
    refused = r"blank\.tif: every sampled intensity \(18,432 voxels\) is 7: the volume is constant, with nothing to segment"
    for method, model in (("maester", checkpoint), ("baseline", None)):
        with pytest.raises(orgaseg.OrgasegError, match=refused):
            orgaseg.segment(constant, method=method, model=model, k=3)
    with pytest.raises(orgaseg.OrgasegError, match=refused):
        orgaseg.train("maester", [constant], tmp_path / "blank.pt", preset="tiny", steps=2, device="cpu")
    assert not list(tmp_path.iterdir())


def test_stride_only_is_selectable_and_differs(phantom, checkpoint):
    item = phantom.evaluation[0]
    cover = orgaseg.segment(item.raw, method="maester", model=checkpoint, k=6, sample_size=20_000,
                            options={"keep": 8})
    stride = orgaseg.segment(item.raw, method="maester", model=checkpoint, k=6, sample_size=20_000,
                             features="stride-only")
    assert stride.provenance["config"]["extractor"]["mode"] == "stride"
    assert stride.labels.shape == cover.labels.shape
    assert np.mean(stride.labels == cover.labels) < 0.99


def test_cli_train_resume_segment_inspect(phantom, checkpoint, tmp_path, capsys):
    raw = tmp_path / "raw.npy"
    np.save(raw, phantom.train[0].read())
    ckpt = tmp_path / "cli.pt"
    common = ["--voxel-size", "20", "20", "20", "--quiet"]
    assert main(["train", str(raw), "--method", "maester", "--preset", "tiny", "--steps", "4", "-o", str(ckpt)] + common) == 0
    assert main(["train", str(raw), "--method", "maester", "--preset", "tiny", "--steps", "4", "-o", str(ckpt)] + common) == 2
    assert main(["train", str(raw), "--method", "maester", "--steps", "6", "--resume", "-o", str(ckpt)] + common) == 0
    out = tmp_path / "seg.ome.zarr"
    assert main(["segment", str(raw), "--method", "maester", "--model", str(checkpoint), "-k", "4", "--keep", "8",
                 "-o", str(out)] + common) == 0
    record = json.loads((tmp_path / "seg.ome.zarr.provenance.json").read_text())
    assert record["config"]["extractor"]["keep"] == 8
    figures = tmp_path / "inspect"
    assert main(["inspect", str(checkpoint), str(raw), "-o", str(figures), "-k", "4"] + common) == 0
    _check_reconstructions(mpimg.imread(figures / "reconstructions.png"), ratios=(0.25, 0.5, 0.75))
    # the embedding's tokens are coloured by the 4 k-means clusters, in the label palette
    embedding = mpimg.imread(figures / "embedding.png")
    assert embedding.shape[:2] == (500, 550)
    palette = label_colors(5)[:, :3]
    shown = [np.isclose(embedding[..., :3], colour, atol=0.05).all(axis=-1).mean() for colour in palette]
    assert min(shown[:4]) > 0.002 and shown[4] == 0
    before = (figures / "embedding.png").read_bytes()
    assert main(["inspect", str(checkpoint), str(raw), "-o", str(figures), "-k", "3"] + common) == 2  # kept
    assert (figures / "embedding.png").read_bytes() == before
    assert main(["inspect", str(checkpoint), str(raw), "-o", str(figures), "-k", "3", "--overwrite"] + common) == 0
    assert (figures / "embedding.png").read_bytes() != before
    assert sorted(p.name for p in figures.iterdir()) == ["embedding.png", "reconstructions.png"]  # no temporaries
    for bad_k in ("0", "6000"):  # 6000 is more than the 5000 tokens the embedding draws
        assert main(["inspect", str(checkpoint), str(raw), "-o", str(figures), "-k", bad_k, "--overwrite"] + common) == 2
        assert f"K = {bad_k}: the embedding's k-means needs" in capsys.readouterr().err
    assert main(["segment", str(raw), "--method", "maester", "-o", str(tmp_path / "x.tif")] + common) == 2


def test_inspect_colours_by_reference_classes_and_refuses_grey_levels_without_a_class_map(phantom, checkpoint,
                                                                                          tmp_path, capsys):
    item = phantom.evaluation[0]
    raw, classes = tmp_path / "raw.npy", tmp_path / "classes.npy"
    np.save(raw, item.raw.read())
    np.save(classes, item.reference.read())
    grey = tmp_path / "grey.npy"
    np.save(grey, item.reference.read().astype(np.uint8) * 40 + 15)  # a label file storing grey levels
    common = ["--voxel-size", "20", "20", "20", "--quiet", "-k", "3"]
    assert main(["inspect", str(checkpoint), str(raw), "--reference", str(grey), "-o", str(tmp_path / "a")] + common) == 2
    err = capsys.readouterr().err
    assert "are not class ids 0..C-1; give a class map" in err
    assert err.rstrip().endswith("a dataset's (--dataset vnc|cdeep3m-mito; orgaseg.datasets.CLASS_MAPS)")
    assert not (tmp_path / "a").exists()  # refused before the model ran or a figure was written
    from orgaseg.viz.inspect import inspect_model

    with pytest.raises(orgaseg.OrgasegError, match="are not class ids 0..C-1; give a class map") as refused:
        inspect_model(checkpoint, orgaseg.open_volume(raw, voxel_size=(20, 20, 20)), tmp_path / "a", k=3,
                      reference=orgaseg.open_volume(grey, voxel_size=(20, 20, 20)))
    assert str(refused.value).endswith("a dataset's (class_map=orgaseg.datasets.CLASS_MAPS[NAME], NAME 'vnc' or "
                                       "'cdeep3m-mito')")  # Python has no dataset= (walkthrough 17)
    n = len(phantom.classes)
    spec = ",".join(f"{40 * c + 15}={name}" for c, name in enumerate(phantom.classes))
    figures = {}
    for name, extra in (("ids", ["--reference", str(classes), "--classes", *phantom.classes]),
                        ("map", ["--reference", str(grey), "--class-map", spec])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["inspect", str(checkpoint), str(raw), "-o", str(tmp_path / name)] + extra + common) == 0
        # the reference (a .npy without a voxel size) only labels tokens: no warning asks for its voxel size
        said = capsys.readouterr().err + " ".join(str(w.message) for w in caught)
        assert "voxel size unknown" not in said, said
        figures[name] = mpimg.imread(tmp_path / name / "embedding.png")
    assert figures["ids"].shape[:2] == (500, 1100)  # two panels: clusters, reference classes
    np.testing.assert_array_equal(figures["ids"], figures["map"])  # the class map gives the same classes
    assert main(["inspect", str(checkpoint), str(raw), "--reference", str(classes), "--classes", *phantom.classes[:n - 1],
                 "-o", str(tmp_path / "b")] + common) == 2
    assert f"of the {n - 1} names given" in capsys.readouterr().err
    # a facility's stack: raw and reference classes side by side in one HDF5
    stack = tmp_path / "stack.h5"
    with h5py.File(stack, "w") as f:
        f["raw"], f["labels"] = item.raw.read(), item.reference.read()
    assert main(["inspect", str(checkpoint), str(stack), "--key", "raw", "--reference", str(stack), "--classes",
                 *phantom.classes, "-o", str(tmp_path / "h5")] + common) == 2
    assert "pass --reference-key NAME, one of the datasets: labels, raw" in capsys.readouterr().err
    assert main(["inspect", str(checkpoint), str(stack), "--key", "raw", "--reference", str(stack), "--reference-key",
                 "labels", "--classes", *phantom.classes, "-o", str(tmp_path / "h5")] + common) == 0
    np.testing.assert_array_equal(mpimg.imread(tmp_path / "h5" / "embedding.png"), figures["ids"])


def test_inspect_draws_fields_of_view_at_the_checkpoint_pixel_size(phantom, checkpoint, tmp_path, capsys,
                                                                    monkeypatch):
    from orgaseg.pipeline.resample import resampled_volume
    from orgaseg.viz import inspect as inspect_module

    coarse = tmp_path / "coarse.pt"  # trained at 40 nm on the 20 nm phantom
    orgaseg.train("maester", phantom.train, coarse, preset="tiny", steps=2, device="cpu", seed=0, pixel_size=40)
    item = phantom.evaluation[0]
    fine = orgaseg.io.as_volume(item.raw.read(), voxel_size=(20.0, 20.0, 20.0))
    paths = {"fine": tmp_path / "fine.npy", "coarse": tmp_path / "coarse.npy", "classes": tmp_path / "classes.npy",
             "coarse_classes": tmp_path / "coarse_classes.npy"}
    np.save(paths["fine"], item.raw.read())
    np.save(paths["coarse"], resampled_volume(fine, 40.0).read())  # the same volume at the checkpoint's 40 nm
    classes = item.reference.read()
    np.save(paths["classes"], classes)
    # a working pixel j lies at input coordinate 2j + 1/2: its nearest voxel is 2j + 1 (ties to the higher)
    np.save(paths["coarse_classes"], classes[1::2, 1::2, 1::2])
    common = ["--quiet", "-k", "3", "--classes", *phantom.classes]
    # the intensity range is the input volume's, as segment and train take it (not the resampled volume's)
    drawn = []
    draw = inspect_module._fields_of_view
    monkeypatch.setattr(inspect_module, "_fields_of_view", lambda volume, normalization, *rest: (
        drawn.append((volume.voxel_size, normalization)) or draw(volume, normalization, *rest)))
    assert main(["inspect", str(coarse), str(paths["fine"]), "--voxel-size", "20", "20", "20", "-o",
                 str(tmp_path / "drawn")] + common) == 0
    own = orgaseg.io.compute_normalization(fine, seed=0)
    assert drawn == [((40.0, 40.0, 40.0), own)] and own != orgaseg.io.compute_normalization(resampled_volume(fine, 40.0))
    # with one intensity range for both, the fine volume's fields of view are the coarse volume's at 40 nm
    monkeypatch.setattr(inspect_module, "compute_normalization", lambda volume, seed: own)
    for name, size in (("fine", "20"), ("coarse", "40")):
        assert main(["inspect", str(coarse), str(paths[name]), "--voxel-size", size, size, size, "--reference",
                     str(paths["classes" if name == "fine" else "coarse_classes"]), "-o", str(tmp_path / name)]
                    + common) == 0
    for figure in ("reconstructions.png", "embedding.png"):  # the fine volume is read as the model learned it
        np.testing.assert_array_equal(mpimg.imread(tmp_path / "fine" / figure), mpimg.imread(tmp_path / "coarse" / figure))
    monkeypatch.undo()
    assert main(["inspect", str(coarse), str(paths["fine"]), "--voxel-size", "20", "20", "20", "--pixel-size",
                 "native", "-o", str(tmp_path / "native"), "--quiet"]) == 0
    assert not np.array_equal(mpimg.imread(tmp_path / "native" / "reconstructions.png"),
                              mpimg.imread(tmp_path / "coarse" / "reconstructions.png"))

    def said(*argv: str) -> str:
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["inspect", *argv, "--quiet"]) == 0
        return capsys.readouterr().err + " ".join(str(w.message) for w in caught)

    # a voxel size that is a guess is not resampled, and that is said
    assert "its fields of view are drawn at its own pixels, not at 40 nm" in \
        said(str(coarse), str(paths["fine"]), "-o", str(tmp_path / "guess"))
    # a native-pixel checkpoint (trained on 20 nm pixels) reading 40 nm pixels warns as segment does
    assert "was trained on 20 nm pixels (its volumes' own) and reads this volume's 40 nm pixels" in \
        said(str(checkpoint), str(paths["coarse"]), "--voxel-size", "40", "40", "40", "-o", str(tmp_path / "wide"))


def _check_reconstructions(image: np.ndarray, ratios: tuple[float, ...]) -> None:
    """4 fields of view in rows; columns: the input, then per ratio the masked input and its reconstruction."""
    assert image.shape[:2] == (4 * 170, (1 + 2 * len(ratios)) * 160)
    grey = image[..., :3]
    assert np.ptp(grey, axis=-1).max() < 0.01  # grey levels only
    # panels are the columns inked in the rows that hold fields of view; gaps are white
    ink = (grey < 0.98).any(axis=-1)
    rows = ink[ink.mean(axis=1) > 0.1]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (rows.mean(axis=0) > 0.1).astype(int), [0]])))
    white = [1 - rows[:, a:b].mean() for a, b in zip(edges[0::2], edges[1::2])]
    assert len(white) == 1 + 2 * len(ratios)
    # masked tokens are blank, by the ratio; the input and the reconstructions are not
    np.testing.assert_allclose(white[1::2], ratios, atol=0.1)
    assert max(white[0::2]) < 0.05


def test_model_options_change_the_preset_and_travel_in_the_checkpoint(phantom, tmp_path, capsys):
    raw = tmp_path / "raw.npy"
    np.save(raw, phantom.train[0].read())
    ckpt = tmp_path / "plain.pt"
    common = ["--method", "maester", "--preset", "tiny", "--steps", "2", "--voxel-size", "20", "20", "20", "--quiet"]
    assert main(["train", str(raw), "-o", str(ckpt), "--model-option", "norm_pix_loss=false",
                 "--model-option", "mask_ratio=0.75"] + common) == 0
    model = load_encoder(ckpt).model
    assert model.config.norm_pix_loss is False and model.config.mask_ratio == 0.75
    assert model.config.embed_dim == 32  # the rest is still the tiny preset
    for bad, message in (("mask_ratio=1.5", "mask_ratio must be in (0, 1)"), ("depht=3", "depht unknown"),
                         ("input_std=2", "input_std unknown"), ("norm_pix_loss", "NAME=VALUE"),
                         ("depth=six", "depth must be an integer, got 'six'")):
        assert main(["train", str(raw), "-o", str(tmp_path / "bad.pt"), "--model-option", bad] + common) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()
    assert main(["train", str(raw), "-o", str(ckpt), "--method", "maester", "--resume", "--model-option",
                 "mask_ratio=0.5", "--voxel-size", "20", "20", "20", "--quiet"]) == 2
    assert "cannot change on --resume" in capsys.readouterr().err


def test_a_native_pixel_checkpoint_warns_on_a_volume_of_other_pixels(phantom, checkpoint):
    from orgaseg.io.volume import Volume
    from orgaseg.models.checkpoint import load_checkpoint
    from orgaseg.pipeline.stages import resolve_stages

    record = load_checkpoint(checkpoint)
    assert record["pixel_size_nm"] is None  # trained on the phantom's own pixels
    trained = record["training_volumes"][0]["voxel_size"]
    stages = resolve_stages("maester", model=checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stages.grid(Volume(np.zeros((2, 32, 32), np.float32), voxel_size=trained))  # its own pixels: quiet
        assumed = Volume(np.zeros((2, 32, 32), np.float32), voxel_size=(1, 1, 1), attrs={"voxel_size_assumed": True})
        stages.grid(assumed)  # unknown pixels: nothing to compare
    wider = [trained[0], 2.2 * trained[1], 2.2 * trained[2]]
    with pytest.warns(UserWarning, match=rf"trained on {trained[2]:g} nm pixels .* cover 2.2x the width .* "
                                         rf"a pixel size of {trained[2]:g} nm \(pixel_size=NM\)"):
        stages.grid(Volume(np.zeros((2, 32, 32), np.float32), voxel_size=wider))


def test_the_paper_preset_trains_as_the_reference_code():
    # bowang-lab/MAESTER: configs/default.yaml (lr 1.5e-4, reg_w 1e-5, batch 32, 2800 epochs),
    # pretrain_engine.py (AdamW, torch's default betas, no scheduler), dataset.py (20,000 fields of view an
    # epoch), scripts/slurm_run.sh (4 GPUs)
    from orgaseg.methods.maester import TRAIN_PRESETS
    from orgaseg.training import learning_rate

    config = TRAIN_PRESETS["paper"]
    assert config.batch_size == 4 * 32 and config.steps * config.batch_size == 2800 * 20_000
    assert config.weight_decay == 1e-5 and config.betas == (0.9, 0.999)
    for total in (config.steps, 900):  # the full schedule and the gpu benchmark's
        assert {learning_rate(step, total, config) for step in (0, 1, total // 2, total - 1)} == {1.5e-4}
