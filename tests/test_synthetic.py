"""Tests of the synthetic EM cell phantom (orgaseg.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from orgaseg.errors import OrgasegError
from orgaseg.synthetic import (
    BACKGROUND,
    CLASS_NAMES,
    CYTOPLASM,
    GRANULES,
    MEMBRANE,
    MITOCHONDRIA,
    NUCLEUS,
    Phantom,
    make_cell,
    make_cell_2d,
)

DEFAULT_SHAPE = (64, 256, 256)


@pytest.fixture(scope="module")
def default() -> Phantom:
    return make_cell()


def shares(labels: np.ndarray) -> np.ndarray:
    """Share of the cell's voxels (labels > 0) held by each class."""
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)).astype(float)
    return counts / counts[1:].sum()


def test_default_shapes_dtypes_and_metadata(default):
    assert default.raw.shape == DEFAULT_SHAPE and default.labels.shape == DEFAULT_SHAPE
    assert default.raw.dtype == np.uint8 and default.labels.dtype == np.uint8
    assert default.voxel_size == (10.0, 10.0, 10.0)
    assert default.seed == 0
    assert default.class_names == CLASS_NAMES
    assert CLASS_NAMES[MITOCHONDRIA] == "mitochondria" and CLASS_NAMES[BACKGROUND] == "background"
    assert default.labels.max() == len(CLASS_NAMES) - 1


def test_every_class_present_with_sensible_share(default):
    share = shares(default.labels)
    # The cell fills most of the field, with background outside it.
    background_fraction = np.mean(default.labels == BACKGROUND)
    assert 0.2 < background_fraction < 0.6
    assert share[CYTOPLASM] > 0.5
    organelles = [MITOCHONDRIA, GRANULES]
    assert all(share[NUCLEUS] > share[k] for k in organelles)
    assert all(share[k] > 0.005 for k in organelles)
    assert 0.005 < share[MEMBRANE] < 0.08
    # Several organelles, not one blob each.
    assert ndi.label(default.labels == MITOCHONDRIA)[1] >= 2
    assert ndi.label(default.labels == GRANULES)[1] >= 10


def test_membrane_is_a_thin_closed_shell(default):
    labels = default.labels
    cell = labels > 0
    depth = ndi.distance_transform_edt(cell, sampling=default.voxel_size)
    membrane = labels == MEMBRANE
    # Thin: every membrane voxel lies within ~3 voxels of the outside.
    assert depth[membrane].max() <= 40.0
    # Closed: no other cell voxel touches the outside.
    outside_neighbours = ndi.binary_dilation(labels == BACKGROUND, ndi.generate_binary_structure(3, 1))
    assert not np.any(outside_neighbours & cell & ~membrane)


def test_organelles_do_not_touch_each_other_or_the_boundaries(default):
    labels = default.labels
    for k in (NUCLEUS, MITOCHONDRIA, GRANULES):
        mask = labels == k
        rim = ndi.binary_dilation(mask, np.ones((3, 3, 3), bool)) & ~mask
        # Only cytoplasm around every organelle: no contact with other
        # organelles, the plasma membrane or the outside.
        assert set(np.unique(labels[rim])) == {CYTOPLASM}, CLASS_NAMES[k]


def test_classes_look_different(default):
    raw, labels = default.raw.astype(float), default.labels
    mean = {k: raw[labels == k].mean() for k in range(len(CLASS_NAMES))}
    # FIB-SEM look: resin outside lightest, cytoplasm mid-grey, membrane dark.
    assert mean[BACKGROUND] > mean[CYTOPLASM] + 30
    assert mean[CYTOPLASM] > mean[NUCLEUS] > mean[MITOCHONDRIA]
    assert mean[MEMBRANE] < mean[CYTOPLASM] - 30


def _local_std(image: np.ndarray, size: int) -> np.ndarray:
    mean = ndi.uniform_filter(image, size)
    return np.sqrt(np.maximum(ndi.uniform_filter(image * image, size) - mean**2, 0.0))


