"""Scores from a confusion matrix (step 4 of the protocol).

Per class: Dice, IoU, sensitivity (recall) and precision of the class-level
prediction that a matching (``merge`` or ``strict``) makes of the clusters.
Overall: pixel accuracy over the counted voxels, mean Dice over the classes
that have reference voxels, mean Dice over those that are organelles (not in
the ``background`` set), and the cluster-to-class mapping itself.

Conventions: a class with no reference voxel (an *empty* class) has every
metric ``None`` and is left out of the means; a class that no cluster
predicts has Dice, IoU, sensitivity and precision 0.0; a cluster with no
counted voxel (an *empty* cluster) is mapped to no class (``None``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.evaluation.matching import BY_NAME, EVALUATION_MODES, MODES, UNMATCHED, class_confusion, match_by_name, match_clusters

METRICS = ("dice", "iou", "sensitivity", "precision")


def check_not_a_string(classes) -> None:
    """Refuse one string given as the class names: its letters would be the names."""
    if isinstance(classes, str):
        raise OrgasegError(f"classes is a sequence of names, e.g. ['background', 'mito'], got the string {classes!r}")


def resolve_classes(classes: Sequence[str] | None, n_classes: int) -> list[str]:
    """Class names for ids ``0 .. n_classes-1`` (default ``class_0``, ``class_1``, ...)."""
    if classes is None:
        return [f"class_{c}" for c in range(n_classes)]
    check_not_a_string(classes)
    names = [str(name) for name in classes]
    if len(names) != n_classes:
        raise OrgasegError(f"got {len(names)} class names for {n_classes} reference classes")
    if len(set(names)) != len(names):
        raise OrgasegError(f"class names must be unique, got {names}")
    return names


def resolve_background(background: str | int | Sequence[str | int] | None, classes: Sequence[str]) -> list[str]:
    """Names of the non-organelle classes, given as names or ids (default: the first class)."""
    if background is None:
        return [classes[0]]
    if isinstance(background, (str, int, np.integer)):
        background = [background]
    names = []
    for item in background:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(classes):
                raise OrgasegError(f"background class id {item} is not one of 0..{len(classes) - 1}")
            names.append(classes[item])
        elif item in classes:
            names.append(str(item))
        else:
            raise OrgasegError(f"background class {item!r} is not one of the classes {list(classes)}")
    return names


def _check_confusion(confusion) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or 0 in confusion.shape:
        raise OrgasegError(f"a confusion matrix must be 2D (clusters x classes), got shape {confusion.shape}")
    if not np.issubdtype(confusion.dtype, np.integer) or confusion.min() < 0:
        raise OrgasegError("a confusion matrix must hold non-negative integer counts")
    if confusion.sum() == 0:
        raise OrgasegError("the confusion matrix counts no voxel")
    return confusion.astype(np.int64, copy=False)


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


def _mode_scores(confusion: np.ndarray, classes: list[str], background: list[str], mode: str,
                 label_names: Sequence[str] | None = None) -> dict:
    if mode == BY_NAME:
        if label_names is None:
            raise OrgasegError("scoring by name needs the prediction's label names (a named volume: orgaseg name)")
        mapping = match_by_name(label_names, classes, confusion.shape[0])
    else:
        mapping = match_clusters(confusion, mode)
    merged = class_confusion(confusion, mapping)
    reference_total = confusion.sum(axis=0)
    predicted_total = merged.sum(axis=1)
    per_class, dice = {}, {}
    for c, name in enumerate(classes):
        if reference_total[c] == 0:
            per_class[name] = dict.fromkeys(METRICS)
            continue
        tp = int(merged[c, c])
        fp = int(predicted_total[c]) - tp
        fn = int(reference_total[c]) - tp
        per_class[name] = {
            "dice": _ratio(2 * tp, 2 * tp + fp + fn),
            "iou": _ratio(tp, tp + fp + fn),
            "sensitivity": _ratio(tp, tp + fn),
            # No cluster predicts the class: precision 0/0, reported as 0.0.
            "precision": _ratio(tp, tp + fp),
        }
        dice[name] = per_class[name]["dice"]
    organelles = [value for name, value in dice.items() if name not in background]
    return {
        "per_class": per_class,
        "mean_dice": float(np.mean(list(dice.values()))),
        "mean_dice_organelles": float(np.mean(organelles)) if organelles else None,
        "accuracy": _ratio(int(np.trace(merged[:-1])), int(confusion.sum())),
        "mapping": {str(k): (None if c == UNMATCHED else classes[c]) for k, c in enumerate(mapping)},
    }


def scores_from_confusion(
    confusion: np.ndarray,
    classes: Sequence[str] | None,
    *,
    background: str | int | Sequence[str | int] | None = None,
    mode: str = "merge",
    label_names: Sequence[str] | None = None,
) -> dict:
    """Score a confusion matrix under one matching mode (or both), or by name.

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, C)`` voxel counts from :func:`~orgaseg.evaluation.confusion_matrix`.
    classes : sequence of str or None
        Names of the classes ``0 .. C-1``; ``None`` names them ``class_<id>``.
    background : str, int or sequence of them, optional
        The non-organelle classes (names or ids), left out of
        ``mean_dice_organelles``. Default: the first class.
    mode : {"merge", "strict", "both", "names"}
        Matching mode (see :func:`~orgaseg.evaluation.matching.match_clusters`), or ``names``: no
        matching, each predicted id is the class of its name in ``label_names``
        (:func:`~orgaseg.evaluation.matching.match_by_name`).
    label_names : sequence of str, optional
        Name of each predicted id, for ``mode="names"``.

    Returns
    -------
    dict
        For ``merge`` or ``strict``: ``{"per_class": {name: {"dice", "iou",
        "sensitivity", "precision"}}, "mean_dice", "mean_dice_organelles",
        "accuracy", "mapping": {"<cluster id>": class name or None}}``.
        Empty classes have ``None`` metrics and are left out of the means;
        ``mean_dice_organelles`` is ``None`` when no organelle class has
        reference voxels. For ``both``: ``{"merge": {...}, "strict": {...}}``.
    """
    if mode not in EVALUATION_MODES:
        raise OrgasegError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(EVALUATION_MODES)}")
    confusion = _check_confusion(confusion)
    names = resolve_classes(classes, confusion.shape[1])
    background_names = resolve_background(background, names)
    if mode == "both":
        return {m: _mode_scores(confusion, names, background_names, m) for m in MODES}
    return _mode_scores(confusion, names, background_names, mode, label_names)
