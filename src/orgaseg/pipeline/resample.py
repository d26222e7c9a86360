"""The working grid: features computed at a chosen pixel size in nanometres, labels on the input grid.

Learned encoders see a fixed number of pixels (an 80 px field of view), so
what they see depends on the pixel size: 1.28 um at the papers' 16 nm, 0.37
um on a 4.6 nm stack. A :class:`WorkingGrid` resamples the input to a
working pixel size so that a method sees the same physical context on any
data, and maps per-voxel features back to the input grid.

Geometry (one axis; ``r`` = working voxel size / input voxel size)
--------------------------------------------------------------------
Working pixel ``j`` sits at the continuous input coordinate
``c(j) = (j + 1/2) r - 1/2`` (pixel centres aligned, as in image resizing);
the working axis has ``n = max(1, round(N / r))`` pixels for ``N`` input
voxels. The grid is anchored at the volume's first voxel, not at a block's,
so a block's working pixels are exactly those of the whole volume and
blockwise results equal whole-volume results.

- Input to working: a Gaussian of sigma ``(r - 1) / 2`` input voxels
  (anti-aliasing, only when shrinking, as :func:`skimage.transform.rescale`
  does), then linear interpolation at ``c(j)``; both replicate the edge
  voxel beyond the volume.
- Working to input: input voxel ``i`` sits at working coordinate
  ``u(i) = (i + 1/2) / r - 1/2``; its features are the linear interpolation
  of the working features there (clamped at the volume's edges). Features,
  not labels, are interpolated, so cluster boundaries stay smooth.

Which axes: y and x take the working pixel size; z takes it too for
(nearly) isotropic volumes, and keeps its own sampling for anisotropic
stacks (z voxel more than ``anisotropy_ratio`` times the in-plane voxel,
e.g. 50 nm ssTEM sections), which are resampled in-plane only. Under a
method's default pixel size any axis coarser than the pixel size keeps its
own sampling (16 x 8 x 8 nm at 10 nm: 16 x 10 x 10, not 10 x 10 x 10;
8 x 8 x 16 nm: 10 x 10 x 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from orgaseg.errors import OrgasegError

Region = tuple[slice, slice, slice]

#: Gaussian kernels are truncated at this many sigmas (scipy's default).
TRUNCATE = 4.0


@dataclass(frozen=True)
class WorkingGrid:
    """The map between an input grid and a working grid of another voxel size.

    Parameters
    ----------
    input_shape : tuple of int
        Input volume shape ``(z, y, x)``.
    input_voxel_size, working_voxel_size : tuple of float
        Voxel sizes in nm, ``(z, y, x)``.
    """

    input_shape: tuple[int, int, int]
    input_voxel_size: tuple[float, float, float]
    working_voxel_size: tuple[float, float, float]

    @classmethod
    def for_pixel_size(cls, shape, voxel_size, pixel_size_nm: float, *, anisotropy_ratio: float = 2.0,
                       coarsen_only: bool = False) -> "WorkingGrid":
        """The grid of a volume at working pixel size ``pixel_size_nm`` (see the module notes for z).

        With ``coarsen_only`` (a method's default pixel size) any axis coarser than the pixel size keeps its own
        sampling instead of being refined to it (z, and y or x of pixels that are not square).
        """
        if not (isinstance(pixel_size_nm, (int, float)) and math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
            raise OrgasegError(f"the working pixel size must be a positive number of nm, got {pixel_size_nm!r}")
        z, y, x = (float(v) for v in voxel_size)
        keep_z = z > anisotropy_ratio * max(y, x) or (coarsen_only and z > pixel_size_nm)
        working = (z if keep_z else float(pixel_size_nm),
                   *(v if coarsen_only and v > pixel_size_nm else float(pixel_size_nm) for v in (y, x)))
        for axis, n, v, w in zip("yx", shape[1:], (y, x), working[1:]):
            # a whole section inside one working pixel: voxel sizes in another unit, not an image to segment
            # (z may be thinner than a pixel: a few sections of an isotropic stack)
            if n > 1 and n * v < w:
                raise OrgasegError(
                    f"at a working pixel size of {w:g} nm the volume's {axis} axis ({n} voxels of {v:g} nm, "
                    f"{n * v:g} nm in all) is less than one pixel: voxel sizes are in nanometres"
                    f"{' (was ' + format(v, 'g') + ' a size in um?)' if v < 0.1 else ''}")
        return cls(tuple(int(s) for s in shape), (z, y, x), working)

    @property
    def factors(self) -> tuple[float, float, float]:
        """``r`` per axis: working voxel size over input voxel size (> 1 shrinks)."""
        return tuple(w / v for w, v in zip(self.working_voxel_size, self.input_voxel_size))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the working grid."""
        return tuple(max(1, round(n / r)) for n, r in zip(self.input_shape, self.factors))

    @property
    def is_identity(self) -> bool:
        return all(abs(r - 1.0) < 1e-9 for r in self.factors)

    def describe(self) -> dict:
        return {"working_voxel_size": list(self.working_voxel_size), "working_shape": list(self.shape),
                "factors": [round(r, 6) for r in self.factors]}

    # -- input -> working -------------------------------------------------------------

    def read_working(self, read_input, region: Region) -> np.ndarray:
        """The working-grid voxels ``region`` (clipped to the working shape), read through ``read_input``.

        Parameters
        ----------
        read_input : callable
            ``read_input(input_region) -> float32 array`` (a volume's ``read``
            followed by normalisation).
        region : tuple of slice
            Working-grid region, each slice with ``start < stop``.

        Returns
        -------
        ndarray, float32, the region's shape
        """
        windows, plans = [], []
        for axis, (s, n_in, r) in enumerate(zip(region, self.input_shape, self.factors)):
            sigma = (r - 1.0) / 2.0 if r > 1.0 else 0.0
            positions = (np.arange(s.start, s.stop) + 0.5) * r - 0.5
            reach = int(TRUNCATE * sigma + 0.5) + 1 if sigma else 0
            low = max(0, int(math.floor(positions[0])) - reach)
            high = min(n_in, int(math.ceil(positions[-1])) + 1 + reach)
            windows.append(slice(low, high))
            plans.append((positions - low, sigma))
        data = np.asarray(read_input(tuple(windows)), dtype=np.float32)
        sigmas = [sigma for _, sigma in plans]
        if any(sigmas):
            # in place where the window is this call's own array (not a view of the caller's): scipy filters
            # line by line, so the result is the same without a second copy of the window (the peak is then
            # the window plus the first interpolation's two outputs: 1.5x at vnc's 4.6 -> 18.4 nm, was 2x)
            own = data.flags.owndata and data.flags.writeable
            data = ndi.gaussian_filter(data, sigma=sigmas, mode="nearest", truncate=TRUNCATE,
                                       output=data if own else None)
        for axis, (positions, _) in enumerate(plans):
            data = interpolate_axis(data, axis, positions)
        return data

    # -- working -> input -------------------------------------------------------------

    def working_region(self, region: Region, halo: tuple[int, int, int] = (0, 0, 0)) -> Region:
        """The working voxels whose features an input ``region`` interpolates, grown by ``halo`` working voxels."""
        return tuple(slice(*self.working_span(axis, s.start, s.stop, h)) for axis, (s, h) in enumerate(zip(region, halo)))

    def working_span(self, axis: int, start: int, stop: int, halo: int = 0) -> tuple[int, int]:
        """:meth:`working_region` along one axis: the working ``(start, stop)`` of input voxels ``[start, stop)``."""
        r, n = self.factors[axis], self.shape[axis]
        first = (start + 0.5) / r - 0.5
        last = (stop - 1 + 0.5) / r - 0.5
        return max(0, int(math.floor(first)) - halo), min(n, int(math.ceil(last)) + 1 + halo)

    def nearest(self, region: Region) -> tuple[Region, tuple[np.ndarray, ...]]:
        """The working voxels nearest to the input voxels of ``region``, and which one each input voxel takes.

        Input voxel ``i`` takes the working voxel whose cell holds its centre,
        ``floor((i + 1/2) / r)``. A centre on the edge between two cells (where
        ``r`` is a fraction with an even denominator, such as 2.5 or 1.25: one
        voxel in five) is as near to either; it takes the lower cell when
        ``i`` is odd, the upper when even. Consecutive such voxels alternate in
        parity, so the ties split evenly (all taken upwards, they moved the
        labels by a fifth of a voxel towards the origin at 2.5). Returns the
        working region those voxels span and, per axis, the index (relative to
        that region) each input voxel takes: labels computed on the working
        grid come back to the input grid as ``labels[np.ix_(*indices)]``.
        """
        out, indices = [], []
        for s, r, n in zip(region, self.factors, self.shape):
            voxels = np.arange(s.start, s.stop)
            cell = (voxels + 0.5) / r
            j = np.floor(cell).astype(np.intp)
            on_edge = np.abs(cell - np.rint(cell)) < 1e-9
            j = np.where(on_edge, np.rint(cell).astype(np.intp) - voxels % 2, j)
            j = np.clip(j, 0, n - 1)
            out.append(slice(int(j[0]), int(j[-1]) + 1))
            indices.append(j - j[0])
        return tuple(out), tuple(indices)

    def to_input(self, features: np.ndarray, working_start: tuple[int, int, int], region: Region) -> np.ndarray:
        """Working-grid features (starting at ``working_start``) interpolated onto the input ``region``.

        ``features`` has shape ``(z, y, x, F)`` and must cover
        :meth:`working_region` of ``region``.
        """
        out = np.asarray(features, dtype=np.float32)
        for axis, (s, r, start) in enumerate(zip(region, self.factors, working_start)):
            positions = (np.arange(s.start, s.stop) + 0.5) / r - 0.5 - start
            out = interpolate_axis(out, axis, positions)
        return out

    def to_points(self, features: np.ndarray, working_start: tuple[int, int, int], points: np.ndarray) -> np.ndarray:
        """Working-grid features interpolated at input voxels ``points`` (absolute ``(n, 3)`` coordinates).

        The same values as :meth:`to_input` at those voxels (up to rounding),
        at the cost of the points alone: a clusterer's sample needs no
        interpolated block.
        """
        features = np.asarray(features, dtype=np.float32)
        corners = []
        for axis, (r, start) in enumerate(zip(self.factors, working_start)):
            n = features.shape[axis]
            positions = np.clip((points[:, axis] + 0.5) / r - 0.5 - start, 0.0, n - 1)
            below = np.floor(positions).astype(np.intp)
            corners.append((below, np.minimum(below + 1, n - 1), (positions - below).astype(np.float32)))
        out = np.zeros((len(points), features.shape[-1]), dtype=np.float32)
        for pick in np.ndindex(2, 2, 2):  # the 8 corners of each point's cell; weight 0 where an axis is exact
            weight = np.ones(len(points), dtype=np.float32)
            index = []
            for (below, above, frac), upper in zip(corners, pick):
                weight *= frac if upper else 1.0 - frac
                index.append(above if upper else below)
            out += weight[:, None] * features[tuple(index)]
        return out


def interpolate_axis(data: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``data`` along ``axis`` at fractional indices ``positions``.

    Positions outside ``[0, n - 1]`` take the edge value. A two-tap gather per
    output position: cost proportional to the output, whatever the factor.
    """
    n = data.shape[axis]
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0.0, n - 1)
    below = np.floor(positions).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    weight = (positions - below).astype(np.float32)
    if np.all(weight == 0.0) and np.array_equal(below, np.arange(n)):
        return data
    shape = [1] * data.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    out = np.take(data, above, axis=axis)
    low = np.take(data, below, axis=axis)
    with np.errstate(invalid="ignore"):  # infinite intensities give NaN, which the normalisation reads as 0
        out -= low  # in place: a block's features are large
        out *= weight
        out += low
    return out


class ResampledArray:
    """A volume seen on a working grid: ``shape``, ``dtype`` and slicing, as a :class:`~orgaseg.io.Volume` array.

    Used to train at a working pixel size: wrap it in a ``Volume`` with the
    working voxel size and the field-of-view sampler reads it like any volume.
    Values are float32 resampled intensities (normalise afterwards as usual).
    """

    def __init__(self, volume, grid: WorkingGrid) -> None:
        self.volume = volume
        self.grid = grid
        self.shape = grid.shape
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple) or len(key) != 3:
            raise IndexError("index a resampled volume with three slices (z, y, x)")
        region = []
        for s, n in zip(key, self.shape):
            start, stop, step = s.indices(n)
            if step != 1 or stop <= start:
                raise IndexError(f"a resampled volume takes non-empty unit-step slices, got {s}")
            region.append(slice(start, stop))
        return self.grid.read_working(lambda window: self.volume.read(window).astype(np.float32), tuple(region))


def resampled_volume(volume, pixel_size_nm: float | None):
    """``volume`` seen at ``pixel_size_nm`` (a new :class:`~orgaseg.io.Volume`), or unchanged for None."""
    from orgaseg.io.volume import Volume

    if pixel_size_nm is None:
        return volume
    grid = WorkingGrid.for_pixel_size(volume.shape, volume.voxel_size, pixel_size_nm)
    if grid.is_identity:
        return volume
    # working pixel 0 lies at input coordinate c(0) = (r - 1) / 2 (the module's geometry)
    origin = tuple(o + (r - 1) / 2 * v for o, r, v in zip(volume.origin, grid.factors, volume.voxel_size))
    return Volume(array=ResampledArray(volume, grid), voxel_size=grid.working_voxel_size, path=volume.path,
                  key=volume.key, attrs={**volume.attrs, "resampled_from": list(volume.voxel_size)}, origin=origin)
