"""Dense features from the xy, xz and yz planes, averaged: 2D token encoders made consistent in 3D.

A 2D token strategy (:mod:`orgaseg.features.cover_stride`,
:mod:`orgaseg.features.expand_stride`) encodes every z slice on its own, so
neighbouring slices can fall into different clusters where a structure's
outline changes (label flicker along z). On near-isotropic data (FIB-SEM) the
same encoder can also read the volume along the other two orthogonal planes:
:class:`PlaneFusion` runs the 2D strategy on the volume's xy slices, on its xz
slices and on its yz slices and averages the three feature vectors of every
voxel before clustering. Each voxel's features then depend on its context in
all three directions, as an isotropic 3D structure's should.

Plane orientation (the encoder is not rotation invariant, so this is fixed)
----------------------------------------------------------------------------
========  ===========  ==========  =============
plane     slice axis   image rows  image columns
========  ===========  ==========  =============
``xy``    z            y           x
``xz``    y            z           x
``yz``    x            z           y
========  ===========  ==========  =============

Rows run along z in both vertical planes, as in a reslice viewed with z
upward. The 2D strategy is anchored at absolute coordinates through
``origin``, which is permuted with the block, so blockwise features equal
whole-volume features in every plane.

Context: the 2D strategy reaches ``h`` rows and ``h`` columns around a pixel
and no slices; fusing planes needs that context along every axis an image of
the chosen planes spans: with all three planes, ``h`` voxels in z, y and x.
Cost: one 2D pass per plane, i.e. three times the encoder forward passes of
the xy plane alone for a cube, plus a z halo as large as the in-plane one
(blocks of a few whole slices read many more slices than they own: give
near-cubic blocks with ``--block-shape`` on large volumes).

Only meaningful near isotropy: on a stack whose z voxel is several times its
in-plane voxel, an xz image is the stack's structures squashed along z, which
the encoder never saw in training. A working pixel size (``--pixel-size``)
resamples z too when it is within :data:`ANISOTROPY_LIMIT` of the in-plane
size; beyond that the fusion is refused.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Sequence

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning, arg
from orgaseg.features.base import (
    AxisCount,
    EncodesFieldsOfView,
    FeatureExtractor,
    Region,
    compute_part,
    resolve_keep,
)

#: Each plane's permutation of the block's axes ``(z, y, x)``: ``(slice axis, rows, columns)``.
PLANES: dict[str, tuple[int, int, int]] = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}

#: The default: the xy slices only (the 2D strategy unchanged).
DEFAULT_PLANES = ("xy",)

#: Largest ratio of voxel sides (coarsest / finest) across a plane at which the fusion is allowed; the
#: working grid (:mod:`orgaseg.pipeline.resample`) resamples z to the working pixel size within the same ratio.
ANISOTROPY_LIMIT = 2.0

#: Above this ratio the fusion runs but warns that the vertical planes see stretched structures.
ANISOTROPY_WARNING = 1.2


def parse_planes(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The planes named by ``value``: ``"xy,xz,yz"``, a list of names, or None for the default.

    Raises
    ------
    OrgasegError
        For an unknown plane, a repeated one, or none.
    """
    if value is None:
        return DEFAULT_PLANES
    names = value.split(",") if isinstance(value, str) else list(value)
    planes = tuple(str(name).strip().lower() for name in names if str(name).strip())
    unknown = [name for name in planes if name not in PLANES]
    if not planes or unknown:
        raise OrgasegError(f"planes must be a comma-separated subset of {', '.join(PLANES)} (e.g. planes=xy,xz,yz), "
                           f"got {value!r}")
    if len(set(planes)) != len(planes):
        raise OrgasegError(f"planes names a plane twice: {value!r}")
    return planes


def check_isotropy(planes: Sequence[str], voxel_size: Sequence[float]) -> None:
    """Refuse planes across which the voxel is more than :data:`ANISOTROPY_LIMIT` times longer on one side.

    Warns (:class:`~orgaseg.errors.OrgasegWarning`) above :data:`ANISOTROPY_WARNING`.
    """
    for plane in planes:
        _, rows, columns = PLANES[plane]
        sides = float(voxel_size[rows]), float(voxel_size[columns])
        ratio = max(sides) / min(sides)
        if ratio > ANISOTROPY_LIMIT:
            raise OrgasegError(
                f"features on the {plane} plane need near-isotropic voxels, but the working voxel size "
                f"{tuple(float(v) for v in voxel_size)} nm (z, y, x) is {ratio:.1f}x longer along one of its sides: "
                f"resample with {arg('pixel_size')} (z follows when it is within {ANISOTROPY_LIMIT:g}x of the in-plane "
                "size) or keep the default planes=xy")
        if ratio > ANISOTROPY_WARNING:
            warnings.warn(OrgasegWarning(f"the {plane} plane's voxels are {ratio:.2f}x longer along one side: the "
                                         "encoder sees structures stretched by that much on that plane"), stacklevel=3)


