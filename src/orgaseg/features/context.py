"""Superpixel context: each voxel's features plus the mean and spread of the superpixels it lies in.

Dense features describe a voxel's neighbourhood at the scales of the filters
or of the encoder's patches. Whether a dark, textured patch is a mitochondrion
or a fold of membrane is often decided by the shape around it, a few hundred
nanometres away. :class:`SuperpixelContext` wraps any dense-feature
extractor: on every slice of the block it cuts SLIC superpixels of each of the
given sizes (working pixels, on the normalised intensities, as the graph
clusterers do: :func:`orgaseg.cluster.superpixels.slic_superpixels`) and
appends, for every voxel, ``[mean || std]`` of the features over its
superpixel of each size. With ``q`` channels and sizes ``(100, 400)`` a voxel
has ``5 q`` features.

The superpixels follow intensity edges, so the pooled values average over
one structure rather than across a membrane (what a Gaussian of the same area
would do). Two uses: the refining classifier of ``orgaseg name --refine``
(default ``100,400``; ``docs/organelles.md``), and the ``context`` option of
every dense-feature strategy (``--option context=100``; none by default), which
the clusterer then reads (``docs/results.md``).

:class:`SliceNeighbours` wraps an extractor (usually a :class:`SuperpixelContext`)
and appends, for every voxel, the mean of its features on the slices above and
below: organelles run on through several sections of an ssTEM or FIB-SEM
stack, while the in-plane filters and superpixels see one section. It is the
``--z-context`` switch of ``orgaseg name --refine``.

Blockwise: the superpixels are cut on the block with its halo, which includes
a margin of twice a large superpixel's side, so a superpixel near the border
of the block's own voxels is cut with its surroundings. SLIC depends on the
whole image it is given, so features near block borders are not identical to
whole-volume features (they are for a given block plan: training and
labelling in ``orgaseg name --refine`` use the segmentation's blocks). Both
wrappers compute a block's own part (``keep``) with the rest as context:
superpixels are cut on the kept slices only (on the whole window's planes,
as before), and the wrapped extractor computes only the box that the
superpixels touching the part span (and the slice either side, for the
adjacent slices' mean), so the halo's slices cost nothing beyond their
intensities; the values are those of the whole window's features, cropped.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from orgaseg.cluster.superpixels import DEFAULT_COMPACTNESS, pool_superpixels, slic_superpixels
from orgaseg.errors import OrgasegError
from orgaseg.features.base import FeatureExtractor, Region, compute_part, resolve_keep

#: Superpixel sizes (working pixels) the refining classifier uses by default.
DEFAULT_CONTEXT_PX = (100, 400)


def parse_context(value: str | Sequence[float] | None) -> tuple[int, ...]:
    """Superpixel sizes from ``"100,400"``, a sequence, or ``"none"``/``None``/``""`` (no context).

    Raises
    ------
    OrgasegError
        A size that is not a whole number of at least 4 pixels.
    """
    if value is None:
        return ()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "0"):
            return ()
        parts = [p for p in text.replace(" ", "").split(",") if p]
    else:
        try:
            parts = list(value)
        except TypeError:
            raise OrgasegError(f"superpixel context sizes are numbers of pixels like 100,400; got {value!r}") from None
    sizes = []
    for part in parts:
        try:
            size = float(part)
        except (TypeError, ValueError):
            raise OrgasegError(f"superpixel context sizes are numbers of pixels like 100,400; got {value!r}") from None
        if not math.isfinite(size) or size < 4 or size != int(size):
            raise OrgasegError(f"a superpixel context size is a whole number of at least 4 pixels, got {part!r}")
        sizes.append(int(size))
    return tuple(sorted(set(sizes)))


class SuperpixelContext:
    """A dense-feature extractor whose features are extended by superpixel means and spreads.

    Parameters
    ----------
    extractor : FeatureExtractor
        The wrapped strategy.
    sizes : sequence of int
        Superpixel sizes in working pixels, one ``[mean || std]`` block each.
    compactness : float
        SLIC compactness on intensities in 0..1.
    """

    def __init__(self, extractor: FeatureExtractor, sizes: Sequence[int] = DEFAULT_CONTEXT_PX, *,
                 compactness: float = DEFAULT_COMPACTNESS) -> None:
        self.extractor = extractor
        self.sizes = parse_context(sizes)
        if not self.sizes:
            raise OrgasegError("superpixel context needs at least one superpixel size")
        self.compactness = float(compactness)
        margin = int(math.ceil(2 * math.sqrt(max(self.sizes))))
        inner = tuple(int(h) for h in extractor.halo)
        self.halo = (inner[0], inner[1] + margin, inner[2] + margin)
        self.n_features = int(extractor.n_features) * (1 + 2 * len(self.sizes))

    #: Computes a part of a block with the rest as context (``keep``; see FeatureExtractor).
    keeps_region = True

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        """What the wrapped features refuse of a volume's shape (z y x working voxels), refused here too."""
        check_shape = getattr(self.extractor, "check_shape", None)
        if check_shape is not None:
            check_shape(shape)

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: Region | None = None) -> np.ndarray:
        """``(z, y, x)`` normalised intensities -> ``(z, y, x, n_features)``: features, then each size's mean and std.

        ``keep`` (three slices, default the whole block) is the part whose
        features are returned. Its slices' superpixels are cut on the whole
        block's planes, as without it, and the wrapped extractor computes only
        the box those touching the part span: the same values as the whole
        block's, cropped.
        """
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 3 or min(block.shape) < 1:
            raise OrgasegError(f"superpixel context needs a non-empty 3D block (z, y, x), got shape {block.shape}")
        keep = resolve_keep(keep, block.shape)
        labels = [[slic_superpixels(block[z], superpixel_px=size, compactness=self.compactness) for size in self.sizes]
                  for z in range(keep[0].start, keep[0].stop)]
        box = (keep[0],) + _box_of_touching(labels, keep[1:])
        features = compute_part(self.extractor, block, origin, box)
        q = features.shape[-1]
        inner = tuple(slice(k.start - b.start, k.stop - b.start) for k, b in zip(keep, box))
        out = np.empty(tuple(k.stop - k.start for k in keep) + (self.n_features,), dtype=np.float32)
        out[..., :q] = features[inner]
        for z, planes in enumerate(labels):
            for i, plane in enumerate(planes):
                # the superpixels that touch the part lie whole in the box; numbered 0.. there
                ids = np.unique(plane[box[1:]], return_inverse=True)[1].reshape(features.shape[1:3])
                start = q * (1 + 2 * i)
                out[z, :, :, start:start + 2 * q] = pool_superpixels(features[z], ids)[ids[inner[1:]]]
        return out

    def config(self) -> dict:
        """The wrapped extractor's description plus the superpixel sizes."""
        return {"superpixel_context": {"sizes_px": list(self.sizes), "compactness": self.compactness},
                "extractor": self.extractor.config()}


