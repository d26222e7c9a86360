"""The napari reader of orgaseg outputs: segmentations, named labels and instance volumes.

A path is claimed when it is an orgaseg label output, i.e. its provenance record sits
beside it (``<path>.provenance.json``) or, for OME-Zarr, in the root's ``orgaseg``
attribute, and does not come from a command that writes images (``crop``). Other files
are left to other readers. The labels are read lazily (a dask array over
:func:`orgaseg.open_volume`), with the coarser levels of an OME-Zarr pyramid as a multiscale
layer, so a volume larger than memory opens at once and shows quickly zoomed out; names come
from the OME-Zarr ``image-label`` properties or the provenance
(:func:`orgaseg.organelles.read_label_names`), colours from the ``image-label`` colours.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from orgaseg.io import open_volume, provenance_path
from orgaseg.napari.layers import kind_of, labels_layer

SUFFIXES = (".ome.zarr", ".zarr", ".tif", ".tiff")

#: Commands whose outputs are images, not labels (their provenance sits beside them all the same).
IMAGE_COMMANDS = ("crop",)


def napari_get_reader(path):
    """The reader of ``path`` when it is an orgaseg output, else None (npe2 ``get_reader``)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path).rstrip("/"))
    if not path.name.lower().endswith(SUFFIXES):
        return None
    record = provenance(path)
    # only label volumes: a crop (an image, with a provenance record too) is left to the image readers
    if record is None or record.get("command") in IMAGE_COMMANDS:
        return None
    return read_orgaseg


def provenance(path: Path) -> dict | None:
    """The provenance record of an orgaseg output (beside it, or inside an OME-Zarr root), else None."""
    beside = provenance_path(path)
    if beside.is_file():
        try:
            return json.loads(beside.read_text())
        except (OSError, ValueError):
            return None
    if path.is_dir():
        attrs = path / ".zattrs"
        try:
            record = json.loads(attrs.read_text()).get("orgaseg") if attrs.is_file() else None
        except (OSError, ValueError, AttributeError):
            return None
        return record if isinstance(record, dict) else None
    return None


def read_orgaseg(path) -> list[tuple]:
    """The labels layer of an orgaseg output: ``[(dask array, kwargs, "labels")]``."""
    import dask.array as da

    from orgaseg.organelles.instances import read_label_names

    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(str(path).rstrip("/"))
    volume = open_volume(path)
    record = provenance(path) or {}
    names = read_label_names(volume)
    kind = kind_of(record, names)
    data = [da.from_array(level, chunks=level.chunks or tuple(min(s, c) for s, c in zip(level.shape, (16, 512, 512))),
                          asarray=True, fancy=False) for level in _levels(path, volume)]
    n_labels = len(names) if names else None
    return [labels_layer(data if len(data) > 1 else data[0], kind=kind, voxel_size=volume.voxel_size, origin=volume.origin,
                         name=_layer_name(path, kind), names=names,
                         colors=_stored_colors(path, volume), record=record, path=str(path), n_labels=n_labels)]


def _levels(path: Path, volume) -> list:
    """The volume and the coarser levels of its OME-Zarr pyramid (napari shows the level that suits the zoom)."""
    from orgaseg.errors import OrgasegError

    levels = [volume]
    group = volume.key.rsplit("/", 1)[0] if volume.key and "/" in volume.key else None  # labels/NAME of labels/NAME/0
    while volume.attrs.get("format") == "ome-zarr":
        try:
            levels.append(open_volume(path, key=group, level=len(levels)))
        except OrgasegError:  # no further level
            break
    return levels


def _layer_name(path: Path, kind: str) -> str:
    stem = path.name
    for suffix in SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{stem} ({kind})"


def _stored_colors(path: Path, volume) -> dict[int, np.ndarray] | None:
    """The OME-Zarr ``image-label`` colours of the label image (RGBA 0..1), or None."""
    if volume.attrs.get("format") != "ome-zarr" or not volume.key or "/" not in volume.key:
        return None
    import zarr

    try:
        attrs = dict(zarr.open_group(str(path), mode="r")[volume.key.rsplit("/", 1)[0]].attrs)
    except Exception:  # another layout: orgaseg's palette instead
        return None
    entries = attrs.get("ome", attrs).get("image-label", {}).get("colors") or []
    colors = {int(e["label-value"]): np.asarray(e["rgba"], dtype=float) / 255.0
              for e in entries if isinstance(e.get("label-value"), int) and len(e.get("rgba", ())) == 4}
    return colors or None
