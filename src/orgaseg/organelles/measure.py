"""Morphometrics of instances in physical units, computed blockwise: :func:`measure_instances`.

One row per instance (``id``, ``class``, ``voxels``, ``volume_um3``, ``surface_area_um2``,
``sphericity``, centroid and bounding box in nm, ``touches_border``, ``z_sections``, principal axis lengths and
``aspect_ratio``; ``mean_intensity`` and ``std_intensity`` with a raw volume) and one row
per class in a summary (``count``, total, median and mean volume, and with a cell mask the
class's ``volume_fraction`` of the cell). A single image (one z plane) is measured in its plane
instead: ``pixels``, ``area_um2``, ``perimeter_um``, ``circularity``, in-plane centroid, box and
ellipse axes, and a summary of areas (:func:`_owned_outline`, :func:`_table_2d`).

Coordinates. Voxel ``(i, j, k)`` is centred at ``origin + (i * vz, j * vy, k * vx)`` nm,
the convention of OME-Zarr's scale and translation transforms and of napari, so a centroid
lands on the instance in a viewer; the origin is zero unless the instance volume carries
one (instances of a region cut with ``orgaseg crop`` are placed in the full volume). The
bounding box holds the centres of an instance's outermost voxels (``bbox_max - bbox_min +
voxel size`` is its extent).

Blockwise sums. Every block returns, per instance it holds, the voxel count, the mean
position and the scatter matrix about it, the bounding box, the intensity mean and
scatter, the voxels inside the cell mask, and its share of the surface area; the driver
merges them (Chan's pairwise update for means and scatters, which stays exact in floating
point wherever the instance lies). The principal axes are those of the solid ellipsoid
with the instance's second moments (each voxel a solid box): a solid ellipsoid with
semi-axes ``a >= b >= c`` gets axis lengths ``2a, 2b, 2c``.

Surface area. Marching cubes on the binary mask overestimates a smooth surface by about
8% (the mesh follows the voxel staircase), so the mesh is built on a smooth field whose
sign is the mask's: on near-isotropic voxels the instance mask smoothed by a Gaussian of
``SMOOTHING_VOXELS`` voxels along each axis; on serial sections (z at least ``SECTIONED``
times the pixel) the signed distance to the other side in nm, smoothed in-plane only. There
the staircase is a section high (50 nm on vnc, eleven pixels): the smoothed mask still steps
from section to section (about 7-16% high on ellipsoids spanning 5-24 sections), while the
mesh of the distance field crosses between two sections where the distances on either side
balance, joining the outlines by a slope (shape-based interpolation). Every voxel of the
instance is kept at least a margin above the 0 level and every other voxel a margin below
it (so the mesh separates exactly the instance's voxels from the rest, and an instance one
voxel thick keeps a surface). Each marching-cubes cell (the 8 voxels of a 2x2x2 cube)
belongs to the block holding its lowest corner; a block reads its region plus one voxel
on its far side and the field's reach (:func:`_reach`), padded with background beyond the
volume so objects at the border are closed, and meshes each instance on the cells it
owns. Marching cubes builds every cell's triangles from that cell's 8 values alone, and
the field is the same whatever the block (the distances are capped at what can move the
mesh, :func:`_distance_cap`, and read within that), so the blocks' areas add up to the
area of the whole-volume mesh, for any block shape. Accuracy (``benchmarks/measure_vnc.py
--ellipsoids-only``): on voxelised ellipsoids with semi-axes of 10 voxels or more
(isotropic or 2:1) the area is 0.5-1.5% above the analytic value, balls a few voxels
across come out low (1-6% at a radius of 4-5 voxels, 6-11% at 3, 12-30% at 2, depending on
where the centre falls; the smoothing rounds their corners off); at 50 x 4.6 x 4.6 nm ellipsoids spanning
5-24 sections come within 1%, 2-3 sections 3-5% low, and flat-ended objects (boxes)
lose their edges to the slope: 8% low at 10 sections, 16% at 3, 27% for one section of a
184 nm square (7% for a 920 nm one).
``sphericity`` is ``pi^(1/3) (6 V)^(2/3) / A`` with ``V`` the volume the same mesh encloses
(summed blockwise by the divergence theorem), so it is at most 1 for any object, however
small; ``volume_um3`` counts voxels.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import find_contours, marching_cubes, mesh_surface_area

from orgaseg.errors import OrgasegError, OrgasegWarning, arg, in_words
from orgaseg.io.metadata import warn_if_placed_apart
from orgaseg.io.partial import atomic_path, refuse_existing
from orgaseg.io.provenance import label_command, read_provenance
from orgaseg.io.volume import Volume
from orgaseg.io.writers import writing
from orgaseg.labels import check_label_dtype, integer_labels
from orgaseg.organelles.inputs import open_input
from orgaseg.organelles.label_names import read_label_names
from orgaseg.pipeline.blocks import Block, default_block_shape, make_blocks
from orgaseg.pipeline.executors import Executor, SerialExecutor
from orgaseg.pipeline.tasks import VolumeSource
from orgaseg.progress import ProgressCallback, report

__all__ = ["Morphometrics", "check_table_path", "measure_instances", "write_table"]

#: Standard deviation (voxels, per axis) of the Gaussian smoothing the mask before marching cubes.
SMOOTHING_VOXELS = 0.7

#: The Gaussian is cut at this many standard deviations (its reach: round(0.7 * 3) = 2 voxels).
_TRUNCATE = 3.0
_REACH = int(_TRUNCATE * SMOOTHING_VOXELS + 0.5)

#: How far the smoothed mask is kept from the iso-level on either side (for the distance field, this times the
#: smallest voxel side, in nm).
_MARGIN = 0.1

#: Sections at least this many times thicker than the pixels are meshed on the signed distance field
#: (:func:`_surface_field`).
SECTIONED = 3.0


def _sectioned(spacing) -> bool:
    """Whether voxels of ``spacing`` (z, y, x) are serial sections, meshed on the signed distance field."""
    return spacing[0] >= SECTIONED * max(spacing[1:])


def _distance_cap(spacing) -> float:
    """The largest |distance| (nm) of the signed distance field that can move the mesh: a voxel within the in-plane
    smoothing's reach of a voxel whose neighbour along any axis belongs to the other side lies within this of it."""
    return float(max(spacing) + _REACH * np.hypot(spacing[1], spacing[2]))


