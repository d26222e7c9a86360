"""Dataset layouts: data model, class mappings, BetaSeg and CellMap on tiny written layouts, real data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from orgaseg.datasets import DATASETS, betaseg_reference, crop_reference, default_data_root, load_dataset
from orgaseg.datasets.base import BlockFunctionArray, SubArray, lookup_table
from orgaseg.datasets.betaseg import GRANULES, MITOCHONDRIA, NUCLEUS, UNRECOGNIZED
from orgaseg.datasets.cellmap import Encoding, pyramid_levels
from orgaseg.errors import OrgasegError
from orgaseg.io import open_volume
from orgaseg.io.volume import Volume
from orgaseg.labels import IGNORE_LABEL

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "vnc").is_dir(), reason=f"real data not found at {SHARED_DATA} (a clone has no ../shared)"
)


# ---------------------------------------------------------------- registry, roots, errors


def test_registry_names():
    assert set(DATASETS) == {"vnc", "cdeep3m-mito", "betaseg", "cellmap", "phantom"}


def test_unknown_dataset_lists_names():
    with pytest.raises(OrgasegError, match=r"unknown dataset 'isbi'.*vnc, cdeep3m-mito, betaseg, cellmap, phantom"):
        load_dataset("isbi")


def test_unknown_option_is_named(tmp_path):
    with pytest.raises(OrgasegError, match=r"no option\(s\) \['clases'\].*classes"):
        load_dataset("cellmap", tmp_path, clases=("mito",))


@pytest.mark.parametrize("name", ["vnc", "cdeep3m-mito", "betaseg"])
def test_missing_root_names_path_and_flag(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(OrgasegError) as error:
        load_dataset(name, root)
    assert str(root) in str(error.value)
    assert "data_root=PATH" in str(error.value) and "--data-root PATH" in error.value.for_command_line()


def test_missing_dataset_folder_names_it(tmp_path):
    with pytest.raises(OrgasegError, match=str(tmp_path / "vnc")):
        load_dataset("vnc", tmp_path)


def test_default_data_root_from_environment_then_cwd_then_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("ORGASEG_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("ORGASEG_DATA_ROOT")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert default_data_root() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.chdir(tmp_path)  # no ../shared/data here: the installed repository's neighbour
    if SHARED_DATA.is_dir():
        assert default_data_root() == SHARED_DATA
    else:
        assert default_data_root() == (tmp_path / ".." / "shared" / "data").resolve()


# ---------------------------------------------------------------- shared helpers


def test_lookup_table_defaults_to_ignore():
    table = lookup_table({255: 0, 191: 2})
    assert table.dtype == np.uint8 and table.shape == (256,)
    assert table[255] == 0 and table[191] == 2 and table[7] == IGNORE_LABEL


def test_sub_array_is_the_box_of_the_array():
    data = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    view = SubArray(data, (slice(1, 4), slice(2, 6), slice(3, 7)))
    assert view.shape == (3, 4, 4)
    np.testing.assert_array_equal(view[:, :, :], data[1:4, 2:6, 3:7])
    np.testing.assert_array_equal(view[1:3, ::2, 1:], data[1:4, 2:6, 3:7][1:3, ::2, 1:])
    np.testing.assert_array_equal(view[-1:, :, :2], data[3:4, 2:6, 3:5])


def test_block_function_array_reads_each_source_region():
    a = Volume(np.arange(24).reshape(2, 3, 4))
    b = Volume(np.ones((2, 3, 4), dtype=int))
    combined = BlockFunctionArray({"a": a, "b": b}, lambda a, b: (a + 10 * b).astype(np.int16), np.int16)
    assert combined.shape == (2, 3, 4) and combined.dtype == np.int16
    np.testing.assert_array_equal(combined[1:2, :, 2:], np.arange(24).reshape(2, 3, 4)[1:2, :, 2:] + 10)
    with pytest.raises(OrgasegError, match="shape"):
        BlockFunctionArray({"a": a, "c": Volume(np.ones((2, 3, 5)), path="c.tif")}, lambda a, c: a, np.int16)


# ---------------------------------------------------------------- BetaSeg

SHAPE = (8, 16, 16)


def _betaseg_masks() -> dict[str, np.ndarray]:
    """Masks with hand-checkable overlaps (see the expected values in the tests)."""
    m = {name: np.zeros(SHAPE, np.uint16) for name in ("cell", "nucleus", "granules", "mitochondria")}
    m["cell"][:, 2:14, 2:14] = 1
    m["nucleus"][:, 4:8, 4:8] = 3  # an instance id, not 1
    m["granules"][:, 10:12, 4:6] = 1
    m["granules"][0, 4:6, 6:10] = 2  # half inside the nucleus
    m["mitochondria"][:, 10:12, 5:9] = 255  # x = 5 overlaps a granule
    m["mitochondria"][:, 0:2, 0:2] = 255  # outside the cell
    m["centrioles"] = np.zeros(SHAPE, np.uint8)
    m["centrioles"][1, 5, 5] = 1  # inside the nucleus
    m["golgi"] = np.zeros(SHAPE, np.uint8)
    m["golgi"][2, 10, 8] = 1  # inside a mitochondrion
    m["golgi"][3, 10, 4] = 1  # inside a granule
    return m


def _check_betaseg_reference(ref: np.ndarray) -> None:
    assert ref.dtype == np.uint8 and ref.shape == SHAPE
    assert ref[0, 5, 6] == NUCLEUS  # nucleus beats granules
    assert ref[0, 5, 9] == GRANULES
    assert ref[3, 10, 5] == GRANULES  # granules beat mitochondria
    assert ref[3, 10, 7] == MITOCHONDRIA
    assert ref[1, 5, 5] == UNRECOGNIZED  # centriole inside the nucleus
    assert ref[2, 10, 8] == UNRECOGNIZED  # golgi inside a mitochondrion
    assert ref[3, 10, 4] == UNRECOGNIZED  # golgi inside a granule
    assert ref[0, 3, 3] == UNRECOGNIZED  # cell only
    assert ref[0, 0, 0] == IGNORE_LABEL  # mitochondrion outside the cell
    assert ref[5, 15, 15] == IGNORE_LABEL
    counts = np.bincount(ref.ravel(), minlength=256)
    assert counts[NUCLEUS] == 8 * 4 * 4 - 1
    assert counts[GRANULES] == 8 * 2 * 2 + 2 * 2 - 1
    assert counts[MITOCHONDRIA] == 8 * 2 * 4 - 8 * 2 - 1
    assert counts[IGNORE_LABEL] == 8 * 16 * 16 - 8 * 12 * 12
    assert counts[UNRECOGNIZED] == 8 * 12 * 12 - counts[NUCLEUS] - counts[GRANULES] - counts[MITOCHONDRIA]


def test_betaseg_reference_priorities():
    _check_betaseg_reference(betaseg_reference(**_betaseg_masks()))


def test_betaseg_reference_optional_masks_absent():
    masks = _betaseg_masks()
    del masks["centrioles"], masks["golgi"]
    ref = betaseg_reference(**masks)
    assert ref[1, 5, 5] == NUCLEUS and ref[2, 10, 8] == MITOCHONDRIA


def test_betaseg_microtubules_beat_granules_not_nucleus():
    masks = _betaseg_masks()
    masks["microtubules"] = np.zeros(SHAPE, np.uint8)
    masks["microtubules"][0, 5, 5:10] = 1  # through nucleus (5..7) and a granule (8, 9)
    ref = betaseg_reference(**masks)
    assert list(ref[0, 5, 5:10]) == [NUCLEUS] * 3 + [UNRECOGNIZED] * 2


def _write_betaseg(root: Path, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = _betaseg_masks()
    files = {
        "cell": "membrane_full_mask",
        "nucleus": "nucleus_mask",
        "granules": "granules",
        "mitochondria": "mitochondria_mask",
        "centrioles": "centrioles",
        "golgi": "golgi_corrected",
    }
    sources = {}
    for c in range(1, 5):
        cell = f"high_c{c}"
        (root / cell).mkdir(parents=True)
        sources[cell] = rng.integers(0, 256, SHAPE, dtype=np.uint8)
        tifffile.imwrite(root / cell / f"{cell}_source.tif", sources[cell])
        for name, suffix in files.items():
            if name not in skip:
                tifffile.imwrite(root / cell / f"{cell}_{suffix}.tif", masks[name])
    return sources


def test_betaseg_layout(tmp_path):
    sources = _write_betaseg(tmp_path / "betaseg")
    dataset = load_dataset("betaseg", tmp_path)
    assert dataset.classes == ("unrecognized", "nucleus", "granules", "mitochondria")
    assert dataset.background == ("unrecognized",)
    assert dataset.voxel_size == (16.0, 16.0, 16.0)
    assert any("16 nm" in note for note in dataset.notes)
    assert len(dataset.train) == 3
    np.testing.assert_array_equal(dataset.train[2].read(), sources["high_c3"])
    (item,) = dataset.evaluation
    assert item.name == "high_c4"
    np.testing.assert_array_equal(item.raw.read(), sources["high_c4"])
    _check_betaseg_reference(item.reference.read())
    # blockwise reads agree with the whole
    region = (slice(2, 5), slice(3, 12), slice(0, 9))
    np.testing.assert_array_equal(item.reference.read(region), item.reference.read()[region])
    mask = item.mask.read()
    assert mask.dtype == bool and mask.sum() == 8 * 12 * 12


def test_betaseg_voxel_size_option_and_dataset_folder_as_root(tmp_path):
    _write_betaseg(tmp_path)
    dataset = load_dataset("betaseg", tmp_path, voxel_size=(20, 8, 8))
    assert dataset.voxel_size == (20.0, 8.0, 8.0)
    assert dataset.evaluation[0].raw.voxel_size == (20.0, 8.0, 8.0)
    assert dataset.notes == []


def test_betaseg_voxel_size_from_tiff_metadata(tmp_path):
    _write_betaseg(tmp_path / "betaseg")
    source = tmp_path / "betaseg" / "high_c4" / "high_c4_source.tif"
    tifffile.imwrite(
        source,
        np.zeros(SHAPE, np.uint8),
        imagej=True,
        resolution=(100, 100),  # pixels per micrometre: 10 nm
        metadata={"axes": "ZYX", "spacing": 0.02, "unit": "um"},
    )
    dataset = load_dataset("betaseg", tmp_path)
    assert dataset.voxel_size == (20.0, 10.0, 10.0)
    assert dataset.train[0].voxel_size == dataset.evaluation[0].reference.voxel_size == (20.0, 10.0, 10.0)
    assert dataset.notes == []


def test_betaseg_without_z_spacing_in_its_imagej_metadata_stays_isotropic(tmp_path):
    # ImageJ reads a stack without "spacing" as 1 unit deep: 1000 nm for one calibrated in um; BetaSeg is isotropic
    _write_betaseg(tmp_path / "betaseg")
    for c in range(1, 5):
        tifffile.imwrite(tmp_path / "betaseg" / f"high_c{c}" / f"high_c{c}_source.tif", np.zeros(SHAPE, np.uint8),
                         imagej=True, resolution=(62.5, 62.5), metadata={"axes": "ZYX", "unit": "um"})  # 16 nm
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = load_dataset("betaseg", tmp_path)
    assert dataset.voxel_size == (16.0, 16.0, 16.0)
    assert dataset.train[0].voxel_size == dataset.evaluation[0].reference.voxel_size == (16.0, 16.0, 16.0)
    assert any("1000 nm" in note for note in dataset.notes)


def test_betaseg_missing_required_mask_names_the_file(tmp_path):
    _write_betaseg(tmp_path / "betaseg", skip=("granules",))
    with pytest.raises(OrgasegError, match="high_c4_granules.tif"):
        load_dataset("betaseg", tmp_path)


def test_betaseg_missing_optional_masks_are_fine(tmp_path):
    _write_betaseg(tmp_path / "betaseg", skip=("centrioles", "golgi"))
    ref = load_dataset("betaseg", tmp_path).evaluation[0].reference.read()
    assert ref[1, 5, 5] == NUCLEUS and ref[2, 10, 8] == MITOCHONDRIA


# ---------------------------------------------------------------- CellMap

SEMANTIC = {"absent": 0, "present": 1, "unknown": 255}
INSTANCE = {"absent": 0, "unknown": 255}


def test_crop_reference_encodings_and_priority():
    nuc = np.zeros((2, 2, 3), np.uint8)
    mito = np.zeros((2, 2, 3), np.uint16)
    nuc[0, 0, :] = 1
    nuc[1, 1, 2] = 255  # not annotated
    mito[0, 0, 0] = 4  # overlaps the nucleus
    mito[0, 1, 1] = 9
    mito[1, 0, 0] = 255  # not annotated, nothing present -> ignored
    mito[0, 0, 2] = 255  # not annotated, but the nucleus is present there
    encodings = [Encoding(**SEMANTIC), Encoding(**INSTANCE)]
    ref = crop_reference([nuc, mito], encodings)
    expected = np.array([[[1, 1, 1], [0, 2, 0]], [[IGNORE_LABEL, 0, 0], [0, 0, IGNORE_LABEL]]], np.uint8)
    np.testing.assert_array_equal(ref, expected)
    reversed_ref = crop_reference([mito, nuc], encodings[::-1])
    assert reversed_ref[0, 0, 0] == 1 and reversed_ref[0, 0, 1] == 2
    # without encoding metadata, > 0 is present
    assert crop_reference([nuc], [Encoding()])[1, 1, 2] == 1


def _multiscales(scales, translations) -> list:
    return [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": [
                {
                    "path": f"s{i}",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": list(s)},
                        {"type": "translation", "translation": list(t)},
                    ],
                }
                for i, (s, t) in enumerate(zip(scales, translations))
            ],
        }
    ]


def _pyramid(root, path, arrays, scales, translations, encoding=None):
    group = root.require_group(path)
    group.attrs["multiscales"] = _multiscales(scales, translations)
    if encoding is not None:
        group.attrs["cellmap"] = {"annotation": {"annotation_type": {"encoding": encoding}}}
    for i, data in enumerate(arrays):
        group.create_array(f"s{i}", data=data, chunks=tuple(max(1, n // 2) for n in data.shape))


EM_S0 = np.random.default_rng(1).integers(0, 256, (10, 24, 32), dtype=np.uint8)
EM_TRANSLATION = (80.0, 40.0, 20.0)  # nm, centre of EM s0 voxel 0
CROP3_OFFSET = (2, 5, 7)  # EM s0 voxels
CROP3_SHAPE = (4, 6, 8)


def _crop3_masks():
    nuc = np.zeros(CROP3_SHAPE, np.uint8)
    nuc[0, :, :4] = 1
    nuc[3, 0, 0] = 255
    mito = np.zeros(CROP3_SHAPE, np.uint16)
    mito[0, 0, 0] = 5
    mito[1, 1:3, 1:3] = 2
    mito[2, 4, 6] = 7
    mito[3, 5, 7] = 255
    ves = np.zeros(CROP3_SHAPE, np.uint8)
    ves[2, 2, 2] = 1
    return {"nuc": nuc, "mito": mito, "ves": ves}


def _write_cellmap(path: Path) -> None:
    root = zarr.open_group(path, mode="w", zarr_format=2)
    em_s1 = EM_S0[::2, ::2, ::2]
    em_s1_translation = tuple(t + s / 2 for t, s in zip(EM_TRANSLATION, (8, 4, 4)))
    _pyramid(
        root, "recon-1/em/fibsem-uint8", [EM_S0, em_s1], [(8, 4, 4), (16, 8, 8)], [EM_TRANSLATION, em_s1_translation]
    )
    # crop3 is annotated at 4 x 2 x 2 nm (s0) and 8 x 4 x 4 nm (s1, the EM's s0 scale)
    s1_translation = tuple(t + o * s for t, o, s in zip(EM_TRANSLATION, CROP3_OFFSET, (8, 4, 4)))
    s0_translation = tuple(t - s / 4 for t, s in zip(s1_translation, (8, 4, 4)))
    fine_shape = tuple(2 * n for n in CROP3_SHAPE)
    crops = "recon-1/labels/groundtruth"
    for name, data in _crop3_masks().items():
        encoding = INSTANCE if name == "mito" else SEMANTIC
        _pyramid(
            root, f"{crops}/crop3/{name}", [np.zeros(fine_shape, data.dtype), data],
            [(4, 2, 2), (8, 4, 4)], [s0_translation, s1_translation], encoding,
        )
    # crop10: at the EM s0 scale only, at the origin, without "ves"
    for name in ("nuc", "mito"):
        data = np.zeros((2, 3, 4), np.uint8)
        data[1, 2, 3] = 1
        _pyramid(root, f"{crops}/crop10/{name}", [data], [(8, 4, 4)], [EM_TRANSLATION], SEMANTIC)
    _pyramid(root, f"{crops}/crop3/all", [np.zeros(CROP3_SHAPE, np.uint8)], [(8, 4, 4)], [s1_translation])


def test_pyramid_levels_reads_scale_and_translation(tmp_path):
    path = tmp_path / "jrc_test.zarr"
    _write_cellmap(path)
    levels = pyramid_levels(path, "recon-1/labels/groundtruth/crop3/mito")
    assert [lv.key for lv in levels] == [f"recon-1/labels/groundtruth/crop3/mito/s{i}" for i in (0, 1)]
    assert levels[1].scale == (8.0, 4.0, 4.0)
    assert levels[1].translation == (80.0 + 16.0, 40.0 + 20.0, 20.0 + 28.0)


def test_cellmap_crop_alignment_and_reference(tmp_path):
    path = tmp_path / "jrc_test.zarr"
    _write_cellmap(path)
    dataset = load_dataset("cellmap", tmp_path, classes=("nuc", "mito"))
    assert dataset.classes == ("other", "nuc", "mito")
    assert dataset.background == ("other",)
    assert dataset.voxel_size == (8.0, 4.0, 4.0)
    assert [item.name for item in dataset.evaluation] == ["crop3", "crop10"]
    np.testing.assert_array_equal(dataset.train[0].read(), EM_S0)

    crop3 = dataset.evaluation[0]
    assert crop3.raw.shape == CROP3_SHAPE == crop3.reference.shape
    z, y, x = CROP3_OFFSET
    np.testing.assert_array_equal(crop3.raw.read(), EM_S0[z : z + 4, y : y + 6, x : x + 8])
    part = crop3.raw.read((slice(1, 3), slice(None), slice(5, 8)))
    np.testing.assert_array_equal(part, EM_S0[z + 1 : z + 3, y : y + 6, x + 5 : x + 8])
    ref = crop3.reference.read()
    expected = np.zeros(CROP3_SHAPE, np.uint8)
    expected[0, :, :4] = 1  # nuc, including the voxel mito also claims
    expected[1, 1:3, 1:3] = 2
    expected[2, 4, 6] = 2
    expected[3, 0, 0] = IGNORE_LABEL  # nuc unknown there
    expected[3, 5, 7] = IGNORE_LABEL  # mito unknown there
    np.testing.assert_array_equal(ref, expected)

    crop10 = dataset.evaluation[1]
    np.testing.assert_array_equal(crop10.raw.read(), EM_S0[:2, :3, :4])
    assert crop10.reference.read()[1, 2, 3] == 1 and crop10.reference.read().sum() == 1


def test_cellmap_default_classes_are_shared_by_all_crops(tmp_path):
    _write_cellmap(tmp_path / "jrc_test.zarr")
    assert load_dataset("cellmap", tmp_path / "jrc_test.zarr").classes == ("other", "nuc", "mito")
    only3 = load_dataset("cellmap", tmp_path, crops=[3])
    assert only3.classes == ("other", "nuc", "mito", "ves")
    assert only3.evaluation[0].reference.read()[2, 2, 2] == 3


def test_cellmap_takes_one_class_and_one_crop_given_alone(tmp_path):
    # "mito" was read as the classes m, i, t, o, "crop3" as crops c, r, ..., and 3 failed as "not iterable"
    _write_cellmap(tmp_path / "jrc_test.zarr")
    expected = load_dataset("cellmap", tmp_path, classes=["mito"], crops=[3])
    for crop in ("crop3", 3):
        one = load_dataset("cellmap", tmp_path, classes="mito", crops=crop)
        assert one.classes == expected.classes == ("other", "mito")
        assert [item.name for item in one.evaluation] == ["crop3"]


def test_cellmap_errors(tmp_path):
    _write_cellmap(tmp_path / "jrc_test.zarr")
    with pytest.raises(OrgasegError, match=r"crop10 has no class group\(s\) \['ves'\]"):
        load_dataset("cellmap", tmp_path, classes=("nuc", "ves"))
    with pytest.raises(OrgasegError, match=r"no label crop\(s\) \['crop4'\]"):
        load_dataset("cellmap", tmp_path, crops=[4])
    with pytest.raises(OrgasegError, match="no EM level"):
        load_dataset("cellmap", tmp_path, level=1)  # crop10 has no 16 nm level
    with pytest.raises(OrgasegError, match="expected one .zarr or .n5 container, found none"):
        load_dataset("cellmap", tmp_path / "jrc_test.zarr" / "recon-1")


def _n5_write(folder: Path, data: np.ndarray, attributes: dict | None = None) -> None:
    import tensorstore

    # N5 lists dimensions fastest first: store the transpose of a zyx array
    store = tensorstore.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(folder)},
            "metadata": {
                "dimensions": list(data.shape[::-1]),
                "blockSize": [4, 4, 4],
                "dataType": str(data.dtype),
                "compression": {"type": "raw"},
            },
            "create": True,
        }
    ).result()
    store.write(data.T).result()
    if attributes:
        document = json.loads((folder / "attributes.json").read_text())
        (folder / "attributes.json").write_text(json.dumps({**document, **attributes}))


def _n5_group(folder: Path, attributes: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attributes.json").write_text(json.dumps(attributes))


def _cosem_multiscales(scale, translate) -> dict:
    transform = {"axes": ["z", "y", "x"], "scale": list(scale), "translate": list(translate), "units": ["nm"] * 3}
    return {"multiscales": [{"datasets": [{"path": "s0", "transform": transform}]}]}


def test_cellmap_n5_container(tmp_path):
    path = tmp_path / "cellmap" / "jrc_test.n5"
    _n5_group(path, {"n5": "2.0.0"})
    _n5_group(path / "recon-1/em/fibsem-uint8", _cosem_multiscales((8, 4, 4), (0, 0, 0)))
    _n5_write(path / "recon-1/em/fibsem-uint8/s0", EM_S0)
    crop = path / "recon-1/labels/groundtruth/crop1/mito"
    encoding = {"cellmap": {"annotation": {"annotation_type": {"encoding": INSTANCE}}}}
    _n5_group(crop, {**_cosem_multiscales((8, 4, 4), (8, 12, 4)), **encoding})  # voxels (1, 3, 1)
    mito = np.zeros((3, 5, 7), np.uint8)
    mito[2, 4, 6] = 9
    mito[0, 0, 1] = 255
    _n5_write(crop / "s0", mito)
    dataset = load_dataset("cellmap", tmp_path)
    assert dataset.classes == ("other", "mito") and dataset.voxel_size == (8.0, 4.0, 4.0)
    (item,) = dataset.evaluation
    np.testing.assert_array_equal(dataset.train[0].read(), EM_S0)
    np.testing.assert_array_equal(item.raw.read(), EM_S0[1:4, 3:8, 1:8])
    ref = item.reference.read()
    assert ref[2, 4, 6] == 1 and ref[0, 0, 1] == IGNORE_LABEL
    assert np.count_nonzero(ref == 0) == ref.size - 2


# ---------------------------------------------------------------- phantom


def test_phantom_dataset():
    from orgaseg.synthetic import make_cell

    shape, voxel_size = (16, 48, 48), (8, 8, 8)
    dataset = load_dataset("phantom", shape=shape, voxel_size=voxel_size, seed=3)
    assert dataset.classes == ("cytoplasm", "nucleus", "mitochondria", "granules", "membrane")
    assert dataset.background == ("cytoplasm",)
    assert dataset.voxel_size == (8.0, 8.0, 8.0)
    (item,) = dataset.evaluation
    assert item.raw.shape == item.reference.shape == shape
    test, train = make_cell(shape, voxel_size, seed=3), make_cell(shape, voxel_size, seed=4)
    np.testing.assert_array_equal(item.raw.read(), test.raw)
    np.testing.assert_array_equal(dataset.train[0].read(), train.raw)
    ref = item.reference.read()
    inside = test.labels > 0
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(ref[~inside], IGNORE_LABEL)
    np.testing.assert_array_equal(ref[inside], test.labels[inside] - 1)


# ---------------------------------------------------------------- real data (../shared/data)


def _class_counts(item) -> np.ndarray:
    return np.bincount(item.reference.read().ravel(), minlength=256)


@needs_shared
def test_vnc_real_layout():
    dataset = load_dataset("vnc", SHARED_DATA)
    assert dataset.classes == ("intracellular", "membrane", "mitochondria", "extracellular")
    assert dataset.organelles == ("membrane", "mitochondria")
    assert dataset.voxel_size == (50.0, 4.6, 4.6)
    (item,) = dataset.evaluation
    assert item.raw.shape == item.reference.shape == (20, 1024, 1024)
    assert dataset.train[0].shape == (20, 1024, 1024)
    assert item.raw.voxel_size == (50.0, 4.6, 4.6)
    counts = _class_counts(item)
    total = counts.sum()
    print("vnc stack1 class counts", dict(zip(dataset.classes, counts[:4].tolist())), "ignored", counts[IGNORE_LABEL])
    assert (counts[:4] > 0).all()
    assert 0.01 < counts[2] / total < 0.20  # mitochondria share
    assert counts[IGNORE_LABEL] > 0  # synapses
    assert counts[IGNORE_LABEL] / total < 0.05
    assert counts[4:IGNORE_LABEL].sum() == 0
    # every grey level is a documented one; the ignored voxels are exactly the synapses (223)
    labels = open_volume(SHARED_DATA / "vnc" / "stack1" / "labels", voxel_size=50)
    grey = np.bincount(labels.read().ravel(), minlength=256)
    documented = [0, 32, 64, 96, 128, 159, 191, 223, 255]
    assert grey.sum() - grey[documented].sum() == 0
    assert counts[IGNORE_LABEL] == grey[223]


@needs_shared
def test_cdeep3m_real_layout():
    dataset = load_dataset("cdeep3m-mito", SHARED_DATA)
    assert dataset.classes == ("other", "mitochondria")
    assert dataset.voxel_size == (40.0, 5.9, 5.9)
    assert any("assumption" in note for note in dataset.notes)
    assert [item.name for item in dataset.evaluation] == ["training", "validation"]
    assert dataset.evaluation[0].raw.shape == dataset.evaluation[0].reference.shape == (20, 1024, 1024)
    assert dataset.evaluation[1].raw.shape == (10, 1024, 1024)
    assert dataset.train[0].shape == (11, 1024, 1024)
    for item in dataset.evaluation:
        counts = _class_counts(item)
        print(f"cdeep3m {item.name} class counts", dict(zip(dataset.classes, counts[:2].tolist())))
        assert counts[IGNORE_LABEL] == 0 and counts[2:].sum() == 0
        assert 0.01 < counts[1] / counts.sum() < 0.20


def test_cdeep3m_image_label_mismatch_is_reported(tmp_path):
    root = tmp_path / "cdeep3m-mito"
    (root / "testset").mkdir(parents=True)
    for split, numbers in (("training", (20, 21)), ("validation", (50,))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for n in numbers:
            tifffile.imwrite(root / split / "images" / f"images.{n:03d}.tif", np.zeros((4, 4), np.uint8))
        tifffile.imwrite(root / split / "labels" / "mitos_3D.020.tif", np.zeros((4, 4), np.uint8))
        tifffile.imwrite(root / split / "labels" / "mitos_3D.022.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(root / "testset" / "images.080.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(OrgasegError, match=r"images without labels: \[21\], labels without images: \[22\]"):
        load_dataset("cdeep3m-mito", tmp_path)


def test_a_reference_unlike_the_datasets_labels_is_warned_about(tmp_path, capsys):
    import warnings

    from orgaseg.cli import main
    from orgaseg.datasets import check_reference_values
    from orgaseg.errors import OrgasegWarning
    from orgaseg.io.volume import Volume

    binary = np.zeros((3, 20, 20), np.uint8)
    binary[:, 5:10, 5:10] = 255
    grey = np.tile(np.array([0, 32, 64, 96, 128, 159, 191, 223, 255, 255], np.uint8), (3, 20, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)
        check_reference_values(Volume(binary), "cdeep3m-mito")
        check_reference_values(Volume(grey), "vnc")
        check_reference_values(Volume(grey), "phantom")  # no label values declared: nothing to check
    with pytest.warns(OrgasegWarning, match=r"70% of its middle slice holds values cdeep3m-mito's labels never hold "
                                            r"\(32, 64, 96, 128, 159, 191, 223; they hold 0, 255\)"):
        check_reference_values(Volume(grey), "cdeep3m-mito")
    np.save(tmp_path / "grey.npy", grey)
    np.save(tmp_path / "pred.npy", (grey > 100).astype(np.uint8))
    # the command line prints it (through logging), unless an earlier test left Python's warnings recorded
    with warnings.catch_warnings(record=True) as recorded:
        assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / "grey.npy"),
                     "--dataset", "cdeep3m-mito", "-o", str(tmp_path / "report"), "--quiet"]) == 0
    said = capsys.readouterr().err + " ".join(str(w.message) for w in recorded)
    assert "is it the right dataset?" in said
