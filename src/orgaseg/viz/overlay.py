"""Side-by-side panels of one slice: raw, clusters, clusters over raw, classes.

Clusters are drawn in the cluster palette with a cluster legend, classes in
the class palette with a class legend (:mod:`orgaseg.viz.colors`), so a
cluster never reads as the class that has the same colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.patches import Patch

from orgaseg.errors import OrgasegError
from orgaseg.labels import IGNORE_LABEL, integer_labels
from orgaseg.viz._figure import new_figure, save_png
from orgaseg.viz.colors import class_colors, label_colors

#: Opacity of the clusters drawn over the raw slice.
OVERLAY_ALPHA = 0.45

#: Widest figure in inches (x 100 dpi = 2000 px); panels shrink to fit.
MAX_WIDTH = 20.0

#: Inches below the panels for the legends (and above them for titles).
LEGEND_HEIGHT = 1.2

#: Legend entries shown at most per palette; the rest are summarised.
MAX_LEGEND = 24


def robust_grey(raw: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """``raw`` scaled to ``[0, 1]`` between its ``low`` and ``high`` percentiles.

    EM slices often hold a few saturated or black pixels (folds, padding)
    that would flatten a min-max scaling. The percentiles are those of the
    finite values; NaN (no data) is drawn black, as segmentation reads it.
    """
    raw = np.asarray(raw, dtype=np.float64)
    finite = np.isfinite(raw)
    if not finite.any():
        return np.zeros_like(raw)
    lo, hi = np.percentile(raw[finite], [low, high])
    if hi <= lo:
        return np.zeros_like(raw)
    grey = np.clip((raw - lo) / (hi - lo), 0.0, 1.0)
    grey[np.isnan(grey)] = 0.0
    return grey


def _label_slice(data: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    labels = np.asarray(data)
    if labels.shape != shape:
        raise OrgasegError(f"the {name} slice has shape {labels.shape} but the raw slice has shape {shape}")
    labels = integer_labels(labels, f"the {name} slice")
    if labels.size and labels.min() < 0:
        raise OrgasegError(f"the {name} slice holds a negative label {labels.min()}")
    return labels.astype(np.int64)


def _colour(labels: np.ndarray, shown: np.ndarray, palette) -> np.ndarray:
    """RGBA image: each label in its ``palette(n)`` colour where ``shown``, transparent elsewhere."""
    colours = palette(int(labels.max()) + 1 if labels.size else 0)
    image = np.zeros(labels.shape + (4,))
    image[shown] = colours[labels[shown]]
    return image


def _legend_handles(ids: set[int], palette, name) -> list[Patch]:
    """One patch per id (at most :data:`MAX_LEGEND`, then a note of how many more)."""
    ids = sorted(ids)
    colours = palette(ids[-1] + 1)
    handles = [Patch(color=colours[i], label=name(i)) for i in ids[:MAX_LEGEND]]
    if len(ids) > MAX_LEGEND:
        handles.append(Patch(color="none", label=f"... {len(ids) - MAX_LEGEND} more"))
    return handles


def _class_ids(mapping: Mapping[int | str, str | int | None], class_names: Sequence[str] | None) -> dict[int, int]:
    """Cluster id -> class id; unmatched clusters (``None``) are left out."""
    ids = {}
    for cluster, target in mapping.items():
        if target is None:
            continue
        if isinstance(target, str):
            if class_names is None or target not in class_names:
                raise OrgasegError(f"mapping names class {target!r}, which is not among class_names {class_names}")
            target = list(class_names).index(target)
        ids[int(cluster)] = int(target)
    return ids


def overlay_figure(
    raw_slice: np.ndarray,
    prediction_slice: np.ndarray,
    reference_slice: np.ndarray | None = None,
    *,
    path: str | Path,
    title: str | None = None,
    ignore_value: int = IGNORE_LABEL,
    class_names: Sequence[str] | None = None,
    mapping: Mapping[int | str, str | int | None] | None = None,
) -> Path:
    """Save a row of panels comparing a segmentation with the raw slice and the reference.

    Panels: the raw slice (grey, 1-99 percentile contrast); the clusters in
    the cluster palette of :func:`~orgaseg.viz.colors.label_colors` (so a
    cluster id has the same colour in every figure), with a cluster legend;
    the clusters blended over the raw slice; with ``mapping``, every cluster
    in the class palette (:func:`~orgaseg.viz.colors.class_colors`) colour of
    its matched class (unmatched clusters, and with ``reference_slice`` the
    unscored voxels, left uncoloured); with ``reference_slice``, the reference
    classes, ignored voxels left uncoloured over the raw slice. The classes
    have their own legend.

    Parameters
    ----------
    raw_slice : numpy.ndarray
        2D intensities (yx).
    prediction_slice : numpy.ndarray
        2D cluster ids, same shape.
    reference_slice : numpy.ndarray, optional
        2D class ids, same shape; ``ignore_value`` marks unscored voxels.
    path : str or Path
        PNG file to write (at most 2000 px wide).
    title : str, optional
        Figure title.
    ignore_value : int
        Reference value that is not a class.
    class_names : sequence of str, optional
        Names of the class ids, shown in a legend; needed when ``mapping``
        names classes.
    mapping : mapping, optional
        Cluster id (int or str) to class name, class id or ``None``, e.g. a
        report's ``to_dict()["merge"]["mapping"]``.

    Returns
    -------
    Path
        ``path``.
    """
    raw = np.asarray(raw_slice)
    if raw.ndim != 2:
        raise OrgasegError(f"the raw slice must be 2D, got shape {raw.shape}")
    grey = robust_grey(raw)
    prediction = _label_slice(prediction_slice, "prediction", raw.shape)
    clusters = _colour(prediction, np.ones(raw.shape, dtype=bool), label_colors)
    panels = [
        ("raw", None, 1.0),
        ("clusters", clusters, 1.0),
        ("clusters over raw", clusters, OVERLAY_ALPHA),
    ]
    scored = np.ones(raw.shape, dtype=bool)
    if reference_slice is not None:
        reference = _label_slice(reference_slice, "reference", raw.shape)
        scored = reference != ignore_value
    shown_classes: set[int] = set()
    if mapping is not None:
        to_class = _class_ids(mapping, class_names)
        lookup = np.full(int(prediction.max()) + 1, -1, dtype=np.int64)
        for cluster, target in to_class.items():
            if cluster < lookup.size:
                lookup[cluster] = target
        mapped = np.where(scored, lookup[prediction], -1)
        panels.append(("prediction mapped to classes", _colour(np.maximum(mapped, 0), mapped >= 0, class_colors), 1.0))
        shown_classes.update(np.unique(mapped[mapped >= 0]).tolist())
    if reference_slice is not None:
        panels.append(("reference (unscored voxels grey)", _colour(np.where(scored, reference, 0), scored, class_colors),
                       1.0))
        shown_classes.update(np.unique(reference[scored]).tolist())

    aspect = raw.shape[0] / raw.shape[1]
    panel_width = min(4.0, MAX_WIDTH / len(panels), (MAX_WIDTH - LEGEND_HEIGHT) / aspect)
    figure = new_figure(panel_width * len(panels), panel_width * aspect + LEGEND_HEIGHT)
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (name, image, alpha) in zip(axes_row, panels):
        axes.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0)
        if image is not None:
            axes.imshow(image, alpha=alpha, interpolation="nearest")
        axes.set_title(name, fontsize=10)
        axes.set_axis_off()
    cluster_handles = _legend_handles(set(np.unique(prediction).tolist()), label_colors, lambda k: f"cluster {k}")
    legends = [("clusters", cluster_handles)]
    if shown_classes:
        names = list(class_names) if class_names is not None else []
        legends.append(("classes", _legend_handles(
            shown_classes, class_colors, lambda c: names[c] if c < len(names) else f"class {c}"
        )))
    for (name, handles), where in zip(legends, ("outside lower left", "outside lower right")):
        figure.legend(handles=handles, title=name, loc=where, ncols=min(len(handles), 6), fontsize=8,
                      title_fontsize=9)
    if title:
        figure.suptitle(title)
    return save_png(figure, path)