def _reach(spacing) -> tuple[int, int, int]:
    """Voxels around a block's cells that their surface field reads, per axis (z, y, x)."""
    if not _sectioned(spacing):
        return (_REACH,) * 3
    cap = _distance_cap(spacing)  # the distances within it are exact when every voxel within it is read
    return tuple(int(np.ceil(cap / v)) + (_REACH if axis else 0) for axis, v in enumerate(spacing))


def _surface_field(mask: np.ndarray, spacing) -> np.ndarray:
    """The field whose 0 level marching cubes meshes: positive on ``mask``, negative off it.

    Near-isotropic voxels: the mask smoothed by a Gaussian of ``SMOOTHING_VOXELS`` voxels, less 0.5. Serial
    sections (z at least ``SECTIONED`` times the pixel): the signed distance to the other side in nm, with the
    voxel size (capped at :func:`_distance_cap`), smoothed in-plane only. Between two sections the mesh then
    crosses where the distances on either side balance, so an outline that shrinks from one section to the
    next is joined by a slope, as shape-based interpolation joins them, not by a step of a section's height.
    """
    if not _sectioned(spacing):
        field = ndi.gaussian_filter(mask.astype(np.float64), SMOOTHING_VOXELS, mode="constant", truncate=_TRUNCATE) - 0.5
        margin = _MARGIN
    else:
        cap = _distance_cap(spacing)
        distance = ndi.distance_transform_edt(mask, sampling=spacing) - ndi.distance_transform_edt(~mask, sampling=spacing)
        field = ndi.gaussian_filter(np.clip(distance, -cap, cap), (0, SMOOTHING_VOXELS, SMOOTHING_VOXELS),
                                    mode="constant", truncate=_TRUNCATE)
        margin = _MARGIN * min(spacing)
    # every voxel stays on its own side: the mesh separates exactly the instance's voxels from the rest
    return np.where(mask, np.maximum(field, margin), np.minimum(field, -margin))

_NM3_PER_UM3 = 1e9
_NM2_PER_UM2 = 1e6


@dataclass
class Morphometrics:
    """The result of :func:`measure_instances`.

    Attributes
    ----------
    table : dict of str to ndarray
        One entry per column, one value per instance (sorted by id).
    summary : dict of str to list
        One entry per column, one value per class (and a last row ``all``).
    provenance : dict
        What was measured and how.
    """

    table: dict[str, np.ndarray]
    summary: dict[str, list]
    provenance: dict

    def rows(self) -> list[dict]:
        """The table as one dict per instance."""
        names = list(self.table)
        return [dict(zip(names, values)) for values in zip(*(self.table[n].tolist() for n in names))]


# --- per block ---------------------------------------------------------------------


@dataclass
class _Sources:
    instances: VolumeSource
    raw: VolumeSource | None
    mask: VolumeSource | None
    voxel_size: tuple[float, float, float]


