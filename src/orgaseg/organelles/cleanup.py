"""Clean-up of a class volume before its instances are counted: majority filter, small objects, holes.

Three optional steps, in this order (:func:`orgaseg.organelles.instances.make_instances`
runs them blockwise):

1. **Majority filter** (``majority_nm``): every voxel takes the most frequent class in the
   box of half-width ``majority_nm`` around it (per axis, rounded to whole voxels, halves up, so
   a thick-section stack is filtered in-plane only when the radius is below half the section
   thickness); voxels outside the volume do not vote; a tie keeps the voxel's own class
   when it is among the most frequent, else goes to the smallest class value. Local: a
   block reads a halo of the radius, so the result equals the whole-volume filter exactly.
2. **Small-object removal** (``min_size_nm3``): connected components of the instance
   classes smaller than this volume (in nm^3, counted in voxels times the voxel volume)
   become background (no instance). Sizes are global: a component cut by block borders
   is measured whole.
3. **Hole filling** (``fill_holes``): a hole is a connected component of background (every
   voxel not of an instance class, after step 2) that does not touch the volume's border
   and touches exactly one instance class; it takes that class. With one instance class
   this equals :func:`scipy.ndimage.binary_fill_holes` of its mask; a background pocket
   between two classes stays background.

Objects are connected as the instances are (6, 18 or 26 neighbours, ``connectivity`` of
:func:`orgaseg.organelles.make_instances`); the background of step 3 always through faces (6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orgaseg.errors import OrgasegError


@dataclass(frozen=True)
class Cleanup:
    """The clean-up steps to run; all off by default.

    Attributes
    ----------
    min_size_nm3 : float or None
        Components of an instance class smaller than this (nm^3) are removed.
    fill_holes : bool
        Fill background pockets enclosed by one instance class.
    majority_nm : float or None
        Half-width (nm) of the majority filter's box.
    """

    min_size_nm3: float | None = None
    fill_holes: bool = False
    majority_nm: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_size_nm3", "majority_nm"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(float(value)) or float(value) < 0):
                raise OrgasegError(f"{name} must be a non-negative number (nm), got {value!r}")

    def min_voxels(self, voxel_size: tuple[float, float, float]) -> int:
        """Smallest component kept, in voxels (1: keep everything)."""
        if not self.min_size_nm3:
            return 1
        return max(1, math.ceil(self.min_size_nm3 / math.prod(voxel_size) - 1e-9))

    def majority_radius(self, voxel_size: tuple[float, float, float]) -> tuple[int, int, int] | None:
        """Half-width of the majority box in voxels per axis, or None when the filter is off (or below a voxel)."""
        if not self.majority_nm:
            return None
        # halves round up (round() would send them to the even number: 25 nm on 50 nm sections to 0 sections, 125 nm
        # to 2, like 75 nm); the tolerance keeps a half that floating point puts a hair below (11.5 / 4.6) a half
        radius = tuple(math.floor(self.majority_nm / v + 0.5 + 1e-9) for v in voxel_size)
        return radius if any(radius) else None

    def describe(self) -> dict:
        """For the provenance record."""
        return {"min_size_nm3": self.min_size_nm3, "fill_holes": self.fill_holes, "majority_nm": self.majority_nm}


def majority_filter(classes: np.ndarray, radius: tuple[int, int, int]) -> np.ndarray:
    """Most frequent value in the box of half-width ``radius`` (voxels per axis) around every voxel.

    Counts are exact integers (cumulative sums), so a block filtered with a halo of
    ``radius`` equals the same voxels of the whole volume filtered at once. Voxels
    beyond the array do not vote. Ties keep the voxel's own value when it is among
    the most frequent, else go to the smallest value.

    Parameters
    ----------
    classes : ndarray of int, 3D
    radius : tuple of 3 int

    Returns
    -------
    ndarray
        Same shape and dtype as ``classes``.
    """
    classes = np.asarray(classes)
    values = np.unique(classes)
    if values.size < 2:
        return classes.copy()
    best_count = np.full(classes.shape, -1, np.int32)
    best = np.empty_like(classes)
    own_count = np.zeros(classes.shape, np.int32)
    for value in values:  # ascending, so a strict ">" leaves ties with the smaller value
        mask = classes == value
        count = _box_count(mask, radius)
        better = count > best_count
        best[better] = value
        best_count[better] = count[better]
        own_count[mask] = count[mask]
    return np.where(own_count == best_count, classes, best)


def _box_count(mask: np.ndarray, radius: tuple[int, int, int]) -> np.ndarray:
    """Number of true voxels in the box of half-width ``radius`` around each voxel (outside counts 0)."""
    count = mask.astype(np.int32)
    for axis, r in enumerate(radius):
        n = count.shape[axis]
        r = min(int(r), n)  # a box wider than the array counts it whole along the axis, as a box of n does
        if r == 0:
            continue
        pad = [(0, 0)] * 3
        pad[axis] = (r + 1, r)
        cumulative = np.cumsum(np.pad(count, pad), axis=axis)
        upper = np.take(cumulative, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lower = np.take(cumulative, np.arange(0, n), axis=axis)
        count = upper - lower
    return count