class SliceNeighbours:
    """A dense-feature extractor whose features are extended by their mean on the adjacent z slices.

    For a voxel on slice ``z`` it appends ``(f[z - 1] + f[z + 1]) / 2`` of the
    wrapped extractor's features ``f`` at the same ``(y, x)``. The halo grows by
    one slice, so inside the volume the neighbours are the true ones whatever
    the block plan; on the first and last slice of the volume the missing
    neighbour is the slice itself.

    Parameters
    ----------
    extractor : FeatureExtractor
        The wrapped strategy.
    """

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        inner = tuple(int(h) for h in extractor.halo)
        self.halo = (inner[0] + 1, inner[1], inner[2])
        self.n_features = 2 * int(extractor.n_features)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Superpixel sizes of the wrapped context (empty when it has none)."""
        return tuple(getattr(self.extractor, "sizes", ()))

    #: Computes a part of a block with the rest as context (``keep``; see FeatureExtractor).
    keeps_region = True

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: Region | None = None) -> np.ndarray:
        """``(z, y, x)`` normalised intensities -> ``(z, y, x, n_features)``: features, then their neighbours' mean.

        ``keep`` (three slices, default the whole block) is the part whose
        features are returned; the wrapped extractor computes the part and
        the slice on either side of it within the block.
        """
        keep = resolve_keep(keep, np.shape(block))
        depth = np.shape(block)[0]
        below, above = max(0, keep[0].start - 1), min(depth, keep[0].stop + 1)
        features = compute_part(self.extractor, block, origin, (slice(below, above),) + keep[1:])
        # on the block's first and last slice the missing neighbour is the slice itself
        padded = np.concatenate([features[:1]] * (below == keep[0].start) + [features]
                                + [features[-1:]] * (above == keep[0].stop), axis=0)
        own = padded[1:-1]
        return np.concatenate([own, 0.5 * (padded[:-2] + padded[2:])], axis=-1)

    def config(self) -> dict:
        """The wrapped extractor's description, marked as extended by the adjacent slices."""
        return {"slice_neighbours": True, "extractor": self.extractor.config()}


def _box_of_touching(labels: list[list[np.ndarray]], part: tuple[slice, slice]) -> tuple[slice, slice]:
    """The ``(y, x)`` box of every superpixel (of every slice and size) with a pixel in ``part``."""
    rows = np.zeros(labels[0][0].shape[0], dtype=bool)
    columns = np.zeros(labels[0][0].shape[1], dtype=bool)
    for planes in labels:
        for plane in planes:
            touching = np.isin(plane, np.unique(plane[part]))
            rows |= touching.any(axis=1)
            columns |= touching.any(axis=0)
    (y,), (x,) = np.nonzero(rows), np.nonzero(columns)
    return slice(int(y[0]), int(y[-1]) + 1), slice(int(x[0]), int(x[-1]) + 1)


__all__ = ["DEFAULT_CONTEXT_PX", "SliceNeighbours", "SuperpixelContext", "parse_context"]