def _measure_block(sources: _Sources, block: Block) -> dict:
    """Partial sums of every instance in ``block`` (see the module docstring)."""
    volume = sources.instances.volume
    shape, spacing = volume.shape, np.asarray(sources.voxel_size)
    flat = shape[0] == 1  # a single image: outlines in its plane, not a slab's surface
    reach = (0, _REACH, _REACH) if flat else _reach(spacing)
    # the voxels whose cells this block owns, in padded coordinates (-1 and N are the background beyond)
    owned = [(r.start - (r.start == 0), r.stop + 1) for r in block.region]
    read = tuple(slice(max(0, lo - h), min(n, hi + h)) for (lo, hi), n, h in zip(owned, shape, reach))
    data = integer_labels(volume.read(read), f"{volume.path or 'the instances'}: the instance ids", non_negative=True)
    pad = [(r.start - (lo - h), (hi + h) - r.stop) for r, (lo, hi), h in zip(read, owned, reach)]
    padded = np.pad(data, pad)  # zeros: background beyond the volume
    core = tuple(slice(r.start - (lo - h), r.stop - (lo - h)) for r, (lo, _), h in zip(block.region, owned, reach))
    labels = padded[core]

    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.int64)
    local = [np.arange(n, dtype=np.float64) for n in labels.shape]
    grids = np.meshgrid(*local, indexing="ij")
    sums = np.stack([np.bincount(inverse, weights=g.ravel(), minlength=len(ids)) for g in grids], axis=1)
    mean = sums / counts[:, None]
    scatter = np.empty((len(ids), 3, 3))
    for a in range(3):
        for b in range(a, 3):
            s = np.bincount(inverse, weights=(grids[a] * grids[b]).ravel(), minlength=len(ids))
            scatter[:, a, b] = scatter[:, b, a] = (s - counts * mean[:, a] * mean[:, b]) * spacing[a] * spacing[b]
    origin = np.array([r.start for r in block.region], float)
    objects = ndi.find_objects(inverse.reshape(labels.shape) + 1)
    lo = np.array([[s.start for s in o] for o in objects]) + origin
    hi = np.array([[s.stop - 1 for s in o] for o in objects]) + origin
    result = {"id": ids, "count": counts, "mean": (mean + origin) * spacing, "scatter": scatter,
              "bbox_min": lo, "bbox_max": hi}
    if sources.raw is not None:
        raw = sources.raw.volume.read(block.region).astype(np.float64).ravel()
        finite = np.isfinite(raw)  # NaN (no data, e.g. outside an aligned stack) and infinities have no intensity
        raw, finite_inverse = raw[finite], inverse[finite]
        finite_counts = np.bincount(finite_inverse, minlength=len(ids)).astype(np.int64)
        intensity = np.bincount(finite_inverse, weights=raw, minlength=len(ids)) / np.maximum(finite_counts, 1)
        result["intensity"] = intensity  # 0 where no voxel is finite: its weight in the merge is 0
        result["intensity_count"] = finite_counts
        result["intensity_scatter"] = np.bincount(finite_inverse, weights=(raw - intensity[finite_inverse]) ** 2,
                                                  minlength=len(ids))
    if sources.mask is not None:
        inside = sources.mask.volume.read(block.region).ravel() != 0
        result["in_mask"] = np.bincount(inverse, weights=inside, minlength=len(ids)).astype(np.int64)
        result["mask_voxels"] = int(inside.sum())
    surface = np.zeros((len(ids), 2))  # area (nm^2), signed volume enclosed (nm^3)
    owned_labels = padded[tuple(slice(h, n - h) for n, h in zip(padded.shape, reach))]
    owned_ids, owned_inverse = np.unique(owned_labels.ravel(), return_inverse=True)
    owned_objects = ndi.find_objects(owned_inverse.reshape(owned_labels.shape) + 1)
    position = {int(i): n for n, i in enumerate(ids)}
    extra_ids, extra_surface = [], []
    for value, box in zip(owned_ids, owned_objects):
        if value == 0 or box is None:
            continue
        cells = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, owned_labels.shape))
        corner = np.array([c.start + lo for c, (lo, _) in zip(cells, owned)], float) * spacing
        if flat:
            part = _owned_outline(padded[1], value, cells[1:], spacing[1:], corner[1:])
        else:
            part = _owned_surface(padded, value, cells, spacing, corner, reach)
        if int(value) in position:
            surface[position[int(value)]] += part
        else:  # an instance that only reaches into this block's far voxel layer
            extra_ids.append(value)
            extra_surface.append(part)
    result["surface"] = surface
    result["extra_id"] = np.asarray(extra_ids, dtype=ids.dtype)
    result["extra_surface"] = np.asarray(extra_surface, float).reshape(-1, 2)
    keep = ids != 0
    for name in ("id", "count", "mean", "scatter", "bbox_min", "bbox_max", "intensity", "intensity_count",
                 "intensity_scatter", "in_mask", "surface"):
        if name in result:
            result[name] = result[name][keep]
    return result


