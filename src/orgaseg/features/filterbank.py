"""Classical per-voxel features: a multi-scale filter bank.

At every scale (a Gaussian sigma given in nanometres and converted to voxels
with the voxel size) the bank computes the smoothed intensity, the gradient
magnitude, the Laplacian of Gaussian, the local standard deviation and the
eigenvalues of the Hessian. Anisotropic stacks (z voxel more than twice the
in-plane size, e.g. ssTEM sections) are filtered slice by slice in the xy
plane, because the z sampling cannot resolve the small scales.

Derivatives are taken per nanometre and multiplied by the scale (the usual
scale normalisation), so a feature means the same thing whatever the voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from orgaseg.errors import OrgasegError
from orgaseg.features.base import resolve_keep
from orgaseg.io.metadata import format_sizes, micrometre_hint

#: Default scales in nanometres: from a few voxels of a typical FIB-SEM/ssTEM
#: stack up to the width of a mitochondrion.
DEFAULT_SCALES_NM = (10.0, 20.0, 40.0, 80.0, 160.0)

#: Below this a Gaussian is narrower than a voxel and the scale is meaningless.
MIN_SIGMA_VOXELS = 0.5

#: Gaussian kernels are truncated at this many sigmas (scipy's default).
TRUNCATE = 4.0

FEATURE_KINDS = ("gaussian", "gradient", "log", "std", "hessian")


@dataclass(frozen=True)
class FilterBank:
    """A multi-scale filter bank producing a feature vector per voxel.

    Parameters
    ----------
    voxel_size : tuple of float
        Voxel size in nanometres, ``(z, y, x)``.
    scales_nm : tuple of float
        Gaussian scales in nanometres. Scales narrower than half a voxel
        along every filtered axis are dropped.
    in_plane : bool, optional
        Filter each z slice in 2D. Default: True when the volume is
        anisotropic by more than ``anisotropy_ratio``.
    anisotropy_ratio : float
        z / in-plane voxel size ratio above which filtering is 2D.
    """

    voxel_size: tuple[float, float, float]
    scales_nm: tuple[float, ...] = DEFAULT_SCALES_NM
    in_plane: bool | None = None
    anisotropy_ratio: float = 2.0
    _sigmas: tuple[tuple[float, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.voxel_size) != 3 or min(self.voxel_size) <= 0:
            raise OrgasegError(f"voxel size must be three positive numbers (z, y, x) in nm, got {self.voxel_size}")
        if not self.scales_nm or min(self.scales_nm) <= 0:
            raise OrgasegError(f"filter-bank scales must be positive nanometres, got {self.scales_nm}")
        z, y, x = (float(v) for v in self.voxel_size)
        in_plane = self.in_plane if self.in_plane is not None else z > self.anisotropy_ratio * max(y, x)
        object.__setattr__(self, "in_plane", bool(in_plane))
        sigmas = []
        for scale in sorted(set(float(s) for s in self.scales_nm)):
            sigma = (0.0 if in_plane else scale / z, scale / y, scale / x)
            if max(sigma[1:]) < MIN_SIGMA_VOXELS:
                continue
            # keep a Gaussian along z only where it spans at least half a section
            if sigma[0] < MIN_SIGMA_VOXELS:
                sigma = (0.0, sigma[1], sigma[2])
            sigmas.append(sigma)
        if not sigmas:
            raise OrgasegError(
                f"every filter-bank scale {self.scales_nm} nm is below half a voxel "
                f"({format_sizes(self.voxel_size)} nm, z y x): check the voxel size ({micrometre_hint()}), "
                "or give larger scales (the option scales_nm)"
            )
        object.__setattr__(self, "_sigmas", tuple(sigmas))

    @property
    def sigmas_voxels(self) -> tuple[tuple[float, float, float], ...]:
        """Per-scale Gaussian sigma in voxels, ``(z, y, x)``; 0 means not filtered."""
        return self._sigmas

    @property
    def names(self) -> list[str]:
        """Feature names, in output order."""
        names = []
        for scale, sigma in zip(self._scales_kept(), self._sigmas):
            for kind in FEATURE_KINDS[:-1]:
                names.append(f"{kind}@{scale:g}nm")
            for i in range(self._n_hessian(sigma)):
                names.append(f"hessian{i}@{scale:g}nm")
        return names

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Context in voxels each side of a block for exact results inside it."""
        widest = [max(s[a] for s in self._sigmas) for a in range(3)]
        # scipy's kernel radius is int(truncate * sigma + 0.5); no context along unfiltered axes
        return tuple(int(TRUNCATE * w + 0.5) + 1 if w > 0 else 0 for w in widest)

    def config(self) -> dict:
        """A JSON-serialisable description (for provenance and signatures)."""
        return {
            "kind": "filterbank",
            "voxel_size": list(self.voxel_size),
            "scales_nm": [float(s) for s in self._scales_kept()],
            "in_plane": self.in_plane,
            "features": self.names,
        }

    #: Computes the features of a part of a block only (``keep``), with the whole block as context.
    keeps_region = True

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """Features of a normalised float block.

        Parameters
        ----------
        block : ndarray, shape (z, y, x)
            Intensities (normalised, float32).
        origin : tuple of int
            Position of the block in the volume; filters do not depend on it.
        keep : tuple of slice, optional
            The part of ``block`` whose features are returned (default all of
            it); the rest is context. The same values as the whole block's
            features cropped to ``keep``, at a fraction of the memory and time
            when the context is wide: each Gaussian runs one axis at a time and
            the result is cropped along that axis before the next.

        Returns
        -------
        ndarray, shape (z, y, x, n_features) of ``block[keep]``, float32
        """
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 3:
            raise OrgasegError(f"the filter bank needs a 3D block, got shape {block.shape}")
        keep = resolve_keep(keep, block.shape)
        out = np.empty(tuple(s.stop - s.start for s in keep) + (self.n_features,), dtype=np.float32)
        i = 0
        for scale, sigma in zip(self._scales_kept(), self._sigmas):
            for feature in self._features_at(block, scale, sigma, keep):
                out[..., i] = feature
                i += 1
        return out

    # -- internals -------------------------------------------------------------------

    def _scales_kept(self) -> list[float]:
        z, y, x = self.voxel_size
        return [s[1] * y for s in self._sigmas]

    def _axes(self, sigma) -> list[int]:
        """Axes along which this scale filters (z only when its sigma is > 0)."""
        return [a for a in range(3) if sigma[a] > 0]

    def _n_hessian(self, sigma) -> int:
        return len(self._axes(sigma))

    def _features_at(self, block: np.ndarray, scale: float, sigma, keep):
        axes = self._axes(sigma)
        spacing = np.asarray(self.voxel_size, dtype=np.float64)
        # one slice (a 2D image, the whole volume): reflected along z it is constant there, so z smoothing is the
        # identity and every z derivative 0; computing them costs kernels of up to hundreds of taps for nothing
        flat = block.shape[0] == 1
        if flat:
            sigma = (0.0, sigma[1], sigma[2])

        def unit(a: int, b: int | None = None) -> tuple[int, int, int]:
            order = [0, 0, 0]
            order[a] += 1
            if b is not None:
                order[b] += 1
            return tuple(order)

        pairs = [(a, b) for i, a in enumerate(axes) for b in axes[i:]]
        orders = [(0, 0, 0)] + [unit(a) for a in axes] + [unit(a, b) for a, b in pairs]
        filtered = _gaussian_derivatives(block, sigma, [o for o in orders if not (flat and o[0])], keep)

        def derivative(order: tuple[int, int, int]) -> np.ndarray:
            if flat and order[0]:
                return np.zeros(tuple(s.stop - s.start for s in keep), dtype=np.float32)
            # per nanometre, scale-normalised: (scale / spacing) per derivative order
            factor = np.prod([(scale / spacing[a]) ** order[a] for a in range(3)])
            return filtered.pop(order) * np.float32(factor)

        smooth = filtered.pop((0, 0, 0))
        yield smooth
        grads = [derivative(unit(a)) for a in axes]
        yield np.sqrt(sum(g * g for g in grads))
        del grads
        hess = {(a, b): derivative(unit(a, b)) for a, b in pairs}
        yield sum(hess[(a, a)] for a in axes)
        mean_sq = _gaussian_derivatives(block * block, sigma, [(0, 0, 0)], keep)[(0, 0, 0)]
        yield np.sqrt(np.maximum(mean_sq - smooth * smooth, 0.0))
        yield from _sorted_eigenvalues(hess, axes)


