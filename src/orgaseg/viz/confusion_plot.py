"""The confusion matrix as a heat map: where each reference class went."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.viz._figure import new_figure, save_png
from orgaseg.viz.colors import class_colors, label_colors

#: Above this many cells the per-cell annotations would be unreadable.
MAX_ANNOTATED_CELLS = 400
#: Above this many clusters a tick label per cluster would overlap (and take matplotlib minutes to draw).
MAX_LABELLED_CLUSTERS = 100


def _compact(count: int) -> str:
    """``1234`` -> ``1234``, ``12345`` -> ``12.3k``, ``1234567`` -> ``1.23M``."""
    if count < 10_000:
        return str(count)
    value = count / 1000
    for suffix in ("k", "M", "G"):
        if value < 999.5 or suffix == "G":
            return f"{value:.3g}{suffix}"
        value /= 1000


def plot_confusion(
    confusion: np.ndarray,
    classes: Sequence[str] | None,
    *,
    mapping: Mapping[int | str, str | None] | None = None,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Draw a K x C confusion matrix normalised per reference class.

    Cell ``(k, c)`` is coloured by the fraction of class ``c``'s voxels that
    fell in cluster ``k`` (each column sums to 1) and annotated with the count
    and that percentage. Cluster tick labels sit on their cluster palette
    colour, class tick labels on their class palette colour (as in the
    overlays); a cluster without counted voxels is labelled ``empty``. Above
    :data:`MAX_LABELLED_CLUSTERS` clusters the cluster axis has plain numbered
    ticks instead (the report lists the mapping).

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, C)`` voxel counts.
    classes : sequence of str or None
        Names of the C classes (default ``class_<id>``).
    mapping : mapping, optional
        Cluster id (int or str, as in a report's JSON) to class name or
        ``None``; shown in the cluster tick labels as ``3 → mitochondria``
        (``3 → empty`` for a cluster without counted voxels).
    path : str or Path
        PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or 0 in confusion.shape:
        raise OrgasegError(f"a confusion matrix must be 2D (clusters x classes), got shape {confusion.shape}")
    n_clusters, n_classes = confusion.shape
    names = [f"class_{c}" for c in range(n_classes)] if classes is None else [str(c) for c in classes]
    if len(names) != n_classes:
        raise OrgasegError(f"got {len(names)} class names for a confusion matrix with {n_classes} classes")
    column_totals = confusion.sum(axis=0, keepdims=True)
    fraction = np.divide(
        confusion, column_totals, out=np.zeros(confusion.shape), where=column_totals > 0
    )

    figure = new_figure(min(3.5 + 1.3 * n_classes, 20.0), min(2.0 + 0.45 * n_clusters, 20.0))
    axes = figure.add_subplot()
    image = axes.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=axes, label="fraction of the reference class")
    if n_clusters * n_classes <= MAX_ANNOTATED_CELLS:
        for (k, c), count in np.ndenumerate(confusion):
            axes.text(
                c, k, f"{_compact(int(count))}\n{100 * fraction[k, c]:.0f}%",
                ha="center", va="center", fontsize=7,
                color="white" if fraction[k, c] > 0.6 else "black",
            )
    axes.set_xticks(range(n_classes), [f"{name}\n({_compact(int(t))})" for name, t in zip(names, column_totals[0])])
    labelled = n_clusters <= MAX_LABELLED_CLUSTERS
    if labelled:
        mapped = {} if mapping is None else {int(k): v for k, v in mapping.items()}
        empty = confusion.sum(axis=1) == 0
        axes.set_yticks(
            range(n_clusters),
            [
                f"{k} → {'empty' if empty[k] else mapped.get(k) or '—'}" if mapping is not None
                else f"{k} (empty)" if empty[k] else str(k)
                for k in range(n_clusters)
            ],
        )
    tick_colours = ((axes.get_yticklabels(), label_colors(n_clusters)),) if labelled else ()
    for labels, colours in tick_colours + ((axes.get_xticklabels(), class_colors(n_classes)),):
        for label, colour in zip(labels, colours):
            label.set_bbox({"facecolor": colour, "alpha": 0.45, "edgecolor": "none", "boxstyle": "round,pad=0.2"})
    axes.set_xlabel("reference class (voxels)")
    axes.set_ylabel("cluster → matched class" if mapping is not None and labelled
                    else "cluster" if labelled else "cluster id (the mapping is in the report)")
    axes.set_title(title or f"confusion matrix, K = {n_clusters}")
    return save_png(figure, path)