def _owned_surface(padded: np.ndarray, value, cells: tuple[slice, ...], spacing: np.ndarray,
                   corner: np.ndarray, reach: tuple[int, int, int]) -> np.ndarray:
    """Mesh area (nm^2) and signed enclosed volume (nm^3) of instance ``value`` on the cells spanned by ``cells``.

    ``cells`` are owned coordinates, ``corner`` their first voxel's position in nm. The
    signed volume (divergence theorem, origin at the volume's first voxel) of the
    blocks' pieces adds up to the volume the whole mesh encloses.
    """
    if any(s.stop - s.start < 2 for s in cells):
        return np.zeros(2)
    # the field there needs ``reach`` voxels around it (:func:`_reach`); padded has them
    window = tuple(slice(s.start, s.stop + 2 * h) for s, h in zip(cells, reach))
    mask = padded[window] == value
    field = _surface_field(mask, tuple(spacing))
    inner = tuple(slice(h, -h) for h in reach)
    mask, field = mask[inner], field[inner]
    if mask.all() or not mask.any():
        return np.zeros(2)
    vertices, faces, _, _ = marching_cubes(field, 0.0, spacing=tuple(spacing))
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    vector_area = 0.5 * np.cross(b - a, c - a)
    # about the crop's corner, then moved to the common origin (keeps the numbers small)
    volume = np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0 + corner @ vector_area.sum(axis=0) / 3.0
    return np.array([float(mesh_surface_area(vertices, faces)), volume])


def _owned_outline(padded: np.ndarray, value, cells: tuple[slice, slice], spacing: np.ndarray,
                   corner: np.ndarray) -> np.ndarray:
    """Outline length (nm) and signed enclosed area (nm^2) of instance ``value`` of a single image on the
    cells (squares of 2 x 2 pixels) spanned by ``cells``, in owned coordinates of the plane ``padded``
    (which has :data:`_REACH` pixels around them).

    Marching squares on the instance mask smoothed by a Gaussian of ``SMOOTHING_VOXELS`` pixels (the 2D
    counterpart of the near-isotropic surface), every pixel kept on its own side; oriented with the instance
    on the left, so the area (Green's theorem, about the image's first pixel) of the blocks' pieces adds up
    to the area the whole outline encloses, as their lengths add up to its length.
    """
    if any(s.stop - s.start < 2 for s in cells):
        return np.zeros(2)
    window = tuple(slice(s.start, s.stop + 2 * _REACH) for s in cells)
    mask = padded[window] == value
    field = ndi.gaussian_filter(mask.astype(np.float64), SMOOTHING_VOXELS, mode="constant", truncate=_TRUNCATE) - 0.5
    field = np.where(mask, np.maximum(field, _MARGIN), np.minimum(field, -_MARGIN))
    inner = (slice(_REACH, -_REACH),) * 2
    mask, field = mask[inner], field[inner]
    if mask.all() or not mask.any():
        return np.zeros(2)
    length = area = 0.0
    for contour in find_contours(field, 0.0, positive_orientation="high"):
        points = contour * spacing + corner  # (y, x) in nm
        y0, x0, y1, x1 = points[:-1, 0], points[:-1, 1], points[1:, 0], points[1:, 1]
        length += float(np.hypot(y1 - y0, x1 - x0).sum())
        area += float((x0 * y1 - x1 * y0).sum()) / 2.0
    return np.array([length, area])


# --- merging -------------------------------------------------------------------------


def _merge(parts: list[dict], with_raw: bool, with_mask: bool) -> dict:
    """Whole-instance statistics from the blocks' partial sums."""
    def cat(name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in parts])

    ids_all = cat("id")
    ids, group = np.unique(ids_all, return_inverse=True)
    n = len(ids)
    counts_b = cat("count")
    count = np.bincount(group, weights=counts_b, minlength=n)
    mean_b = cat("mean")
    mean = np.stack([np.bincount(group, weights=counts_b * mean_b[:, a], minlength=n) for a in range(3)], 1) / count[:, None]
    delta = mean_b - mean[group]
    scatter = np.zeros((n, 3, 3))
    np.add.at(scatter, group, cat("scatter") + counts_b[:, None, None] * delta[:, :, None] * delta[:, None, :])
    bbox_min = np.full((n, 3), np.inf)
    bbox_max = np.full((n, 3), -np.inf)
    np.minimum.at(bbox_min, group, cat("bbox_min"))
    np.maximum.at(bbox_max, group, cat("bbox_max"))
    surface = np.zeros((n, 2))
    np.add.at(surface, group, cat("surface"))
    extra_ids = cat("extra_id")
    if extra_ids.size:
        np.add.at(surface, np.searchsorted(ids, extra_ids), cat("extra_surface"))
    merged = {"id": ids, "count": count.astype(np.int64), "mean": mean, "scatter": scatter,
              "bbox_min": bbox_min, "bbox_max": bbox_max, "area": surface[:, 0], "mesh_volume": np.abs(surface[:, 1])}
    if with_raw:
        intensity_b, finite_b = cat("intensity"), cat("intensity_count")
        finite = np.bincount(group, weights=finite_b, minlength=n)
        with np.errstate(divide="ignore", invalid="ignore"):  # NaN where no voxel of an instance is finite
            intensity = np.bincount(group, weights=finite_b * intensity_b, minlength=n) / finite
        d = intensity_b - intensity[group]
        merged["intensity"] = intensity
        merged["intensity_count"] = finite.astype(np.int64)
        merged["intensity_scatter"] = np.bincount(group, weights=cat("intensity_scatter") + finite_b * d * d,
                                                  minlength=n)
    if with_mask:
        merged["in_mask"] = np.bincount(group, weights=cat("in_mask"), minlength=n).astype(np.int64)
    return merged