def _gaussian_derivatives(data: np.ndarray, sigma, orders, keep) -> dict:
    """``{order: ndi.gaussian_filter(data, sigma, order=order)[keep]}`` (reflected edges) for every order.

    scipy's ``gaussian_filter`` is one 1-D pass per filtered axis, z then y
    then x; after the z pass the result depends on the z order only, after
    the y pass on the z and y orders. So the orders share the passes they
    begin with (the ten of a 3D scale take 3 z passes, 6 y passes and 10 x
    passes instead of 30), with the same passes in the same order as scipy's
    and identical values. Each pass is cropped to ``keep`` along its axis
    before the next runs on the smaller array.
    """
    out = {}

    def descend(array: np.ndarray, axis: int, prefix: tuple) -> None:
        if axis == 3:
            out[prefix] = np.ascontiguousarray(array)
            return
        crop = [slice(None)] * 3
        crop[axis] = keep[axis]
        for order in sorted({o[axis] for o in orders if o[:axis] == prefix}):
            passed = array if sigma[axis] <= 0 else ndi.gaussian_filter1d(
                array, sigma[axis], axis=axis, order=order, mode="reflect", truncate=TRUNCATE, output=np.float32)
            descend(passed[tuple(crop)], axis + 1, prefix + (order,))

    descend(data, 0, ())
    return out


