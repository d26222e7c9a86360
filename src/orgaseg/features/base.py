"""The dense-feature stage: what a feature extractor offers the runner, and how one is built by name.

An extractor turns a normalised block into a feature vector per voxel. It
says how much context it needs around a block (``halo``) and how many
channels it gives; it is told where the block lies in the volume
(``origin``) so that strategies whose sampling is anchored to the volume
(cover-and-stride, expand-stride) give blockwise results equal to
whole-volume results.

A :class:`FeatureSpec` builds an extractor from an encoder (or none, for the
filter bank), the voxel size it works at and its options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from orgaseg.errors import OrgasegError


class FeatureExtractor(Protocol):
    """A dense-feature strategy: normalised block in, per-voxel features out.

    An extractor may also set ``keeps_region = True`` and take ``keep`` (a
    region of the block, three slices) in ``__call__``: it then returns the
    features of ``block[keep]`` only, with the rest of the block as context,
    which the runner asks for whenever a block's halo is context only (the
    filter bank and the encoder strategies do; it saves the memory and time of
    the halo's features, and for an encoder the forward passes that serve only
    the halo). :func:`resolve_keep` reads ``keep``; :func:`reflected_span`
    gives the input a strategy anchored to the volume needs around it.
    """

    halo: tuple[int, int, int]
    n_features: int

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """(z, y, x) -> (z, y, x, F); ``origin`` is the absolute position of ``block[0, 0, 0]``."""
        ...

    def config(self) -> dict:
        """A JSON-serialisable description (provenance and resume signatures)."""
        ...


Region = tuple[slice, slice, slice]

#: ``count(length, origin) -> int``: an encoder's fields of view along one axis for a block spanning
#: ``length`` voxels from absolute ``origin``.
AxisCount = Callable[[int, int], int]


def slice_count(length: int, origin: int) -> int:
    """Along the axis a 2D strategy does not encode across: one field of view per slice."""
    return length


class EncodesFieldsOfView:
    """An encoder strategy anchored to the volume: what it encodes for a block, counted.

    Its fields of view lie on a grid anchored to the volume, so the count for
    a box is a product of per-axis counts (plane fusion adds one product per
    plane). A subclass gives those counts (:meth:`fields_of_view_axes`), which
    the runner also uses to price block shapes axis by axis
    (:func:`orgaseg.pipeline.blocks.halo_block_shape`), and the cost estimate
    the total (:meth:`n_fields_of_view`).
    """

    def fields_of_view_axes(self) -> list[tuple[AxisCount, AxisCount, AxisCount]]:
        """Terms of per-axis counts ``(z, y, x)``: a block encodes the sum over the terms of their product."""
        raise NotImplementedError

    def n_fields_of_view(self, shape: Sequence[int], origin: Sequence[int] = (0, 0, 0)) -> int:
        """Fields of view (encoder forward passes) a block of ``shape`` at ``origin`` encodes."""
        return sum(int(np.prod([count(int(n), int(o)) for count, n, o in zip(term, shape, origin)], dtype=np.int64))
                   for term in self.fields_of_view_axes())


class EncodesSquaresPerSlice(EncodesFieldsOfView):
    """A 2D strategy: square fields of view of ``fov`` pixels, each slice along z encoded on its own.

    A subclass gives ``_axis_fields_of_view(length, origin)``, its count along
    y and along x.
    """

    fov: int

    @property
    def field_of_view_shape(self) -> tuple[int, int, int]:
        """The shape of one encoder input, ``(1, F, F)``."""
        return (1, self.fov, self.fov)

    def fields_of_view_axes(self) -> list[tuple[AxisCount, AxisCount, AxisCount]]:
        """One product: the slices along z, the subclass's counts along y and x."""
        return [(slice_count, self._axis_fields_of_view, self._axis_fields_of_view)]

    def _axis_fields_of_view(self, length: int, origin: int) -> int:
        raise NotImplementedError


def resolve_keep(keep: Region | None, shape: tuple[int, ...]) -> Region:
    """``keep`` as three slices with explicit bounds within ``shape`` (None: the whole block).

    Raises
    ------
    OrgasegError
        When the region is empty.
    """
    keep = tuple(slice(*s.indices(n)[:2]) for s, n in zip(keep or (slice(None),) * 3, shape))
    if len(keep) != 3 or any(s.stop <= s.start for s in keep):
        raise OrgasegError(f"the part of the block to keep, {keep}, is empty (block shape {tuple(shape)})")
    return keep


def reflected_span(block: np.ndarray, starts: Sequence[int], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """The values of ``block`` over absolute ``spans``, reflected about its edges where a span leaves it.

    Parameters
    ----------
    block : ndarray
        The block; its first voxel lies at absolute ``starts``.
    starts : sequence of int
        Absolute index of ``block``'s first voxel along the axes ``spans`` names.
    spans : sequence of (int, int)
        Absolute ``(start, stop)`` for each of ``block``'s last ``len(spans)``
        axes (the others are kept whole).

    Returns
    -------
    ndarray
        ``block`` cut to the spans; where a span reaches past the block, padded
        by reflection about the edge voxel (numpy ``"reflect"``, repeated when
        the block is narrower than the padding). A view when no padding is
        needed. For a block that is the whole volume along an axis this is
        the volume's reflection; for a window with its full halo, the spans
        of the part it serves stay inside it and read real context.
    """
    lead = block.ndim - len(spans)
    pads = [(max(0, int(b) - a), max(0, z - int(b) - n)) for (a, z), b, n in zip(spans, starts, block.shape[lead:])]
    padded = np.pad(block, [(0, 0)] * lead + pads, mode="reflect") if any(p != (0, 0) for p in pads) else block
    cut = tuple(slice(a - int(b) + p, z - int(b) + p) for (a, z), b, (p, _) in zip(spans, starts, pads))
    return padded[(slice(None),) * lead + cut]


def compute_part(extractor: FeatureExtractor, block: np.ndarray, origin: tuple[int, int, int],
                 part: Region) -> np.ndarray:
    """``extractor``'s features of ``block[part]`` with the rest of ``block`` as context, as float32.

    Only the part when the extractor ``keeps_region``, else the whole block, cropped.
    """
    if getattr(extractor, "keeps_region", False):
        return np.asarray(extractor(block, origin=origin, keep=part), dtype=np.float32)
    return np.asarray(extractor(block, origin=origin), dtype=np.float32)[part]


@dataclass(frozen=True)
class FeatureSpec:
    """A dense-feature strategy as the method table and the command line see it.

    Attributes
    ----------
    name : str
        Its name (``--features``).
    summary : str
        One line for ``orgaseg methods`` and ``--help``.
    needs : str or None
        The kind of encoder it works with (an :class:`~orgaseg.models.encoder.Encoder`'s
        ``kind``, e.g. ``"tokens-2d"``), or None when it needs no encoder.
    build : callable
        ``build(encoder, voxel_size, options, device) -> FeatureExtractor``;
        ``voxel_size`` is the working voxel size in nm ``(z, y, x)``.
    options : mapping of str to str
        Option names it accepts (``--option NAME=VALUE``), with one line of help each.
    """

    name: str
    summary: str
    needs: str | None
    build: Callable[..., FeatureExtractor]
    options: Mapping[str, str] = field(default_factory=dict)