def _separation(feature: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Difference of class means in units of the pooled standard deviation (d')."""
    x, y = feature[a], feature[b]
    return float((x.mean() - y.mean()) / np.sqrt((x.var() + y.var()) / 2))


def test_mitochondria_and_granule_cores_differ_by_texture_not_intensity(default):
    raw, labels = default.raw.astype(np.float32), default.labels
    sampling = default.voxel_size
    mitochondria = labels == MITOCHONDRIA
    # Dense cores: granule voxels well inside the 25 nm halo and its blur.
    cores = ndi.distance_transform_edt(labels == GRANULES, sampling=sampling) > 45.0
    assert cores.sum() > 1000
    assert abs(raw[mitochondria].mean() - raw[cores].mean()) < 3.0
    intensity_gap = abs(_separation(raw, mitochondria, cores))
    assert intensity_gap < 0.3

    # Cristae stripes make the mitochondria's inside rough; the cores are smooth.
    inside = ndi.distance_transform_edt(mitochondria, sampling=sampling) > 30.0
    texture_gap = _separation(_local_std(raw, 3), inside, cores)
    assert texture_gap > 1.0
    assert texture_gap > 3 * intensity_gap


def test_same_seed_identical_other_seed_different():
    shape = (16, 96, 128)
    a, b = make_cell(shape, seed=3), make_cell(shape, seed=3)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_cell(shape, seed=4)
    assert np.mean(a.raw != c.raw) > 0.5
    assert np.mean(a.labels != c.labels) > 0.01


def test_anisotropic_voxels_keep_physical_sizes():
    # The same 800 x 1600 x 1600 nm field, isotropic and as an SBEM-like stack.
    iso = make_cell((80, 160, 160), (10.0, 10.0, 10.0), seed=1)
    aniso = make_cell((20, 200, 200), (40.0, 8.0, 8.0), seed=1)
    assert aniso.raw.shape == (20, 200, 200)

    def volume_nm3(phantom, k):
        return np.count_nonzero(phantom.labels == k) * np.prod(phantom.voxel_size)

    # Cell and nucleus are drawn from the seed before they meet the grid.
    for k in (CYTOPLASM, NUCLEUS):
        assert volume_nm3(aniso, k) == pytest.approx(volume_nm3(iso, k), rel=0.05), CLASS_NAMES[k]
    # Placement by rejection depends on the grid, so organelles are compared
    # in bulk (granules) and by size (mitochondria: thickness in nm).
    assert volume_nm3(aniso, GRANULES) == pytest.approx(volume_nm3(iso, GRANULES), rel=0.2)

    def mitochondria_half_width_nm(phantom):
        return ndi.distance_transform_edt(phantom.labels == MITOCHONDRIA, sampling=phantom.voxel_size).max()

    assert 100.0 < mitochondria_half_width_nm(iso) < 210.0
    assert mitochondria_half_width_nm(aniso) == pytest.approx(mitochondria_half_width_nm(iso), abs=15.0)

    def nucleus_slices(phantom):
        return np.count_nonzero((phantom.labels == NUCLEUS).any(axis=(1, 2)))

    # Same depth in nm, so a quarter of the slices.
    assert nucleus_slices(iso) > 20
    assert nucleus_slices(aniso) * 40.0 == pytest.approx(nucleus_slices(iso) * 10.0, abs=80.0)

    def median_granule_diameter_nm(phantom):
        components, n = ndi.label(phantom.labels == GRANULES)
        sizes = np.bincount(components.ravel())[1:] * np.prod(phantom.voxel_size)
        return np.median((6 * sizes / np.pi) ** (1 / 3))

    assert median_granule_diameter_nm(aniso) == pytest.approx(median_granule_diameter_nm(iso), rel=0.25)


@pytest.mark.parametrize("shape", [(8, 64, 64), (3, 40, 17), (1, 1, 1), (24, 48, 200)])
def test_small_and_non_cubic_shapes(shape):
    phantom = make_cell(shape, seed=0)
    assert phantom.raw.shape == shape and phantom.labels.shape == shape
    assert phantom.raw.dtype == np.uint8 and phantom.labels.dtype == np.uint8
    assert phantom.labels.max() < len(CLASS_NAMES)
    assert np.any(phantom.labels == MEMBRANE)


def test_single_section_phantom():
    phantom = make_cell_2d((200, 300), pixel_size=12.0, seed=2)
    assert phantom.raw.shape == (1, 200, 300) and phantom.labels.shape == (1, 200, 300)
    assert phantom.voxel_size == (12.0, 12.0, 12.0)
    present = set(np.unique(phantom.labels))
    assert {BACKGROUND, CYTOPLASM, NUCLEUS, MEMBRANE} <= present
    with pytest.raises(OrgasegError, match="2D shape"):
        make_cell_2d((10, 20, 30))


def test_noise_free_unblurred_phantom_is_piecewise_clean():
    phantom = make_cell((8, 64, 64), noise=0.0, blur_nm=0.0)
    membrane = phantom.raw[phantom.labels == MEMBRANE]
    assert np.all(membrane == membrane[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": (64, 64)}, "shape"),
        ({"shape": (1, 2, 3, 4)}, "shape"),
        ({"shape": (0, 64, 64)}, "shape"),
        ({"shape": (8.5, 64, 64)}, "shape"),
        ({"shape": 64}, "shape"),
        ({"voxel_size": (10.0, 0.0, 10.0)}, "voxel_size"),
        ({"voxel_size": (10.0, -1.0, 10.0)}, "voxel_size"),
        ({"voxel_size": (10.0, 10.0)}, "voxel_size"),
        ({"voxel_size": (10.0, float("nan"), 10.0)}, "voxel_size"),
        ({"voxel_size": "10"}, "voxel_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"noise": -1.0}, "noise"),
        ({"blur_nm": float("inf")}, "blur_nm"),
    ],
)
def test_bad_arguments_raise_orgaseg_error(kwargs, message):
    arguments = {"shape": (8, 32, 32), **kwargs}
    with pytest.raises(OrgasegError, match=message):
        make_cell(**arguments)
