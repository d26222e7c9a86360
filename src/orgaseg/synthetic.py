"""A procedural EM-like cell phantom with exact ground truth.

:func:`make_cell` draws one cell as a FIB-SEM stack would show it: membranes
and dense structures dark, cytoplasm mid-grey with a fine granular texture,
the resin outside the cell light and smooth. Inside sit a nucleus (speckled
chromatin, heterochromatin clumps near a double envelope), elongated
mitochondria (dark outer membrane, cristae stripes across the long axis) and
secretory granules (dark dense core, bright halo). Every voxel's class is
known exactly, so the phantom serves the demo and fast tests; it is not a
substitute for real data in benchmarks.

All sizes are physical (nanometres) and drawn from the seed before they meet
the voxel grid, so the same seed at another voxel size gives a cell of the
same physical make-up, sampled with more or fewer voxels per organelle.
Mitochondria and granule cores are drawn at the same mean grey level on
purpose: intensity alone cannot tell them apart, their texture can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from orgaseg.errors import OrgasegError

CLASS_NAMES = ("background", "cytoplasm", "nucleus", "mitochondria", "granules", "membrane")
BACKGROUND, CYTOPLASM, NUCLEUS, MITOCHONDRIA, GRANULES, MEMBRANE = range(len(CLASS_NAMES))

# Physical sizes, nm.
_MEMBRANE_NM = 25.0  # plasma membrane shell (2-3 voxels at 10 nm)
_ENVELOPE_NM = (12.0, 32.0, 44.0)  # nuclear envelope: outer shell | lighter gap | inner shell
_MITO_RADIUS_NM = (125.0, 200.0)  # 250-400 nm wide
_MITO_LENGTH_NM = (500.0, 2000.0)
_MITO_WALL_NM = 15.0  # dark outer membrane
_CRISTAE_PERIOD_NM = (60.0, 90.0)
_GRANULE_RADIUS_NM = (75.0, 150.0)  # 150-300 nm across
_GRANULE_HALO_NM = 25.0  # bright ring around the dense core
_GAP_NM = 20.0  # cytoplasm kept between organelles, and between them and membranes

# Shares of the cell's voxels that mitochondria and granules are placed up to.
_MITO_SHARE = 0.06
_GRANULE_SHARE = 0.06

# Grey levels of the clean image (before blur and noise).
_GREY_BACKGROUND = 200.0
_GREY_CYTOPLASM = 145.0
_GREY_MEMBRANE = 60.0
_GREY_NUCLEOPLASM = 125.0
_GREY_HETEROCHROMATIN = 85.0
_GREY_ENVELOPE_GAP = 160.0
_GREY_MITO_MATRIX = 115.0
_GREY_MITO_DARK = 45.0  # outer membrane and cristae
_GREY_GRANULE_CORE = 85.0  # about the mitochondria's mean; matched to it after the blur
_GREY_GRANULE_HALO = 215.0


@dataclass
class Phantom:
    """A synthetic cell: raw image and exact labels.

    Attributes
    ----------
    raw : ndarray of uint8, shape (z, y, x)
        The EM-like image.
    labels : ndarray of uint8, shape (z, y, x)
        Class of every voxel, an index into ``class_names``
        (0 = background outside the cell).
    voxel_size : tuple of float
        Voxel size in nm, ``(z, y, x)``.
    seed : int
        The seed the phantom was drawn with.
    class_names : tuple of str
        Name of each label value.
    """

    raw: np.ndarray
    labels: np.ndarray
    voxel_size: tuple[float, float, float]
    seed: int
    class_names: tuple[str, ...] = CLASS_NAMES


def make_cell(
    shape: Sequence[int] = (64, 256, 256),
    voxel_size: Sequence[float] = (10.0, 10.0, 10.0),
    seed: int = 0,
    *,
    noise: float = 12.0,
    blur_nm: float = 8.0,
) -> Phantom:
    """Draw an EM-like cell with exact ground truth.

    The cell (a deformed ellipsoid) fills most of the field in y and x; in z
    it is at least as deep as it is wide, so a thin stack is a slab through
    its middle. Organelles are placed by rejection so they never overlap each
    other, the nucleus or the plasma membrane; they may be cut by the edges
    of the field, as in a real crop.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(z, y, x)`` in voxels.
    voxel_size : sequence of 3 float
        Voxel size in nm ``(z, y, x)``; organelle sizes are physical, so an
        anisotropic voxel size gives fewer slices per organelle.
    seed : int
        Seed of the random generator; the same seed gives identical arrays.
    noise : float
        Standard deviation of the additive Gaussian noise in grey levels; a
        Poisson-like shot component of half that size at mid-grey is added.
    blur_nm : float
        Standard deviation of the Gaussian optical blur in nm.

    Returns
    -------
    Phantom
        ``raw`` and ``labels`` (uint8, shape ``shape``), labels indexing
        :data:`CLASS_NAMES`.

    Raises
    ------
    OrgasegError
        If the shape is not 3 positive integers, the voxel size not 3
        positive numbers, the seed negative, or noise / blur negative.
    """
    shape, voxel_size = _check_grid(shape, voxel_size)
    seed = _check_seed(seed)
    noise = _check_non_negative(noise, "noise")
    blur_nm = _check_non_negative(blur_nm, "blur_nm")

    # Geometry and texture draw from separate streams: the geometry's draws
    # do not depend on how many voxels the textures need.
    geometry_seq, texture_seq = np.random.SeedSequence(seed).spawn(2)
    geo = np.random.default_rng(geometry_seq)
    tex = np.random.default_rng(texture_seq)

    grid = _Grid(shape, voxel_size)
    fine = _band_pass_noise(tex, grid, 8.0, 24.0)
    image = _GREY_BACKGROUND + 3.0 * fine
    labels = np.zeros(shape, np.uint8)

    cell_depth, cell_center, cell_radii = _draw_cell(geo, grid, image, labels, fine)
    # Organelles keep clear of the membrane, the nucleus and each other.
    forbidden = cell_depth < _MEMBRANE_NM + _GAP_NM
    _draw_nucleus(geo, tex, grid, image, labels, forbidden, cell_center, cell_radii)

    cell_voxels = np.count_nonzero(labels)
    mito_voxels = _draw_mitochondria(geo, grid, image, labels, forbidden, int(_MITO_SHARE * cell_voxels))
    cores = _draw_granules(geo, grid, image, labels, forbidden, int(_GRANULE_SHARE * cell_voxels))

    sigma = [blur_nm / v for v in voxel_size]
    image = ndi.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)
    if mito_voxels and cores.any():
        # Give the dense cores the mitochondria's mean grey level as seen after
        # the blur (which mixes mitochondria with the lighter cytoplasm). The
        # blur is linear, so redrawing the cores `shift` lighter adds
        # `shift * blurred core mask` to the blurred image.
        shift = image[labels == MITOCHONDRIA].mean() - _GREY_GRANULE_CORE
        image += shift * ndi.gaussian_filter(cores.astype(np.float32), sigma, mode="nearest", truncate=3.0)
    image += tex.standard_normal(shape, dtype=np.float32) * np.sqrt(
        noise**2 * (1.0 + 0.25 * np.maximum(image, 0.0) / 128.0)
    )
    raw = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Phantom(raw=raw, labels=labels, voxel_size=voxel_size, seed=seed)


def make_cell_2d(
    shape: Sequence[int] = (512, 512),
    pixel_size: float = 10.0,
    seed: int = 0,
    *,
    noise: float = 12.0,
    blur_nm: float = 8.0,
) -> Phantom:
    """Draw a single section through a phantom cell (arrays of shape ``(1, y, x)``).

    Parameters
    ----------
    shape : sequence of 2 int
        Image shape ``(y, x)`` in pixels.
    pixel_size : float
        Pixel size in nm (also the section thickness).
    seed : int
        As for :func:`make_cell`.
    noise : float
        As for :func:`make_cell`.
    blur_nm : float
        As for :func:`make_cell`.

    Returns
    -------
    Phantom
        ``raw`` and ``labels`` of shape ``(1, y, x)``, ``voxel_size`` ``(pixel_size,) * 3``.

    Raises
    ------
    OrgasegError
        A shape that is not 2 positive integers, and as :func:`make_cell`.
    """
    if isinstance(shape, (str, bytes)) or len(shape) != 2:
        raise OrgasegError(f"make_cell_2d needs a 2D shape (y, x), got {shape!r}")
    return make_cell((1, *shape), (pixel_size,) * 3, seed, noise=noise, blur_nm=blur_nm)


# -- argument checks ---------------------------------------------------------


def _check_grid(shape, voxel_size) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise OrgasegError(f"shape must be 3 integers (z, y, x), got {shape!r}") from None
    integers = all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in dims)
    if len(dims) != 3 or not integers or min(dims) < 1:
        raise OrgasegError(f"shape must be 3 positive integers (z, y, x), got {shape!r}")
    try:
        sizes = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise OrgasegError(f"voxel_size must be 3 positive numbers in nm (z, y, x), got {voxel_size!r}") from None
    if len(sizes) != 3 or not all(math.isfinite(v) and v > 0 for v in sizes):
        raise OrgasegError(f"voxel_size must be 3 positive numbers in nm (z, y, x), got {voxel_size!r}")
    return tuple(int(n) for n in dims), sizes


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise OrgasegError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_non_negative(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OrgasegError(f"{name} must be a non-negative number, got {value!r}") from None
    if not (math.isfinite(number) and number >= 0):
        raise OrgasegError(f"{name} must be a non-negative number, got {value!r}")
    return number


# -- grid and textures -------------------------------------------------------


class _Grid:
    """Voxel-centre coordinates in nm and local bounding boxes around objects."""

    def __init__(self, shape: tuple[int, int, int], voxel_size: tuple[float, float, float]):
        self.shape = shape
        self.voxel_size = np.asarray(voxel_size)
        self.extent = self.voxel_size * shape
        self.axes = [((np.arange(n) + 0.5) * v).astype(np.float32) for n, v in zip(shape, voxel_size)]

    def box(self, lo_nm, hi_nm) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the physical box ``[lo_nm, hi_nm]``; None if outside the field."""
        lo = np.maximum(np.floor(np.asarray(lo_nm) / self.voxel_size), 0).astype(int)
        hi = np.minimum(np.ceil(np.asarray(hi_nm) / self.voxel_size) + 1, self.shape).astype(int)
        if np.any(hi <= lo):
            return None
        return tuple(slice(a, b) for a, b in zip(lo, hi))

    def coords(self, region) -> list[np.ndarray]:
        """Broadcastable z, y, x coordinates (nm) of the voxels in ``region``."""
        return [
            self.axes[i][region[i]].reshape([-1 if j == i else 1 for j in range(3)])
            for i in range(3)
        ]

    def voxel_of(self, point_nm) -> tuple[int, int, int] | None:
        index = np.floor(np.asarray(point_nm) / self.voxel_size).astype(int)
        if np.any(index < 0) or np.any(index >= self.shape):
            return None
        return tuple(index)