def _sorted_eigenvalues(hess: dict, axes: list[int]):
    """Eigenvalues of the symmetric Hessian per voxel, largest first."""
    if len(axes) == 1:
        yield hess[(axes[0], axes[0])]
        return
    if len(axes) == 2:
        a, b = axes
        hxx, hxy, hyy = hess[(a, a)], hess[(a, b)], hess[(b, b)]
        half_trace = 0.5 * (hxx + hyy)
        root = np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy * hxy)
        yield half_trace + root
        yield half_trace - root
        return
    yield from _symmetric_3x3_eigenvalues(hess)


def _symmetric_3x3_eigenvalues(hess: dict):
    """Eigenvalues of a symmetric 3 x 3 matrix per voxel, largest first, in closed form.

    The trigonometric solution of the characteristic cubic (Smith, Commun. ACM 4, 1961), computed in
    float64 as ``numpy.linalg.eigvalsh`` computes float32 input, so the values agree with it to float32
    rounding; a per-voxel LAPACK call took a third of a 3D filter bank's time.
    """
    diagonal = [hess[(a, a)].astype(np.float64) for a in range(3)]
    h01, h02, h12 = (hess[pair].astype(np.float64) for pair in ((0, 1), (0, 2), (1, 2)))
    mean = sum(diagonal) / 3.0
    b00, b11, b22 = (d - mean for d in diagonal)
    # the matrix is mean * I + radius * B, with B of unit scale; B's eigenvalues are 2 cos(angle + 2 pi k / 3)
    radius = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * (h01 * h01 + h02 * h02 + h12 * h12)) / 6.0)
    det = b00 * (b11 * b22 - h12 * h12) - h01 * (h01 * b22 - h12 * h02) + h02 * (h01 * h12 - b11 * h02)
    with np.errstate(divide="ignore", invalid="ignore"):
        half_det_b = np.where(radius > 0, det / (2.0 * radius**3), 0.0)  # radius 0: a multiple of I
    angle = np.arccos(np.clip(half_det_b, -1.0, 1.0)) / 3.0
    largest = mean + 2.0 * radius * np.cos(angle)
    smallest = mean + 2.0 * radius * np.cos(angle + 2.0 * np.pi / 3.0)
    for value in (largest, 3.0 * mean - largest - smallest, smallest):
        yield value.astype(np.float32)
