"""The napari writer of labels layers: OME-Zarr or TIFF with names, voxel size and provenance.

A labels layer saved with it (File > Save Selected Layers, or ``viewer.layers.save``)
is written with :func:`orgaseg.io.write_labels`: the names of the layer's features
table (``name``, ``class`` or ``cluster`` per ``index``) become the OME-Zarr
``image-label`` properties and the provenance's ``names``, the layer's scale the voxel
size in nm (converted from the layer's units where they are lengths; a scale in napari's
default unit, pixel, is taken as nm, except napari's default scale 1 x 1 x 1, which says
nothing: the file then carries no voxel size), and the layer's provenance (``metadata["orgaseg"]``) is kept in the new
record as ``source`` (and, for the clusters of a segmentation, on top as well: the saved
clusters can be named). The file reads back in napari (:mod:`orgaseg.napari.reader`) and
in the command line (``orgaseg name``, ``orgaseg instances``, ``orgaseg measure``) with its names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.io import make_provenance, write_labels
from orgaseg.io.metadata import nanometres_per_unit


def write_named_labels(path: str, data, attributes: dict) -> list[str]:
    """Write one labels layer (npe2 single-layer writer); returns the written path.

    Parameters
    ----------
    path : str
        ``.ome.zarr``, ``.zarr``, ``.tif`` or ``.tiff``; an existing file is refused.
    data : array-like, shape (z, y, x) or (y, x), or a sequence of them
        The labels; of a multiscale layer (``attributes["multiscale"]``), its levels, of which the first
        (full resolution) is written.
    attributes : dict
        The layer's attributes (``name``, ``scale``, ``features``, ``metadata``, ``multiscale``).
    """
    try:
        return _write(path, data, attributes)
    except OrgasegError as err:
        # napari takes a writer's ValueError for "not a valid writer" and says only that: say why here
        from napari.utils.notifications import show_error

        show_error(f"orgaseg could not save {Path(path).name}: {err}")
        raise


def _write(path: str, data, attributes: dict) -> list[str]:
    if Path(path).exists():
        raise OrgasegError(f"{path} exists, and orgaseg's writer never replaces a file: save under another name, or "
                           "remove it first")
    # a pyramid's full resolution: numpy reads napari's MultiScaleData as its coarsest level
    labels = np.asarray(data[0] if attributes.get("multiscale") else data)
    scale = attributes.get("scale", (1.0,) * labels.ndim)
    # a single image is one slice as thick as its pixels are tall, as orgaseg reads an image
    voxel_size = _zyx(scale, missing_z=float(scale[-2]))
    origin = _zyx(attributes.get("translate", (0.0,) * labels.ndim), missing_z=0.0)
    factors = _nm_per_unit(attributes.get("units"))
    if voxel_size == (1.0, 1.0, 1.0) and factors == (None, None, None):
        voxel_size = None  # napari's default scale in pixels: nothing says the voxel size (nor, then, nm for the place)
    else:
        voxel_size = tuple(v * (f or 1.0) for v, f in zip(voxel_size, factors))
        origin = tuple(o * (f or 1.0) for o, f in zip(origin, factors))
    metadata = attributes.get("metadata") or {}
    names = _names(attributes.get("features"), metadata)
    label_names = None
    if names:
        if min(names) < 0:
            raise OrgasegError(f"label names need non-negative label values, got {min(names)}")
        n_labels = max(max(names), int(labels.max()) if labels.size else 0) + 1
        label_names = [names.get(v, "background" if v == 0 else str(v)) for v in range(n_labels)]
    source = metadata.get("orgaseg") or None
    saved = {"command": "napari-save", "kind": metadata.get("kind"), "layer": attributes.get("name"),
             "names": label_names, "source": source, "source_path": metadata.get("path")}
    if saved["kind"] == "clusters" and source and "k" in source and "clusterer" in source:
        # still a segmentation: its record stays on top too, so that 'orgaseg name' and Name clusters name it
        saved = {**source, **saved}
    record = make_provenance(**saved)
    written = write_labels(Path(path), labels, voxel_size=voxel_size, origin=origin, provenance=record,
                           label_names=label_names)
    return [str(written)]


def _names(table, metadata: dict) -> dict[int, str] | None:
    """``{label value: name}`` from a features table (dict or DataFrame) or the provenance's ``names``."""
    if table is not None and len(table) and "index" in table:
        for column in ("name", "class", "cluster"):
            if column in table:
                return {int(v): str(n) for v, n in zip(list(table["index"]), list(table[column]))}
    names = (metadata.get("orgaseg") or {}).get("names")
    return {i: str(n) for i, n in enumerate(names)} if names else None


def _nm_per_unit(units) -> tuple[float | None, float | None, float | None]:
    """Nanometres per unit of a layer's z, y, x (``units``, napari's ``layer.units``: its last three, or its two
    with z taking y's); None where the unit is napari's default, pixel (or none is given), which says no size."""
    names = [str(u) for u in units or ()][-3:]
    names = names if len(names) != 2 else names[:1] + names
    if len(names) != 3:
        return (None, None, None)
    factors = []
    for name in names:
        factor = None if name in ("pixel", "") else nanometres_per_unit(name)
        if factor is None and name not in ("pixel", ""):
            raise OrgasegError(f"the layer's unit {name!r} is not a length: give the labels layer a scale in nm "
                               "(units nm) or in pixels")
        factors.append(factor)
    return tuple(factors)


def _zyx(values, *, missing_z: float) -> tuple[float, ...]:
    """A layer's per-axis values (scale, translate) for z, y, x: its last three, or ``missing_z`` and its two."""
    values = tuple(float(v) for v in values)
    return values[-3:] if len(values) >= 3 else (missing_z, *values[-2:])
