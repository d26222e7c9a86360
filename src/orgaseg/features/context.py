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
labelling in ``orgaseg name --refine`` use the segmentation's blocks).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from orgaseg.cluster.superpixels import DEFAULT_COMPACTNESS, pool_superpixels, slic_superpixels
from orgaseg.errors import OrgasegError
from orgaseg.features.base import FeatureExtractor

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

    @property
    def inner_features(self) -> int:
        """Channels of the wrapped extractor (the first ones of every feature vector)."""
        return int(self.extractor.n_features)

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """``(z, y, x)`` normalised intensities -> ``(z, y, x, n_features)``: features, then each size's mean and std."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 3 or min(block.shape) < 1:
            raise OrgasegError(f"superpixel context needs a non-empty 3D block (z, y, x), got shape {block.shape}")
        features = np.asarray(self.extractor(block, origin=origin), dtype=np.float32)
        q = features.shape[-1]
        out = np.empty(block.shape + (self.n_features,), dtype=np.float32)
        out[..., :q] = features
        for z in range(block.shape[0]):
            for i, size in enumerate(self.sizes):
                labels = slic_superpixels(block[z], superpixel_px=size, compactness=self.compactness)
                start = q * (1 + 2 * i)
                out[z, :, :, start:start + 2 * q] = pool_superpixels(features[z], labels)[labels]
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

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """``(z, y, x)`` normalised intensities -> ``(z, y, x, n_features)``: features, then their neighbours' mean."""
        features = np.asarray(self.extractor(block, origin=origin), dtype=np.float32)
        padded = np.concatenate([features[:1], features, features[-1:]], axis=0)
        return np.concatenate([features, 0.5 * (padded[:-2] + padded[2:])], axis=-1)

    def config(self) -> dict:
        """The wrapped extractor's description, marked as extended by the adjacent slices."""
        return {"slice_neighbours": True, "extractor": self.extractor.config()}


__all__ = ["DEFAULT_CONTEXT_PX", "SliceNeighbours", "SuperpixelContext", "parse_context"]
