"""The clusterer stage: what every clusterer offers the runner.

A clusterer is fitted once per run and then labels the volume block by block.
Fitting is streamed: the runner hands a :class:`ClustererFit` the features of
its sample one piece at a time (in a fixed order, whatever executor computed
them), then asks it for the fitted :class:`Clusterer`. What a piece is
depends on :attr:`ClustererSpec.sample`:

- ``"voxels"``: the features of a seeded random sample of voxels, one array
  ``(n, n_features)`` per block that holds sampled voxels (k-means);
- ``"blocks"``: the features ``(z, y, x, n_features)`` and the normalised raw
  intensities ``(z, y, x)`` of whole blocks, a seeded choice of blocks that
  together hold at least the sample size (clusterers that need
  neighbourhoods, such as superpixel graphs).

A clusterer whose spec sets ``working_grid`` (superpixel graphs) sees the
working grid itself: each piece of its sample is ``(features, raw,
voxel_size)`` of the working voxels nearest to a whole block, with their
voxel size in nm, and it labels those voxels
(``predict(features, raw, voxel_size=...)``); the runner gives each input
voxel the label of its nearest working voxel. Its fitted clusterer has
``working_grid = True``.

A clusterer may also set ``affine_scores = True`` and offer
``scores(features) -> (..., S)`` and ``labels_from_scores(scores)``, with
scores *affine* in the features (k-means: ``2 x.c - |c|^2``, S = k; the
logistic read-out of ``orgaseg name --refine``). With a working pixel size
the runner then interpolates the S scores back to the input grid instead of
every feature channel, which gives the same labels (up to rounding at
near-ties) at a fraction of the cost; without them it interpolates the
features.

A fitted clusterer's state round-trips through JSON (:meth:`Clusterer.to_dict`
and :attr:`ClustererSpec.from_dict`): it is stored in the provenance beside a
segmentation, so ``--centers`` reuses it on another volume and a resumed run
labels its remaining blocks with exactly the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.progress import ProgressCallback

#: A feature whose standard deviation is at most this fraction of the sample's RMS counts as constant.
CONSTANT_TOLERANCE = 1e-6


class Clusterer(Protocol):
    """A fitted clusterer."""

    #: Number of clusters (label ids ``0 .. k-1``).
    k: int
    #: Feature channels it expects.
    n_features: int
    #: Whether :meth:`predict` needs the block's normalised raw intensities.
    needs_raw: bool

    def predict(self, features: np.ndarray, raw: np.ndarray | None = None) -> np.ndarray:
        """Labels of a block: ``features (..., n_features)`` -> ids ``(...)`` (``raw`` has the same ``...``)."""
        ...

    def to_dict(self) -> dict:
        """JSON-serialisable state; ``"kind"`` names the :class:`ClustererSpec` that reads it back."""
        ...


class ClustererFit(Protocol):
    """Fitting in progress: takes the sample piece by piece."""

    def add(self, features: np.ndarray, raw: np.ndarray | None = None) -> None:
        """One piece of the sample (see the module notes for its shape)."""
        ...

    def finish(self, progress: ProgressCallback | None = None) -> Clusterer:
        """The fitted clusterer (a clear :class:`~orgaseg.errors.OrgasegError` if the sample cannot support it).

        ``progress`` receives the steps of a long fit (a graph clusterer's network training); a quick fit
        may ignore it.
        """
        ...


@dataclass(frozen=True)
class ClustererSpec:
    """A clusterer as the method table and the command line see it.

    Attributes
    ----------
    name : str
        The name on the command line (``--clusterer``) and the ``kind`` of its state.
    summary : str
        One line for ``orgaseg methods`` and ``--help``.
    start_fit : callable
        ``start_fit(k, *, seed, **options) -> ClustererFit``.
    from_dict : callable
        ``from_dict(state) -> Clusterer``: the inverse of ``Clusterer.to_dict``.
    options : mapping of str to str
        Option names this clusterer accepts (``--option NAME=VALUE``), with one line of help each.
    sample : {"voxels", "blocks"}
        What :meth:`ClustererFit.add` receives.
    default_sample_size : int
        Voxels in the sample unless the method or the user says otherwise.
    working_grid : bool
        Fit and label on the working grid (with ``sample = "blocks"``; see the module notes).
    plane_tile_nm : callable, optional
        ``plane_tile_nm(options) -> float``: the side, in nm, of the square regions the clusterer cuts
        each plane of a block into (superpixel graphs); default blocks then span whole numbers of them
        in y and x where that costs little, so that no block edge cuts a region short
        (:func:`~orgaseg.pipeline.runner.resolve_block_shape`). None: the clusterer reads voxels alone.
    """

    name: str
    summary: str
    start_fit: Callable[..., ClustererFit]
    from_dict: Callable[[dict], Clusterer]
    options: Mapping[str, str] = field(default_factory=dict)
    sample: Literal["voxels", "blocks"] = "voxels"
    default_sample_size: int = 200_000
    working_grid: bool = False
    plane_tile_nm: Callable[[Mapping[str, Any]], float] | None = None



def standardize_sample(sample: np.ndarray, k: int, *, unit: str = "feature vectors") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, scale and standardised sample ``(n, q)`` of a clusterer's fit, checked to hold ``k`` distinct rows.

    A constant feature keeps scale 1 (it stays constant instead of dividing by zero). "Constant" is
    relative to the sample's magnitude: resampling a constant volume leaves float32 rounding noise (a
    standard deviation of about 1e-8 of the values), which standardising would blow up into ``k``
    spurious clusters. Rows are compared after rounding to 1e-6 standard deviations for the same reason.

    Raises
    ------
    OrgasegError
        When fewer than ``k`` distinct rows remain (``unit`` names the rows in the message).
    """
    sample = np.asarray(sample, dtype=np.float32)
    mean = sample.mean(axis=0)
    scale = sample.std(axis=0)
    magnitude = float(np.sqrt(np.mean(np.square(sample, dtype=np.float64))))
    scale[scale <= CONSTANT_TOLERANCE * magnitude] = 1.0
    standardized = (sample - mean) / scale
    distinct = np.unique(np.round(standardized, 6), axis=0).shape[0]
    if distinct < k:
        raise OrgasegError(
            f"the sample has only {distinct} distinct {unit if distinct != 1 else unit.rstrip('s')}, fewer than "
            f"K = {k}: use a smaller K, or check "
            "whether the volume (or the masked region) is nearly constant"
        )
    return mean, scale, standardized