class PlaneFusion(EncodesFieldsOfView):
    """A 2D dense-feature strategy run on several orthogonal planes, its features averaged.

    Parameters
    ----------
    extractor : FeatureExtractor
        The 2D strategy (it encodes the first axis' slices on their own).
    planes : sequence of str
        Names from :data:`PLANES`.

    Notes
    -----
    The fused features have the same width as the 2D strategy's, so a
    clusterer sees the same kind of vector; each plane's contribution is
    weighted equally. See the module notes for orientation, context and cost.
    """

    def __init__(self, extractor: FeatureExtractor, planes: Sequence[str]) -> None:
        self.extractor = extractor
        self.planes = parse_planes(planes)
        self.n_features = int(extractor.n_features)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Context voxels each side ``(z, y, x)``: every plane's 2D context along the axes it spans."""
        halo = [0, 0, 0]
        for plane in self.planes:
            for position, axis in enumerate(PLANES[plane]):
                halo[axis] = max(halo[axis], int(self.extractor.halo[position]))
        return tuple(halo)

    # the encoder, as the cost estimate (orgaseg.pipeline.cost) times it
    @property
    def encoder(self):
        return self.extractor.encoder

    @property
    def fov(self) -> int:
        return self.extractor.fov

    @property
    def field_of_view_shape(self) -> tuple[int, ...]:
        return self.extractor.field_of_view_shape

    @property
    def batch_size(self) -> int:
        return self.extractor.batch_size

    @property
    def device(self):
        return self.extractor.device

    def fields_of_view_axes(self) -> list[tuple[AxisCount, AxisCount, AxisCount]]:
        """Per-axis counts of every plane's fields of view, in the volume's axis order (one term per plane's)."""
        terms = []
        for plane in self.planes:
            order = PLANES[plane]  # the plane's axis i is the volume's axis order[i]
            for term in self.extractor.fields_of_view_axes():
                terms.append(tuple(term[order.index(axis)] for axis in range(3)))
        return terms


    def config(self) -> dict:
        """A JSON-serialisable description (provenance and resume signatures)."""
        return {"kind": "planes", "planes": list(self.planes), "fusion": "mean", "extractor": self.extractor.config()}

    #: Computes a part of a block with the rest as context (``keep``; see FeatureExtractor).
    keeps_region = True

    #: ``progress(description, done, total)`` after every batch of every plane, counted over the planes.
    progress = None

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: Region | None = None) -> np.ndarray:
        """The mean over the planes of the 2D strategy's features.

        Parameters
        ----------
        block : ndarray, shape (z, y, x)
            Normalised intensities.
        origin : tuple of int
            Absolute ``(z, y, x)`` index of ``block[0, 0, 0]``.
        keep : tuple of slice, optional
            The part of ``block`` whose features are returned (default all of
            it): a 2D strategy that keeps regions encodes the part's slices
            only, with the rest of the block as context.

        Returns
        -------
        ndarray, shape (z, y, x, n_features) of ``block[keep]``, float32
        """
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 3 or min(block.shape) < 1:
            raise OrgasegError(f"plane fusion needs a non-empty 3D block (z, y, x), got shape {block.shape}")
        keep = resolve_keep(keep, block.shape)
        fused = None
        inner = getattr(self.extractor, "progress", None)
        for index, plane in enumerate(self.planes):
            order = PLANES[plane]
            image = np.ascontiguousarray(block.transpose(order))
            if self.progress is not None:  # one count over the planes, not one per plane
                self.extractor.progress = partial(_plane_progress, self.progress, index, len(self.planes))
            try:
                features = compute_part(self.extractor, image, _permute(origin, order), _permute(keep, order))
            finally:
                if self.progress is not None:
                    self.extractor.progress = inner
            features = features.transpose(tuple(np.argsort(order)) + (3,))
            if fused is None:
                fused = np.array(features, dtype=np.float32, order="C")
            else:
                fused += features
        if len(self.planes) > 1:
            fused /= len(self.planes)
        return fused


def fuse_planes(extractor: FeatureExtractor, planes: str | Sequence[str] | None,
                voxel_size: Sequence[float]) -> FeatureExtractor:
    """``extractor`` itself for the xy plane alone, else a :class:`PlaneFusion` of the named planes.

    Parameters
    ----------
    extractor : FeatureExtractor
        A 2D strategy.
    planes : str, sequence of str or None
        ``"xy,xz,yz"``, a list of plane names, or None (xy only).
    voxel_size : sequence of float
        The working voxel size in nm ``(z, y, x)``, checked with :func:`check_isotropy`.
    """
    planes = parse_planes(planes)
    if planes == DEFAULT_PLANES:
        return extractor
    check_isotropy(planes, voxel_size)
    return PlaneFusion(extractor, planes)


def _plane_progress(progress, index: int, planes: int, description: str, done: int, total: int, **figures) -> None:
    """A 2D strategy's batches of plane ``index`` of ``planes``, reported as a count over all the planes."""
    progress("plane fusion features", index * total + done, planes * total, **figures)


def _permute(values: Sequence, order: Sequence[int]) -> tuple:
    return tuple(values[axis] for axis in order)