def _table(merged: dict, voxel_size, origin, shape, names: dict[int, str] | None,
           with_raw: bool) -> dict[str, np.ndarray]:
    if shape[0] == 1:
        return _table_2d(merged, voxel_size, origin, shape, names, with_raw)
    spacing = np.asarray(voxel_size)
    count = merged["count"]
    volume_nm3 = count * float(np.prod(spacing))
    area_nm2 = merged["area"]
    with np.errstate(divide="ignore", invalid="ignore"):
        # area and volume of the same mesh: at most 1, whatever the object's size
        sphericity = np.where(area_nm2 > 0, np.pi ** (1 / 3) * (6 * merged["mesh_volume"]) ** (2 / 3) / area_nm2, np.nan)
    # second moments of the union of solid voxels: centres' scatter plus each box's own variance
    covariance = merged["scatter"] / count[:, None, None] + np.diag(spacing**2 / 12.0)
    eigen = np.linalg.eigvalsh(covariance)[:, ::-1]
    axes = 2.0 * np.sqrt(5.0 * np.clip(eigen, 0, None))
    table = {
        **_identity_columns(merged, names),
        "voxels": count,
        "volume_um3": volume_nm3 / _NM3_PER_UM3,
        "surface_area_um2": area_nm2 / _NM2_PER_UM2,
        "sphericity": sphericity,
    }
    table.update(_position_columns(merged, spacing, origin, shape, "zyx"))
    # an instance in one or two sections of an anisotropic stack is measured as a slab: flagged by its z extent
    table["z_sections"] = (np.rint(merged["bbox_max"][:, 0] - merged["bbox_min"][:, 0]) + 1).astype(np.int64)
    table["axis_major_length_nm"] = axes[:, 0]
    table["axis_intermediate_length_nm"] = axes[:, 1]
    table["axis_minor_length_nm"] = axes[:, 2]
    table["aspect_ratio"] = axes[:, 0] / axes[:, 2]
    if with_raw:
        table.update(_intensity_columns(merged))
    return table


def _table_2d(merged: dict, voxel_size, origin, shape, names: dict[int, str] | None,
              with_raw: bool) -> dict[str, np.ndarray]:
    """The table of a single image: areas, outlines and in-plane shape (no thickness, nothing along z)."""
    spacing = np.asarray(voxel_size)[1:]
    count = merged["count"]
    perimeter_nm = merged["area"]  # the outline's length, summed as the surface is in 3D
    with np.errstate(divide="ignore", invalid="ignore"):
        # area enclosed by the same outline: at most 1 (a disc), whatever the object's size
        circularity = np.where(perimeter_nm > 0, 4 * np.pi * merged["mesh_volume"] / perimeter_nm**2, np.nan)
    # second moments of the union of solid pixels; a solid ellipse with semi-axes a, b has variances a^2/4, b^2/4
    covariance = merged["scatter"][:, 1:, 1:] / count[:, None, None] + np.diag(spacing**2 / 12.0)
    eigen = np.linalg.eigvalsh(covariance)[:, ::-1]
    axes = 4.0 * np.sqrt(np.clip(eigen, 0, None))
    table = {
        **_identity_columns(merged, names),
        "pixels": count,
        "area_um2": count * float(np.prod(spacing)) / _NM2_PER_UM2,
        "perimeter_um": perimeter_nm / 1e3,
        "circularity": circularity,
    }
    table.update(_position_columns(merged, voxel_size, origin, shape, "yx"))
    table["axis_major_length_nm"] = axes[:, 0]
    table["axis_minor_length_nm"] = axes[:, 1]
    table["aspect_ratio"] = axes[:, 0] / axes[:, 1]
    if with_raw:
        table.update(_intensity_columns(merged))
    return table