def _band_pass_noise(rng, grid: _Grid, fine_nm: float, coarse_nm: float, region=None) -> np.ndarray:
    """White noise band-passed between two physical scales, scaled to unit std."""
    shape = grid.shape if region is None else tuple(s.stop - s.start for s in region)
    white = rng.standard_normal(shape, dtype=np.float32)
    texture = ndi.gaussian_filter(white, fine_nm / grid.voxel_size, mode="wrap")
    if coarse_nm:
        texture -= ndi.gaussian_filter(white, coarse_nm / grid.voxel_size, mode="wrap")
    return texture / max(float(texture.std()), 1e-6)


# -- cell and nucleus --------------------------------------------------------


def _blob_depth(coords, center, radii, rotation: np.ndarray, bumps) -> np.ndarray:
    """Approximate depth in nm below the surface of a deformed ellipsoid (negative outside).

    The radius along each direction is scaled by ``1 + f``, where ``f`` is a
    sum of smooth bumps ``a * exp((cos(angle to n) - 1) / 0.3)``. The depth is
    the first-order estimate ``(1 + f - rho) * r_eff``: exact for a sphere,
    close near the surface of a mildly deformed ellipsoid, which is where the
    membranes are drawn.
    """
    offsets = [c - p for c, p in zip(coords, center)]
    # Coordinates in the blob's frame, normalised by its radii.
    q = [
        (rotation[0, i] * offsets[0] + rotation[1, i] * offsets[1] + rotation[2, i] * offsets[2]) / radii[i]
        for i in range(3)
    ]
    rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    rho = np.maximum(rho, 1e-6)
    unit = [qi / rho for qi in q]
    deform = np.zeros_like(rho)
    for amplitude, normal in bumps:
        cosine = unit[0] * normal[0] + unit[1] * normal[1] + unit[2] * normal[2]
        deform += amplitude * np.exp((cosine - 1.0) / 0.3)
    r_eff = 1.0 / np.sqrt((unit[0] / radii[0]) ** 2 + (unit[1] / radii[1]) ** 2 + (unit[2] / radii[2]) ** 2)
    return (1.0 + deform - rho) * r_eff


