"""orgaseg's label volumes as napari layers, and back: colours, names, scale and provenance.

Three kinds of label volume come out of orgaseg, and each is shown its own way:

``clusters``
    ``orgaseg segment``: cluster ids ``0 .. K-1``, every id a real cluster (0 too),
    coloured with the cluster palette (:func:`orgaseg.viz.label_colors`), as in the
    OME-Zarr ``image-label`` colours orgaseg writes.
``named``
    ``orgaseg name``: one id per organelle name, 0 ``unassigned`` (transparent).
``instances``
    ``orgaseg instances``: one id per organelle, 0 background (transparent), napari's
    random label colours; the class of each instance is a feature of the layer.

Names travel as the layer's ``features`` table (``index`` = label value, napari shows
the row under the cursor in the status bar); the provenance record is
``metadata["orgaseg"]`` and the volume's path ``metadata["path"]`` (with the name of the
dask array read from it, ``metadata["dask_name"]``, which painting in napari changes:
:func:`file_of`). The layer's ``scale`` is the voxel size in nm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from orgaseg.viz.colors import label_colors

KINDS = ("clusters", "named", "instances")

#: The features column holding each label value's name, per kind.
NAME_COLUMN = {"clusters": "cluster", "named": "name", "instances": "class"}


def kind_of(record: Mapping | None, names: Mapping[int, str] | None) -> str:
    """Which kind of label volume a provenance record (and the names stored with it) describes."""
    record = record or {}
    if record.get("kind") in KINDS:  # a layer saved from napari says what it was
        return record["kind"]
    if record.get("command") == "instances":
        return "instances"
    if record.get("names") or (names and "k" not in record):
        return "named"
    return "clusters"


def colormap(kind: str, n_labels: int, colors: Mapping[int, Sequence[float]] | None = None):
    """The layer colormap: stored ``colors`` (RGBA in 0..1) or orgaseg's palette; None for instances.

    Cluster 0 is a cluster and stays visible; a named volume's 0 (``unassigned``) is transparent.
    """
    from napari.utils.colormaps import DirectLabelColormap

    if kind == "instances":
        return None  # napari's own random colours tell neighbouring instances apart
    if not colors:
        colors = {i: rgba for i, rgba in enumerate(label_colors(n_labels))}
    table = {None: np.zeros(4), **{int(v): np.asarray(rgba, dtype=float) for v, rgba in colors.items()}}
    if kind == "named":
        table[0] = np.zeros(4)
        return DirectLabelColormap(color_dict=table)
    return DirectLabelColormap(color_dict=table, background_value=-1)


def features(kind: str, names: Mapping[int, str] | None, n_labels: int) -> dict | None:
    """The layer's features table: the name of every label value (``index``)."""
    if kind == "clusters" and not names:
        names = {i: f"cluster {i}" for i in range(n_labels)}
    if not names:
        return None
    values = sorted(int(v) for v in names)
    return {"index": values, NAME_COLUMN[kind]: [str(names[v]) for v in values]}


def names_of(layer) -> dict[int, str] | None:
    """``{label value: name}`` from a labels layer's features (any kind), or from its provenance's ``names``."""
    table = layer.features
    for column in NAME_COLUMN.values():
        if len(table) and column in table and "index" in table:
            return {int(v): str(n) for v, n in zip(table["index"], table[column])}
    names = (layer.metadata.get("orgaseg") or {}).get("names")
    return {i: str(n) for i, n in enumerate(names)} if names else None


def labels_layer(data, *, kind: str, voxel_size: Sequence[float], name: str, names: Mapping[int, str] | None = None,
                 colors: Mapping[int, Sequence[float]] | None = None, record: Mapping | None = None,
                 path: str | None = None, n_labels: int | None = None,
                 origin: Sequence[float] = (0.0, 0.0, 0.0), units: str = "nm") -> tuple:
    """A napari layer data tuple ``(data, kwargs, "labels")`` for an orgaseg label volume.

    Parameters
    ----------
    data : array-like, shape (z, y, x)
        The label ids (a numpy or dask array).
    kind : {"clusters", "named", "instances"}
        What the ids mean (see the module notes).
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in nm: the layer's scale.
    name : str
        Layer name.
    names : mapping, optional
        Name of each label value.
    colors : mapping, optional
        RGBA (0..1) of each label value, e.g. the OME-Zarr ``image-label`` colours.
    record : mapping, optional
        The provenance record (layer metadata ``orgaseg``).
    path : str, optional
        Where the volume was read from (layer metadata ``path``, and ``dask_name``, the name of ``data`` or
        of its first level when it is a dask array: see :func:`file_of`).
    n_labels : int, optional
        Number of label values (default: from ``names``, else the provenance's ``k``).
    origin : sequence of 3 float
        ``(z, y, x)`` in nm where the first voxel lies: the layer's translation.
    units : str
        The unit of ``voxel_size`` and ``origin``: ``nm``, or ``pixel`` (napari's default) for a volume
        whose voxel size is unknown, which orgaseg's writer then saves without one.
    """
    if n_labels is None:
        n_labels = max(names) + 1 if names else int((record or {}).get("k") or 0)
    kwargs = {
        "name": name,
        "scale": tuple(float(v) for v in voxel_size),
        "translate": tuple(float(v) for v in origin),
        "units": (units,) * 3,
        "metadata": {"orgaseg": dict(record or {}), "path": path, "kind": kind,
                     "dask_name": getattr(data[0] if isinstance(data, list) else data, "name", None)},
        "opacity": 0.6,
    }
    cmap = colormap(kind, n_labels, colors)
    if cmap is not None:
        kwargs["colormap"] = cmap
    table = features(kind, names, n_labels)
    if table is not None:
        kwargs["features"] = table
    return data, kwargs, "labels"


