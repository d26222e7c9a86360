"""The filter bank: scales in nm, 2D for anisotropic stacks, exact inside a halo."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from orgaseg.errors import OrgasegError
from orgaseg.features.filterbank import FilterBank
from orgaseg.pipeline.blocks import make_blocks


def test_scales_convert_with_voxel_size():
    bank = FilterBank(voxel_size=(10.0, 5.0, 5.0), scales_nm=(10.0, 40.0))
    assert not bank.in_plane
    assert bank.sigmas_voxels == ((1.0, 2.0, 2.0), (4.0, 8.0, 8.0))
    # 3D: gaussian, gradient, LoG, std + 3 Hessian eigenvalues per scale
    assert bank.n_features == 2 * 7
    assert bank.halo == (17, 33, 33)


def test_anisotropic_stack_filters_in_plane():
    bank = FilterBank(voxel_size=(50.0, 4.6, 4.6), scales_nm=(4.6, 9.2))
    assert bank.in_plane
    assert all(s[0] == 0.0 for s in bank.sigmas_voxels)
    assert bank.halo[0] == 0
    assert bank.n_features == 2 * 6  # 2 Hessian eigenvalues in 2D
    block = np.random.default_rng(0).random((3, 40, 40), dtype=np.float32)
    features = bank(block)
    # in-plane: each slice's features depend on that slice only
    alone = bank(block[1:2])
    np.testing.assert_allclose(features[1:2], alone, rtol=1e-5, atol=1e-6)


def test_scales_below_half_a_voxel_are_dropped():
    bank = FilterBank(voxel_size=(10.0, 10.0, 10.0), scales_nm=(2.0, 20.0))
    assert len(bank.sigmas_voxels) == 1
    with pytest.raises(OrgasegError, match="below half a voxel"):
        FilterBank(voxel_size=(10.0, 10.0, 10.0), scales_nm=(1.0,))


def test_a_voxel_size_too_large_for_every_scale_is_said_with_the_option_that_overrides_it(tmp_path, capsys):
    # an HDF5 file whose element_size_um holds nm (50, 4.6, 4.6) reads as 50,000 x 4,600 x 4,600 nm voxels
    import h5py

    from orgaseg.cli import main

    with h5py.File(tmp_path / "stack.h5", "w") as handle:
        handle.create_dataset("raw", data=np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8))
        handle["raw"].attrs["element_size_um"] = [50.0, 4.6, 4.6]
    assert main(["segment", str(tmp_path / "stack.h5"), "--key", "raw", "-o", str(tmp_path / "seg.tif"), "--quiet"]) == 2
    assert ("below half a voxel (50000 x 4600 x 4600 nm, z y x): check the voxel size (a size in nm stored as um reads "
            "1000 times too large; --voxel-size Z Y X overrides the file's), or give larger scales (the option "
            "scales_nm)") in capsys.readouterr().err


def test_bad_voxel_size_is_an_error():
    with pytest.raises(OrgasegError, match="voxel size"):
        FilterBank(voxel_size=(0.0, 1.0, 1.0))


def test_features_respond_to_structure():
    # a bright disc on a dark background: the gradient peaks on its rim, the
    # smoothed intensity inside it, the LoG is negative at its centre
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 10**2).astype(np.float32)[None]
    bank = FilterBank(voxel_size=(10.0, 1.0, 1.0), scales_nm=(2.0,))
    names = bank.names
    f = bank(disc)[0]
    gradient = f[..., names.index("gradient@2nm")]
    assert gradient[32, 42] > 5 * gradient[32, 32]
    assert f[32, 32, names.index("gaussian@2nm")] > 0.9
    assert f[32, 32, names.index("log@2nm")] < f[32, 42, names.index("log@2nm")]
    eig0, eig1 = (f[..., names.index(f"hessian{i}@2nm")] for i in (0, 1))
    assert np.all(eig0 >= eig1 - 1e-6)


def test_blockwise_features_with_halo_equal_whole_volume():
    rng = np.random.default_rng(1)
    volume = rng.random((12, 48, 40), dtype=np.float32)
    bank = FilterBank(voxel_size=(8.0, 8.0, 8.0), scales_nm=(8.0, 16.0))
    whole = bank(volume)
    for block in make_blocks(volume.shape, (5, 20, 17), bank.halo):
        part = bank(volume[block.read_region])[block.inner]
        np.testing.assert_allclose(part, whole[block.region], rtol=1e-4, atol=1e-5)


def test_a_single_slice_is_filtered_in_its_plane_with_zero_z_derivatives():
    # a 2D image (one slice) reflected along z is constant there: the slice of a three-fold copy, without the
    # truncation error of second-derivative kernels along z, which do not sum to exactly zero
    image = ndi.gaussian_filter(np.random.default_rng(0).random((48, 48)), 2).astype(np.float32)
    bank = FilterBank(voxel_size=(1.0, 1.0, 1.0), scales_nm=(2.0, 4.0))
    flat, stacked = bank(image[None])[0], bank(np.repeat(image[None], 3, axis=0))[1]
    for i, name in enumerate(bank.names):
        if name.split("@")[0] in ("gaussian", "gradient", "std"):
            np.testing.assert_allclose(flat[..., i], stacked[..., i], atol=1e-5, err_msg=name)
    for scale in (2.0, 4.0):
        laplacian = sum(ndi.gaussian_filter(image, scale, order=order, mode="reflect") for order in ((2, 0), (0, 2)))
        np.testing.assert_allclose(flat[..., bank.names.index(f"log@{scale:g}nm")], laplacian * scale ** 2, atol=1e-5)
        # eigenvalues of a Hessian whose z row is 0: one of the three is 0 wherever the in-plane two are non-zero
        eigen = flat[..., [bank.names.index(f"hessian{j}@{scale:g}nm") for j in range(3)]]
        assert np.abs(eigen).min(axis=-1).max() < 1e-6


@pytest.mark.parametrize("voxel_size", [(10.0, 10.0, 10.0), (50.0, 5.0, 5.0)])
def test_features_of_a_kept_part_equal_the_whole_blocks_cropped(voxel_size):
    block = np.random.default_rng(4).random((30, 40, 36)).astype(np.float32)
    bank = FilterBank(voxel_size, scales_nm=(10.0, 40.0))
    keep = (slice(5, 12), slice(20, 40), slice(0, 36))
    part = bank(block, keep=keep)
    assert part.shape == (7, 20, 36, bank.n_features)
    np.testing.assert_array_equal(part, bank(block)[keep])  # the same passes in the same order: identical
    with pytest.raises(OrgasegError, match="is empty"):
        bank(block, keep=(slice(3, 3), slice(None), slice(None)))


def test_features_are_scipys_gaussian_derivatives():
    # the bank shares the one-axis passes its derivatives begin with: the values must stay scipy's own
    block = np.random.default_rng(5).random((20, 30, 26)).astype(np.float32)
    bank = FilterBank((10.0, 10.0, 10.0), scales_nm=(20.0,))
    features = dict(zip(bank.names, np.moveaxis(bank(block), -1, 0)))
    sigma = (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(features["gaussian@20nm"], ndi.gaussian_filter(block, sigma, mode="reflect"))
    log = sum(ndi.gaussian_filter(block, sigma, order=tuple(2 * (a == b) for b in range(3)), mode="reflect")
              * np.float32(2.0**2) for a in range(3))
    np.testing.assert_array_equal(features["log@20nm"], log)


def test_the_filter_bank_eigenvalues_of_3x3_hessians_are_numpys():
    # closed form instead of a LAPACK call per voxel: the same values, repeated and zero ones included
    from orgaseg.features.filterbank import _sorted_eigenvalues

    rng = np.random.default_rng(0)
    shape = (4, 30, 30)
    hess = {(a, b): (rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 2, size=shape)).astype(np.float32)
            for a in range(3) for b in range(a, 3)}
    for pair in ((0, 1), (0, 2), (1, 2)):
        hess[pair][0] = 0.0  # diagonal matrices
        hess[pair][1, 0] = 0.0
    for a in range(3):
        hess[(a, a)][1, 0] = 2.5  # a multiple of the identity: three equal eigenvalues
        hess[(a, a)][2, 0] = 0.0 if a else 1.0  # two equal (zero) eigenvalues
    hess[(0, 1)][2, 0] = hess[(0, 2)][2, 0] = hess[(1, 2)][2, 0] = 0.0
    matrix = np.empty(shape + (3, 3), np.float64)
    for (a, b), value in hess.items():
        matrix[..., a, b] = matrix[..., b, a] = value
    expected = np.linalg.eigvalsh(matrix)[..., ::-1]
    found = np.stack(list(_sorted_eigenvalues(hess, [0, 1, 2])), axis=-1)
    assert found.dtype == np.float32 and found.shape == shape + (3,)
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.all(np.abs(found - expected) <= 1e-6 * scale)  # float32 rounding of the largest
    np.testing.assert_allclose(found[1, 0], np.full((30, 3), 2.5), rtol=1e-6)
    np.testing.assert_allclose(found[2, 0], np.tile([1.0, 0.0, 0.0], (30, 1)), atol=1e-7)