def _random_bumps(rng, count: int, amplitude: float):
    normals = rng.standard_normal((count, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return [(a, n) for a, n in zip(rng.uniform(-amplitude, amplitude, count), normals)]


def _draw_cell(geo, grid: _Grid, image, labels, fine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell body, cytoplasm texture and plasma membrane.

    Returns the depth (nm) of every voxel below the cell surface, the cell's
    centre and its radii (nm).
    """
    center = grid.extent / 2 + geo.uniform(-0.03, 0.03, 3) * grid.extent
    radii = geo.uniform(0.38, 0.43, 3) * grid.extent
    # A thin stack is a slab through the middle of a cell as deep as it is wide.
    radii[0] = max(radii[0], min(radii[1], radii[2]))
    angle = geo.uniform(0, np.pi)  # in-plane orientation
    rotation = Rotation.from_euler("x", angle).as_matrix()  # rotates y and x (zyx order)
    bumps = _random_bumps(geo, 6, 0.2)
    depth = np.empty(grid.shape, np.float32)
    # A few slices at a time: the depth's temporaries would be ~40 bytes a voxel.
    step = max(1, 2**21 // (grid.shape[1] * grid.shape[2]))
    for z in range(0, grid.shape[0], step):
        slab = (slice(z, min(z + step, grid.shape[0])), slice(None), slice(None))
        depth[slab] = _blob_depth(grid.coords(slab), center, radii, rotation, bumps)

    cell = depth > 0
    # Where the voxel is coarser than the shell (z of an anisotropic stack) the
    # shell is still closed: every cell voxel touching the outside is membrane.
    touching_outside = cell & ~ndi.binary_erosion(cell, ndi.generate_binary_structure(3, 1), border_value=1)
    membrane = (cell & (depth < _MEMBRANE_NM)) | touching_outside
    labels[cell] = CYTOPLASM
    labels[membrane] = MEMBRANE
    image[cell] = _GREY_CYTOPLASM + 14.0 * fine[cell]
    image[membrane] = _GREY_MEMBRANE
    return depth, center, radii


def _draw_nucleus(geo, tex, grid: _Grid, image, labels, forbidden, cell_center, cell_radii) -> None:
    """Nucleus with speckled chromatin, peripheral heterochromatin and a double envelope."""
    radii = geo.uniform(0.38, 0.42) * min(cell_radii[1:]) * geo.uniform(0.9, 1.1, 3)
    # Off the cell's centre in y and x (but well inside), mid-field in z so it is seen.
    center = np.r_[grid.extent[0] / 2, cell_center[1:] + geo.uniform(-0.25, 0.25, 2) * (cell_radii[1:] - radii[1:])]
    rotation = Rotation.random(random_state=geo).as_matrix()
    bumps = _random_bumps(geo, 4, 0.08)
    reach = radii.max() * 1.4 + _GAP_NM
    region = grid.box(center - reach, center + reach)
    if region is None:
        return
    depth = _blob_depth(grid.coords(region), center, radii, rotation, bumps)
    local_labels, local_image, local_forbidden = labels[region], image[region], forbidden[region]
    nucleus = (depth > 0) & (local_labels == CYTOPLASM)
    local_forbidden |= depth > -_GAP_NM

    # Heterochromatin: coarse clumps, more of them close to the envelope.
    clumps = _band_pass_noise(tex, grid, 30.0, 0.0, region)
    heterochromatin = clumps + 2.2 * np.exp(-depth / 60.0) > 1.1
    # Chromatin speckle is coarser than the cytoplasm's granularity.
    speckle = _band_pass_noise(tex, grid, 12.0, 36.0, region)
    grey = np.where(
        heterochromatin,
        _GREY_HETEROCHROMATIN + 8.0 * speckle,
        _GREY_NUCLEOPLASM + 16.0 * speckle,
    )
    outer, gap, inner = _ENVELOPE_NM
    grey = np.where(depth < inner, _GREY_MEMBRANE, grey)
    grey = np.where((depth >= outer) & (depth < gap), _GREY_ENVELOPE_GAP, grey)
    local_image[nucleus] = grey[nucleus]
    local_labels[nucleus] = NUCLEUS


# -- organelles placed by rejection ------------------------------------------


def _random_point_in_field(geo, grid: _Grid, forbidden):
    """A random point (nm) inside the field and not forbidden, or None."""
    point = geo.uniform(0, 1, 3) * grid.extent
    voxel = grid.voxel_of(point)
    return None if voxel is None or forbidden[voxel] else point


def _place(forbidden, region, footprint) -> bool:
    """Claim ``footprint`` (an object plus its gap) in ``region`` unless it hits forbidden voxels."""
    local = forbidden[region]
    if np.any(local & footprint):
        return False
    local |= footprint
    return True


def _draw_mitochondria(geo, grid: _Grid, image, labels, forbidden, target_voxels: int) -> int:
    """Curved capsules with a dark outer membrane and transverse cristae; returns voxels drawn."""
    drawn = 0
    for _ in range(500):
        if drawn >= target_voxels:
            break
        center = _random_point_in_field(geo, grid, forbidden)
        radius = geo.uniform(*_MITO_RADIUS_NM)
        length = np.exp(geo.uniform(*np.log(_MITO_LENGTH_NM)))  # short ones more often
        axis, bend_direction = Rotation.random(random_state=geo).as_matrix()[:, :2].T
        bend = geo.uniform(-0.25, 0.25) * length
        period = geo.uniform(*_CRISTAE_PERIOD_NM)
        phase = geo.uniform(0, 2 * np.pi)
        if center is None:
            continue
        # Centre line: a bent polyline of three segments, caps beyond its ends.
        t = np.linspace(-0.5, 0.5, 4)[:, None]
        points = center + t * (length - 2 * radius) * axis + bend * (1 - 4 * t**2) * bend_direction
        if not _centre_line_free(grid, forbidden, points):
            continue
        region = grid.box(points.min(0) - radius - _GAP_NM, points.max(0) + radius + _GAP_NM)
        if region is None:
            continue
        distance, arc = _polyline_distance(grid.coords(region), points)
        if not _place(forbidden, region, distance < radius + _GAP_NM):
            continue
        body = distance < radius
        depth = radius - distance
        cristae = (depth > 2 * _MITO_WALL_NM) & (np.cos(2 * np.pi * arc / period + phase) > 0.3)
        grey = np.where((depth < _MITO_WALL_NM) | cristae, _GREY_MITO_DARK, _GREY_MITO_MATRIX)
        image[region][body] = grey[body]
        labels[region][body] = MITOCHONDRIA
        drawn += int(np.count_nonzero(body))
    return drawn


def _centre_line_free(grid: _Grid, forbidden, points) -> bool:
    """Cheap pre-check: no sample of the centre line inside the field is forbidden."""
    for a, b in zip(points[:-1], points[1:]):
        for s in np.linspace(0, 1, 6):
            voxel = grid.voxel_of(a + s * (b - a))
            if voxel is not None and forbidden[voxel]:
                return False
    return True


def _polyline_distance(coords, points) -> tuple[np.ndarray, np.ndarray]:
    """Distance (nm) to a polyline and arc length (nm) of the nearest point along it."""
    best = arc = None
    start = 0.0
    for i, (a, b) in enumerate(zip(points[:-1], points[1:])):
        edge = b - a
        length = float(np.linalg.norm(edge))
        rel = [c - p for c, p in zip(coords, a)]
        t = (rel[0] * edge[0] + rel[1] * edge[1] + rel[2] * edge[2]) / length**2
        # The end segments carry the arc length on past the ends, into the caps.
        t_arc = np.clip(t, 0 if i > 0 else -np.inf, 1 if i < len(points) - 2 else np.inf)
        tc = np.clip(t, 0, 1)
        dist = np.sqrt(sum((r - tc * e) ** 2 for r, e in zip(rel, edge)))
        s = start + t_arc * length
        if best is None:
            best, arc = dist, s
        else:
            closer = dist < best
            best = np.where(closer, dist, best)
            arc = np.where(closer, s, arc)
        start += length
    return best, arc


def _draw_granules(geo, grid: _Grid, image, labels, forbidden, target_voxels: int) -> np.ndarray:
    """Spheres with a dark dense core and a bright halo; returns the mask of the cores."""
    cores = np.zeros(grid.shape, bool)
    drawn = 0
    for _ in range(3000):
        if drawn >= target_voxels:
            break
        center = _random_point_in_field(geo, grid, forbidden)
        radius = geo.uniform(*_GRANULE_RADIUS_NM)
        if center is None:
            continue
        reach = radius + _GAP_NM
        region = grid.box(center - reach, center + reach)
        if region is None:
            continue
        coords = grid.coords(region)
        distance = np.sqrt(sum((c - p) ** 2 for c, p in zip(coords, center)))
        if not _place(forbidden, region, distance < reach):
            continue
        body = distance < radius
        core = distance < radius - _GRANULE_HALO_NM
        image[region][body] = np.where(core, _GREY_GRANULE_CORE, _GREY_GRANULE_HALO)[body]
        labels[region][body] = GRANULES
        cores[region] |= core
        drawn += int(np.count_nonzero(body))
    return cores