def _identity_columns(merged: dict, names: dict[int, str] | None) -> dict[str, np.ndarray]:
    """Each instance's id and class name ("" where the volume names none)."""
    ids = merged["id"]
    return {"id": ids.astype(np.int64),
            "class": np.array([names.get(int(i), "") if names else "" for i in ids], dtype=object)}


def _position_columns(merged: dict, voxel_size, origin, shape, axes: str) -> dict[str, np.ndarray]:
    """Centroid and bounding box in nm along ``axes`` (``"zyx"``, or ``"yx"``: a single image's plane), and
    whether the instance touches the volume's border along them."""
    first = 3 - len(axes)
    spacing, origin = np.asarray(voxel_size, np.float64)[first:], np.asarray(origin, np.float64)[first:]
    low, high = merged["bbox_min"][:, first:], merged["bbox_max"][:, first:]
    columns = {f"centroid_{axis}_nm": merged["mean"][:, first + a] + origin[a] for a, axis in enumerate(axes)}
    columns.update({f"bbox_min_{axis}_nm": low[:, a] * spacing[a] + origin[a] for a, axis in enumerate(axes)})
    columns.update({f"bbox_max_{axis}_nm": high[:, a] * spacing[a] + origin[a] for a, axis in enumerate(axes)})
    # an instance the volume's edge cuts has lost what lies beyond: its size and shape are a part's. Along an
    # axis of one or two voxels every instance reaches a face, so those faces would flag them all: not counted
    last = np.asarray(shape[first:], dtype=np.float64) - 1
    edges = np.asarray(shape[first:]) > 2
    columns["touches_border"] = np.any(((low <= 0) | (high >= last))[:, edges], axis=1)
    return columns


