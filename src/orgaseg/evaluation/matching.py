"""Matching clusters to reference classes (steps 2 and 3 of the protocol).

Unsupervised clusters carry no class names, so every score first decides
which class each cluster stands for:

- ``strict`` (Han et al. / CIHS): a one-to-one Hungarian assignment that
  maximises the total Dice; clusters left over predict no class.
- ``merge`` (MAESTER / SCCS, the headline mode): the same assignment, then
  every left-over cluster joins the class it overlaps most.

Classes without reference voxels take part in neither step, so they never
take a cluster away from a class that is present. Clusters without counted
voxels (*empty* clusters) are left out of both steps too, so they never
predict a class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from orgaseg.errors import OrgasegError

#: Matching modes; ``"both"`` is accepted where a function reports both.
MODES = ("merge", "strict")
#: Scoring a named volume by its names, without matching.
BY_NAME = "names"
#: What an evaluation may report: one matching mode, both, or the names.
EVALUATION_MODES = ("both",) + MODES + (BY_NAME,)

#: Value in a mapping array for a cluster that predicts no class.
UNMATCHED = -1


def _two_dimensional(confusion) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:  # numpy's AxisError from the sums named no confusion matrix
        raise OrgasegError(f"a confusion matrix must be 2D (clusters x classes), got shape {confusion.shape}")
    return confusion


def dice_matrix(confusion: np.ndarray) -> np.ndarray:
    """Dice of every (cluster, class) pair.

    ``D[k, c] = 2 M[k, c] / (sum_c' M[k, c'] + sum_k' M[k', c])``, and 0
    where the denominator is 0.

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, C)`` voxel counts.

    Returns
    -------
    numpy.ndarray
        ``(K, C)`` float64 in ``[0, 1]``.

    Raises
    ------
    OrgasegError
        ``confusion`` is not 2D.
    """
    confusion = _two_dimensional(confusion).astype(np.float64)
    denominator = confusion.sum(axis=1, keepdims=True) + confusion.sum(axis=0, keepdims=True)
    dice = np.zeros_like(confusion)
    np.divide(2 * confusion, denominator, out=dice, where=denominator > 0)
    return dice


def match_clusters(confusion: np.ndarray, mode: str = "merge") -> np.ndarray:
    """The class each cluster stands for.

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, C)`` voxel counts (see :func:`~orgaseg.evaluation.confusion_matrix`).
    mode : {"merge", "strict"}
        ``strict``: Hungarian assignment maximising total Dice over the
        classes that have reference voxels; unmatched clusters get
        :data:`UNMATCHED`. ``merge``: the same assignment, then each unmatched
        cluster joins the class it overlaps most. In both modes a cluster
        with no counted voxel (an *empty* cluster) stays unmatched: nothing
        says which class it belongs to.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` int64: class id per cluster, or :data:`UNMATCHED`.

    Raises
    ------
    OrgasegError
        An unknown ``mode``, or ``confusion`` that is not 2D.
    """
    if mode not in MODES:
        raise OrgasegError(f"unknown matching mode {mode!r}; choose one of {', '.join(MODES)}")
    confusion = _two_dimensional(confusion)
    present = np.flatnonzero(confusion.sum(axis=0) > 0)
    # a cluster without counted voxels (it lies only on ignored or masked-out
    # voxels) has Dice 0 with every class: the assignment would hand it a
    # class on a tie, though nothing says which class it is
    counted = np.flatnonzero(confusion.sum(axis=1) > 0)
    mapping = np.full(confusion.shape[0], UNMATCHED, dtype=np.int64)
    rows, cols = linear_sum_assignment(-dice_matrix(confusion)[np.ix_(counted, present)])
    mapping[counted[rows]] = present[cols]
    if mode == "merge":
        leftover = (mapping == UNMATCHED) & (confusion.sum(axis=1) > 0)
        mapping[leftover] = np.argmax(confusion[leftover], axis=1)
    return mapping


def match_by_name(label_names: Sequence[str], classes: Sequence[str], n_labels: int) -> np.ndarray:
    """The class of each predicted id by its name: a named volume (``orgaseg name``) scored without matching.

    Parameters
    ----------
    label_names : sequence of str
        Name of each predicted id ``0 .. len - 1``.
    classes : sequence of str
        Names of the reference classes.
    n_labels : int
        Predicted ids counted (rows of the confusion matrix).

    Returns
    -------
    numpy.ndarray
        ``(n_labels,)`` int64: the class with the id's name, or :data:`UNMATCHED` (a name that is no class,
        e.g. ``unassigned``: its voxels predict nothing).
    """
    if n_labels > len(label_names):
        raise OrgasegError(f"the prediction holds id {n_labels - 1}, but only {len(label_names)} names "
                           f"({', '.join(label_names)}); scoring by name needs a name for every id")
    index = {name: c for c, name in enumerate(classes)}
    mapping = np.array([index.get(name, UNMATCHED) for name in label_names[:n_labels]], dtype=np.int64)
    if n_labels and (mapping == UNMATCHED).all():
        raise OrgasegError(f"none of the prediction's names ({', '.join(label_names)}) is a reference class "
                           f"({', '.join(classes)}); name the clusters with the reference's class names")
    return mapping


def class_confusion(confusion: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Voxel counts per (predicted class, reference class) under a mapping.

    Returns a ``(C + 1, C)`` int64 matrix whose last row holds the voxels of
    clusters that predict no class.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    n_classes = confusion.shape[1]
    rows = np.where(mapping == UNMATCHED, n_classes, mapping)
    merged = np.zeros((n_classes + 1, n_classes), dtype=np.int64)
    np.add.at(merged, rows, confusion)
    return merged
