"""The cluster-by-class confusion matrix, accumulated block by block.

Step 1 of the evaluation protocol (DESIGN.md): ``M[k, c]`` counts the voxels
predicted as cluster ``k`` whose reference class is ``c``, over the counted
voxels only (reference value not in ``ignore``, ``mask`` non-zero). Volumes
are read one block at a time, so a volume larger than memory is fine, and a
caller that already holds blocks (the segmentation runner) feeds them to a
:class:`ConfusionAccumulator` directly.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.io.metadata import warn_if_placed_apart
from orgaseg.labels import IGNORE_LABEL, integer_labels
from orgaseg.pipeline.blocks import default_block_shape, make_blocks
from orgaseg.progress import ProgressCallback, report

#: The largest id a prediction or an unmapped reference may hold: the confusion matrix has a row per
#: predicted id (and a column per class id) up to the largest, so an id of 2^40 (instance ids, a
#: float volume cast to integers) would ask for terabytes.
MAX_ID = 2**20 - 1

_TOO_LARGE_HINTS = {
    "predicted cluster": "a segmentation's ids are its clusters 0..K-1 (the output of segment or name)",
    "reference class": "a reference of other values needs a class map naming the values to score",
}


class ConfusionAccumulator:
    """A running confusion matrix that block pairs are added to.

    Parameters
    ----------
    n_clusters : int, optional
        Number of clusters K. A predicted id ``>= n_clusters`` is an error.
        Default: grows to the largest predicted id + 1 seen (in any voxel,
        counted or not); an id above :data:`MAX_ID` is an error.
    n_classes : int, optional
        Number of reference classes C. A counted reference id
        ``>= n_classes`` is an error. Default: grows to the largest counted
        reference id + 1 seen; an id above :data:`MAX_ID` is an error.
    ignore : int or iterable of int
        Reference values that are not scored.

    Examples
    --------
    >>> acc = ConfusionAccumulator(n_classes=2)
    >>> acc.add(np.array([[0, 1]]), np.array([[0, 255]]))
    >>> acc.add(np.array([[1, 1]]), np.array([[1, 1]]))
    >>> acc.result()
    array([[1, 0],
           [0, 2]])
    """

    def __init__(
        self,
        *,
        n_clusters: int | None = None,
        n_classes: int | None = None,
        ignore: Iterable[int] = (IGNORE_LABEL,),
    ) -> None:
        for name, value in (("n_clusters", n_clusters), ("n_classes", n_classes)):
            if value is not None and int(value) < 1:
                raise OrgasegError(f"{name} must be at least 1, got {value}")
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.n_classes = None if n_classes is None else int(n_classes)
        if isinstance(ignore, (int, np.integer)):  # one value: ignore=255 as ignore=(255,)
            ignore = (ignore,)
        self.ignore = np.asarray(sorted(set(int(v) for v in ignore)), dtype=np.int64)
        self._matrix = np.zeros((self.n_clusters or 0, self.n_classes or 0), dtype=np.int64)

    def add(self, pred: Any, reference: Any, mask: Any | None = None) -> None:
        """Count one block: ``pred``, ``reference`` (and ``mask``) of one shape."""
        pred = integer_labels(pred, "the prediction")
        reference = integer_labels(reference, "the reference")
        if pred.shape != reference.shape:
            raise OrgasegError(
                f"prediction block shape {pred.shape} differs from reference block shape {reference.shape}"
            )
        if pred.size == 0:
            return
        # K comes from every predicted voxel, counted or not: a cluster that
        # only covers ignored voxels is still one of the K.
        self._check_range(pred, "predicted cluster", self.n_clusters, "n_clusters")
        n_k = self.n_clusters or int(pred.max()) + 1
        counted = ~np.isin(reference, self.ignore)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != pred.shape:
                raise OrgasegError(f"mask block shape {mask.shape} differs from prediction block shape {pred.shape}")
            counted &= mask != 0
        k = pred[counted].astype(np.int64, copy=False)
        c = reference[counted].astype(np.int64, copy=False)
        if c.size:
            self._check_range(c, "reference class", self.n_classes, "n_classes")
        n_c = self.n_classes or (int(c.max()) + 1 if c.size else 0)
        block = np.bincount(k * n_c + c, minlength=n_k * n_c).reshape(n_k, n_c)
        self._add_matrix(block)

    @staticmethod
    def _check_range(ids: np.ndarray, what: str, limit: int | None, limit_name: str) -> None:
        low, high = int(ids.min()), int(ids.max())
        if low < 0:
            raise OrgasegError(f"{what} id {low} is negative; ids must be 0 or more")
        if limit is not None and high >= limit:
            raise OrgasegError(f"{what} id {high} is out of range for {limit_name}={limit}")
        if limit is None and high > MAX_ID:
            raise OrgasegError(
                f"{what} id {high:,} is too large: the confusion matrix holds one entry per id from 0 to the "
                f"largest, so ids may go up to {MAX_ID:,}; {_TOO_LARGE_HINTS[what]}")

    def _add_matrix(self, block: np.ndarray) -> None:
        shape = tuple(max(a, b) for a, b in zip(self._matrix.shape, block.shape))
        if shape != self._matrix.shape:
            grown = np.zeros(shape, dtype=np.int64)
            grown[: self._matrix.shape[0], : self._matrix.shape[1]] = self._matrix
            self._matrix = grown
        self._matrix[: block.shape[0], : block.shape[1]] += block

    def merge(self, other: "ConfusionAccumulator") -> None:
        """Add the counts of another accumulator (e.g. from a parallel worker)."""
        if not np.array_equal(self.ignore, other.ignore):
            raise OrgasegError("cannot merge confusion matrices made with different ignore values")
        for size, name in zip(other._matrix.shape, ("n_clusters", "n_classes")):
            limit = getattr(self, name)
            if limit is not None and size > limit:
                raise OrgasegError(
                    f"cannot merge a confusion matrix with {size} {name[2:]} into one with {name}={limit}"
                )
        self._add_matrix(other._matrix)

    @property
    def n_voxels(self) -> int:
        """Number of voxels counted so far."""
        return int(self._matrix.sum())

    def result(self) -> np.ndarray:
        """The ``(K, C)`` int64 confusion matrix; an error if nothing was counted."""
        if self.n_voxels == 0:
            raise NothingCounted(
                "no voxel was counted: the mask is empty or every reference voxel is ignored "
                f"(ignore values {self.ignore.tolist()})"
            )
        return self._matrix.copy()


class NothingCounted(OrgasegError):
    """No voxel was left to count: an empty mask, or a reference of ignored values only."""


def _shape(data: Any, name: str) -> tuple[int, ...]:
    shape = tuple(int(n) for n in (data.shape if hasattr(data, "shape") else np.shape(data)))
    if len(shape) not in (2, 3):
        raise OrgasegError(f"{name} must be 2D or 3D, got shape {shape}")
    return shape


def _as_3d(data: Any) -> Any:
    """A 3D input unchanged (still lazy); a 2D image read and given a leading z axis of 1."""
    if hasattr(data, "shape") and len(data.shape) == 3:
        return data
    array = np.asarray(data)
    return array if array.ndim == 3 else array[None]


def _storage_chunks(data: Any) -> tuple[int, int, int] | None:
    """The storage chunk shape of a Volume or zarr array (None for numpy), so blocks read whole chunks."""
    chunks = getattr(data, "chunks", None)
    if isinstance(chunks, tuple) and len(chunks) == 3 and all(isinstance(c, (int, np.integer)) for c in chunks):
        return tuple(int(c) for c in chunks)
    return None


def confusion_matrix(
    pred: Any,
    reference: Any,
    *,
    n_clusters: int | None = None,
    n_classes: int | None = None,
    mask: Any | None = None,
    ignore: Iterable[int] = (IGNORE_LABEL,),
    block_shape: tuple[int, ...] | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Count voxels per (predicted cluster, reference class), block by block.

    Parameters
    ----------
    pred : array-like, 2D or 3D
        Predicted cluster ids ``0 .. K-1``: a numpy array or anything with
        ``shape`` and slicing by a tuple of slices (a
        :class:`~orgaseg.io.volume.Volume`, a zarr array).
    reference : array-like
        Reference class ids ``0 .. C-1``, same shape as ``pred``.
    n_clusters : int, optional
        K. Default: largest predicted id + 1 (over all voxels, counted or not).
    n_classes : int, optional
        C. Default: largest counted reference id + 1.
    mask : array-like, optional
        Only voxels where ``mask`` is non-zero are counted.
    ignore : int or iterable of int
        Reference values that are not counted (default ``IGNORE_LABEL``).
    block_shape : tuple of int, optional
        Shape of the blocks read at a time (zyx, or yx for 2D inputs).
        Default: :func:`orgaseg.pipeline.blocks.default_block_shape` (whole
        planes, a few million voxels, aligned to the prediction's chunks).
    progress : callable, optional
        ``progress(description, done, total)`` after each block.

    Returns
    -------
    numpy.ndarray
        ``M`` of shape ``(K, C)``, int64.

    Raises
    ------
    OrgasegError
        Shapes differ, a label is not an integer, a predicted id is
        negative or ``>= n_clusters``, a counted reference id is ``>=
        n_classes``, an id without such a limit is above :data:`MAX_ID`,
        or no voxel is counted.
    """
    shape = _shape(pred, "the prediction")
    for name, data in (("reference", reference), ("mask", mask)):
        if data is not None and _shape(data, f"the {name}") != shape:
            raise OrgasegError(f"the prediction has shape {shape} but the {name} has shape {_shape(data, name)}")
    warn_if_placed_apart(pred, reference, ("the prediction's", "the reference's"),
                         "the scores compare voxels that do not overlay")
    chunks = _storage_chunks(pred)
    pred, reference = _as_3d(pred), _as_3d(reference)
    mask = None if mask is None else _as_3d(mask)
    volume_shape = tuple(int(n) for n in pred.shape)
    if block_shape is None:
        block_shape = default_block_shape(volume_shape, chunks)
    else:
        block_shape = tuple(int(b) for b in block_shape)
        if len(block_shape) != len(shape):
            raise OrgasegError(f"block_shape {block_shape} must have {len(shape)} sizes, like the volume {shape}")
        block_shape = (1,) * (3 - len(shape)) + block_shape
    blocks = make_blocks(volume_shape, block_shape)
    accumulator = ConfusionAccumulator(n_clusters=n_clusters, n_classes=n_classes, ignore=ignore)
    for done, block in enumerate(blocks, start=1):
        region = block.region
        accumulator.add(pred[region], reference[region], None if mask is None else mask[region])
        report(progress, "confusion matrix", done, len(blocks))
    return accumulator.result()