def voxel_size_of(layer) -> tuple[float, float, float]:
    """A layer's voxel size in nm ``(z, y, x)``: its scale along its last three axes.

    A single image (a 2D layer) is one slice as thick as its pixels are high, as the command line reads one.
    """
    scale = tuple(float(v) for v in layer.scale[-3:])
    return scale if len(scale) == 3 else (scale[0], *scale)


def layer_units(layer) -> str:
    """The unit of a layer's scale along its last axis (``nm`` for orgaseg's layers, ``pixel`` napari's default)."""
    return str(layer.units[-1]) if getattr(layer, "units", None) else "pixel"


def stated_voxel_size(layer, remedy: str) -> tuple[float, float, float]:
    """The layer's scale as its voxel size in nm, refused when it is napari's default (1, 1, 1).

    napari's TIFF reader and ``add_image`` without a scale give a layer that scale whatever the file
    says: working at 1 nm voxels would silently give wrong sizes. The command line warns (``voxel size
    unknown``); a warning would pass unseen in a widget, so the work is refused, saying ``remedy``.
    """
    from orgaseg.errors import OrgasegError

    voxel_size = voxel_size_of(layer)
    if voxel_size == (1.0, 1.0, 1.0):
        raise OrgasegError(f"voxel size unknown: layer {layer.name!r} has napari's default scale 1 x 1 x 1; {remedy}")
    return voxel_size


def origin_of(layer) -> tuple[float, float, float]:
    """Where a layer's first voxel lies in nm ``(z, y, x)``: its translation along its last three axes."""
    translate = tuple(float(v) for v in layer.translate[-3:])
    return (0.0,) * (3 - len(translate)) + translate


def layer_volume(layer):
    """The full-resolution ``(z, y, x)`` array of an image or labels layer (the first level of a pyramid);
    a single image ``(y, x)`` as one slice."""
    from orgaseg.errors import OrgasegError

    if getattr(layer, "rgb", False):  # its last axis is the colour: (y, x, 3) is no (z, y, x) volume
        raise OrgasegError(f"layer {layer.name!r} is an RGB image; orgaseg works on grey-level (z, y, x) volumes: "
                           "convert it to one channel first (right-click the layer > Split RGB; a greyscale image "
                           "saved in colour, such as a screenshot, has its grey in each of the three)")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if data.ndim == 2:  # a single image is one slice, as the command line reads one (read whole: one plane)
        return np.asarray(data)[np.newaxis]
    if data.ndim != 3:
        raise OrgasegError(f"layer {layer.name!r} holds {data.ndim}D data; orgaseg works on (z, y, x) volumes "
                           "and single (y, x) images: choose one time point or channel first")
    return data


def file_of(layer) -> str | None:
    """The file a labels layer was read from, while the layer still holds what was read; else None.

    Painting in napari (or new data) changes the layer's dask array and with it its ``name``: the
    widgets then work on the layer's data, not on the file, so an edit is never ignored.
    """
    path, read = layer.metadata.get("path"), layer.metadata.get("dask_name")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if path and read is not None and getattr(data, "name", None) == read and Path(path).exists():
        return path
    return None


def to_voxels(points_layer, labels_layer) -> np.ndarray:
    """Points of ``points_layer`` as ``(z, y, x)`` voxel indices of ``labels_layer`` (both scaled and translated)."""
    if points_layer.ndim < 3:
        from orgaseg.errors import OrgasegError

        raise OrgasegError(f"{points_layer.name!r} holds {points_layer.ndim}D points; clicks on a volume are (z, y, x) "
                           "points: make the layer with New clicks layer")
    world = np.asarray(points_layer.data, dtype=float)[:, -3:] * np.asarray(points_layer.scale[-3:]) \
        + np.asarray(points_layer.translate[-3:])
    return (world - np.asarray(origin_of(labels_layer))) / np.asarray(voxel_size_of(labels_layer))