def _intensity_columns(merged: dict) -> dict[str, np.ndarray]:
    """Mean and standard deviation of each instance's finite raw voxels (NaN where it has none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(merged["intensity_scatter"] / merged["intensity_count"])
    return {"mean_intensity": merged["intensity"], "std_intensity": std}

def _record_of(volume: Volume) -> dict | None:
    """The provenance record beside ``volume``, None where there is none (or none that reads)."""
    if not volume.path:
        return None
    try:
        return read_provenance(volume.path)
    except OrgasegError:
        return None


def _counted_classes(record: dict | None) -> list[str]:
    """The classes ``orgaseg instances`` numbered (its provenance's counts), those without instances
    included; empty for another volume's record."""
    counts = record.get("counts") if label_command(record) == "instances" else None
    return [str(name) for name in counts] if isinstance(counts, dict) else []


def _summary(table: dict, merged: dict, mask_voxels: int | None, voxel_size,
             counted: Sequence[str] = ()) -> dict[str, list]:
    """One row per class (``counted``, the classes the instances were numbered for, have a row even without
    an instance: a count of 0 is a result) and a last row ``all``."""
    # a single image (its table has areas): areas and the area fraction, the volumes' counterparts
    size, unit = ("area", "um2") if "area_um2" in table else ("volume", "um3")
    voxel = (float(np.prod(voxel_size[1:])) / _NM2_PER_UM2 if size == "area"
             else float(np.prod(voxel_size)) / _NM3_PER_UM3)
    columns: dict[str, list] = {"class": [], "count": [], f"total_{size}_{unit}": [], f"median_{size}_{unit}": [],
                                f"mean_{size}_{unit}": []}
    if mask_voxels is not None:
        columns[f"cell_{size}_{unit}"] = []
        columns[f"{size}_fraction"] = []
    classes = sorted(set(table["class"].tolist()) | set(counted))
    groups = [(c, table["class"] == c) for c in classes if c] + [("all", np.ones(len(table["id"]), bool))]
    for name, rows in groups:
        sizes = table[f"{size}_{unit}"][rows]
        columns["class"].append(name)
        columns["count"].append(int(rows.sum()))
        columns[f"total_{size}_{unit}"].append(float(sizes.sum()))
        columns[f"median_{size}_{unit}"].append(float(np.median(sizes)) if sizes.size else math.nan)
        columns[f"mean_{size}_{unit}"].append(float(sizes.mean()) if sizes.size else math.nan)
        if mask_voxels is not None:
            columns[f"cell_{size}_{unit}"].append(mask_voxels * voxel)
            columns[f"{size}_fraction"].append(float(merged["in_mask"][rows].sum() / mask_voxels))
    return columns


# --- the whole road ------------------------------------------------------------------


def measure_instances(
    instances,
    *,
    raw=None,
    mask=None,
    voxel_size: Sequence[float] | None = None,
    key: str | None = None,
    raw_key: str | None = None,
    mask_key: str | None = None,
    block_shape: Sequence[int] | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> Morphometrics:
    """Measure every instance of an instance volume in physical units, blockwise.

    Parameters
    ----------
    instances : str, Path, Volume or ndarray
        Instance ids (0: no instance), e.g. the output of :func:`~orgaseg.organelles.make_instances`,
        or any integer label volume :func:`orgaseg.open_volume` reads. The class of each
        instance comes from its OME-Zarr ``image-label`` properties or provenance record.
    raw : str, Path, Volume or ndarray, optional
        Intensities of the same shape: adds ``mean_intensity`` and ``std_intensity``.
    mask : str, Path, Volume or ndarray, optional
        Cell mask of the same shape (non-zero inside): adds each class's volume fraction of
        the cell to the summary.
    voxel_size : sequence of 3 float, optional
        ``(z, y, x)`` in nm; overrides the metadata or a Volume's own. Required when the volume carries none.
    key : str, optional
        Dataset inside the instances' container.
    raw_key, mask_key : str, optional
        Dataset inside the raw volume's, the mask's container.
    block_shape : sequence of 3 int, optional
        Blocks in voxels (default about 4 million voxels, aligned to the storage chunks).
    executor : Executor, optional
        Where blocks run (default: serially here).
    progress : callable, optional
        ``progress(description, done, total, **figures)`` per block.

    Returns
    -------
    Morphometrics
        ``table``: one row per instance, sizes in the units their column names give
        (``volume_um3``, ``surface_area_um2``, ``centroid_z_nm``, ...); ``summary``: per class.

    Raises
    ------
    OrgasegError
        Instance ids that are not integers, no voxel size (in the metadata or given),
        ``raw`` or ``mask`` of another shape, an empty ``mask``, a ``block_shape`` that is
        not 3 positive sizes.

    Examples
    --------
    A ball 300 nm across on voxels of 20 x 10 x 10 nm, its volume against the analytic one:

    >>> import numpy as np
    >>> from orgaseg.organelles import measure_instances
    >>> z, y, x = np.ogrid[-10:10, -20:20, -20:20]
    >>> ball = ((z * 20) ** 2 + (y * 10) ** 2 + (x * 10) ** 2 <= 150 ** 2).astype(np.uint8)
    >>> table = measure_instances(ball, voxel_size=(20, 10, 10)).table
    >>> round(float(table["volume_um3"][0]), 4), round(4 / 3 * np.pi * 0.15 ** 3, 4)
    (0.0143, 0.0141)
    """
    volume, source = open_input(instances, "instances", key=key, voxel_size=voxel_size)
    check_label_dtype(volume.dtype, f"{volume.path or 'the instances'}: the instance ids")
    if volume.attrs.get("voxel_size_assumed"):
        raise OrgasegError(f"{volume.path or 'the instances'}: no voxel size in the metadata, so nothing can be "
                           f"measured in nm; pass {arg('voxel_size')}")
    record = _record_of(volume)
    _warn_if_class_labels(volume, label_command(record))
    sources = _Sources(source, None, None, volume.voxel_size)
    if raw is not None:
        sources.raw = open_input(raw, "raw", key=raw_key, shape=volume.shape)[1]
        warn_if_placed_apart(volume, sources.raw.volume, ("the instances'", "the raw volume's"),
                             "the intensities are read from voxels that do not overlay the instances")
    if mask is not None:
        sources.mask = open_input(mask, "mask", key=mask_key, shape=volume.shape)[1]
        warn_if_placed_apart(volume, sources.mask.volume, ("the instances'", "the mask's"),
                             "the volume fractions count voxels that do not overlay the instances")
    if block_shape is None:
        block_shape = default_block_shape(volume.shape, volume.chunks)
    elif len(block_shape) != 3 or min(block_shape) < 1:
        raise OrgasegError(f"block shape must be three positive sizes (z, y, x), got {tuple(block_shape)}")
    block_shape = tuple(min(int(b), s) for b, s in zip(block_shape, volume.shape))
    blocks = make_blocks(volume.shape, block_shape)
    executor = executor or SerialExecutor()
    started = time.perf_counter()
    parts, mask_voxels, done, voxels = [], 0, 0, 0
    try:
        items = ((block, (block,)) for block in blocks)
        for block, part in executor.map(_measure_block, (sources,), items):
            parts.append(part)
            mask_voxels += part.get("mask_voxels", 0)
            done, voxels = done + 1, voxels + block.size
            report(progress, "measuring blocks", done, len(blocks),
                   voxels_per_s=round(voxels / max(time.perf_counter() - started, 1e-9)))
    finally:
        executor.forget()
    if mask is not None and mask_voxels == 0:
        raise OrgasegError("the cell mask is empty: no voxel is non-zero")
    merged = _merge(parts, raw is not None, mask is not None)
    if raw is not None:
        _warn_if_intensities_missing(merged, sources.raw.volume)
    table = _table(merged, volume.voxel_size, volume.origin, volume.shape, read_label_names(volume),
                   raw is not None)
    summary = _summary(table, merged, mask_voxels if mask is not None else None, volume.voxel_size,
                       _counted_classes(record))
    seconds = time.perf_counter() - started
    provenance = {
        "instances": volume.path or "<array>", "voxel_size": volume.voxel_size, "raw": _name(raw),
        "mask": _name(mask), "count": len(table["id"]), "blocks": len(blocks), "block_shape": block_shape,
        "seconds": round(seconds, 3), "voxels_per_s": round(volume.size / max(seconds, 1e-9)),
        "surface": (f"marching squares (the outline in the image's plane) on the mask smoothed by a Gaussian of "
                    f"{SMOOTHING_VOXELS} pixels" if volume.shape[0] == 1 else
                    f"marching cubes on the mask smoothed by a Gaussian of {SMOOTHING_VOXELS} voxels"
                    if not _sectioned(volume.voxel_size) else
                    f"marching cubes on the signed distance field (nm), smoothed in-plane by a Gaussian of "
                    f"{SMOOTHING_VOXELS} pixels"),
        "connectivity": "instances are label values (not re-split into components)",
    }
    return Morphometrics(table, summary, provenance)


def _warn_if_intensities_missing(merged: dict, raw: Volume) -> None:
    """Warn when NaN or infinite raw voxels were left out of instances' intensities (all of one's: left empty)."""
    missing = merged["count"] - merged["intensity_count"]
    if not missing.any():
        return
    partly, wholly = np.count_nonzero(missing), np.count_nonzero(merged["intensity_count"] == 0)
    warnings.warn(OrgasegWarning(
        f"{raw.path or 'the raw volume'}: {int(missing.sum()):,} voxels of {partly:,} instances are NaN or infinite "
        f"(no data): mean_intensity and std_intensity are those of the finite voxels"
        + (f", and left empty for the {wholly:,} instances that have none" if wholly else "")), stacklevel=3)


def _warn_if_class_labels(volume: Volume, command: str | None) -> None:
    """Warn when the volume is a segmentation or named labels (``command``, the one that wrote it), whose
    ids are classes, not objects."""
    if command in ("segment", "name"):
        warnings.warn(OrgasegWarning(
            f"{volume.path} is the output of orgaseg {command}: its ids are clusters or classes, so each is "
            f"measured as one object, and id 0 ({'a cluster' if command == 'segment' else 'unassigned'}) is "
            "taken for background and not measured; number the organelles first with "
            + in_words("orgaseg.organelles.make_instances", "'orgaseg instances'")),
            stacklevel=3)


def _name(data) -> str | None:
    if data is None:
        return None
    return str(data) if isinstance(data, (str, Path)) else "<array>"


# --- tables on disk ----------------------------------------------------------------------


def check_table_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """``path`` as a Path if a table can be written there, else a clear error (checked before long work).

    Raises
    ------
    OrgasegError
        Another extension than ``.csv`` or ``.parquet``, ``.parquet`` without pyarrow, or
        ``path`` exists and not ``overwrite``.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise OrgasegError(f"{path}: write tables as .csv or .parquet")
    if suffix == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise OrgasegError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow); write .csv instead") from None
    refuse_existing(path, overwrite=overwrite)
    return path


def write_table(columns: dict[str, Sequence], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write columns to ``.csv`` (or ``.parquet`` when pyarrow is installed), atomically.

    Parameters
    ----------
    columns : dict of str to sequence
        Column name -> values, every column of the same length (e.g. :attr:`Morphometrics.table`).
    path : str or Path
        The table, ``.csv`` or ``.parquet``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        Where the table was written.

    Raises
    ------
    OrgasegError
        Columns of different lengths, or a path :func:`check_table_path` refuses.
    """
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:  # csv's zip would cut every column to the shortest
        raise OrgasegError("the table's columns have different lengths: "
                           + ", ".join(f"{name} {n}" for name, n in lengths.items()))
    path = check_table_path(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    names = list(columns)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            if suffix == ".parquet":
                import pyarrow
                import pyarrow.parquet

                pyarrow.parquet.write_table(
                    pyarrow.table({n: np.asarray(columns[n]).tolist() for n in names}), temporary)
            else:
                with open(temporary, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(names)
                    writer.writerows(zip(*(_csv_values(columns[n]) for n in names)))
    return path


def _csv_values(values) -> list:
    return [("" if math.isnan(v) else f"{v:.10g}") if isinstance(v, float) else v
            for v in np.asarray(values, dtype=object).tolist()]
