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
from typing import Callable, Mapping, Protocol

import numpy as np


class FeatureExtractor(Protocol):
    """A dense-feature strategy: normalised block in, per-voxel features out.

    An extractor may also set ``keeps_region = True`` and take ``keep`` (a
    region of the block, three slices) in ``__call__``: it then returns the
    features of ``block[keep]`` only, with the rest of the block as context,
    which the runner asks for whenever a block's halo is context only (the
    filter bank does; it saves the memory and time of the halo's features).
    """

    halo: tuple[int, int, int]
    n_features: int

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """(z, y, x) -> (z, y, x, F); ``origin`` is the absolute position of ``block[0, 0, 0]``."""
        ...

    def config(self) -> dict:
        """A JSON-serialisable description (provenance and resume signatures)."""
        ...


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

