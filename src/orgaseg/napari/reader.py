"""The napari reader of orgaseg: its label outputs as labels layers, other volumes it reads as images.

A path is an orgaseg label output when its provenance record sits beside it
(``<path>.provenance.json``) or, for OME-Zarr, in the root's ``orgaseg`` attribute, and does
not come from a command that writes images (``crop``): it opens as a labels layer, with names
from the OME-Zarr ``image-label`` properties or the provenance
(:func:`orgaseg.organelles.read_label_names`) and colours from the ``image-label`` colours.
Any other TIFF or Zarr that :func:`orgaseg.open_volume` reads as one 3D volume (an ImageJ or
OME-TIFF, an OME-Zarr image such as a ``crop`` output) opens as an image layer. Either way the
layer's scale is the voxel size in nm and its translation the volume's origin, which napari's
own TIFF reader does not read; what orgaseg cannot read is left to other readers. Volumes are
read lazily (a dask array over :func:`orgaseg.open_volume`), with the coarser levels of an
OME-Zarr pyramid as a multiscale layer, so a volume larger than memory opens at once and shows
quickly zoomed out.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.io import VoxelSizeWarning, open_volume, provenance_path
from orgaseg.io.mrc import MRC_SUFFIXES
from orgaseg.io.readers import pyramid_levels
from orgaseg.napari.layers import kind_of, labels_layer

SUFFIXES = (".ome.zarr", ".zarr", ".tif", ".tiff", *MRC_SUFFIXES)

#: Commands whose outputs are images, not labels (their provenance sits beside them all the same).
IMAGE_COMMANDS = ("crop",)


def napari_get_reader(path):
    """The reader of ``path`` (npe2 ``get_reader``): labels for an orgaseg label output, an image for
    another volume orgaseg reads, None for the rest (other readers then try)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path).rstrip("/"))
    if not path.name.lower().endswith(SUFFIXES):
        return None
    record = provenance(path)
    # a crop has a provenance record too, but holds an image
    if record is not None and record.get("command") not in IMAGE_COMMANDS:
        return read_orgaseg
    return read_image if _opens(path) else None


def _opens(path: Path) -> bool:
    """Whether :func:`orgaseg.open_volume` reads ``path`` as one 3D volume."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (an unknown voxel size, missing chunks): the reader warns when it reads
        try:
            open_volume(path)
        except OrgasegError:  # e.g. several channels, a time series, not a volume at all
            return False
    return True


def provenance(path: Path) -> dict | None:
    """The provenance record of an orgaseg output (beside it, or inside an OME-Zarr root), else None."""
    beside = provenance_path(path)
    if beside.is_file():
        try:
            return json.loads(beside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    if path.is_dir():
        attrs = path / ".zattrs"
        try:
            record = json.loads(attrs.read_text(encoding="utf-8")).get("orgaseg") if attrs.is_file() else None
        except (OSError, ValueError, AttributeError):
            return None
        return record if isinstance(record, dict) else None
    return None


def read_orgaseg(path) -> list[tuple]:
    """The labels layer of an orgaseg output: ``[(dask array, kwargs, "labels")]``."""
    from orgaseg.organelles.label_names import read_label_names

    path = _one_path(path)
    volume = _open_for_a_layer(path)
    record = provenance(path) or {}
    names = read_label_names(volume)
    kind = kind_of(record, names)
    data = _lazy_levels(path, volume)
    n_labels = len(names) if names else None
    return [labels_layer(data if len(data) > 1 else data[0], kind=kind, voxel_size=volume.voxel_size, origin=volume.origin,
                         name=f"{_stem(path)} ({kind})", names=names,
                         colors=_stored_colors(path, volume), record=record, path=str(path), n_labels=n_labels,
                         units=_units(volume))]


def read_image(path) -> list[tuple]:
    """The image layer of a volume orgaseg reads: ``[(dask array, kwargs, "image")]``.

    Its scale is the voxel size in nm and its translation the volume's origin, as for the labels.
    """
    path = _one_path(path)
    volume = _open_for_a_layer(path)
    data = _lazy_levels(path, volume)
    metadata = {"path": str(path)}
    record = provenance(path)
    if record is not None:  # a crop's: its source and region
        metadata["orgaseg"] = record
    kwargs = {"name": _stem(path), "scale": volume.voxel_size, "translate": volume.origin,
              "units": (_units(volume),) * 3, "metadata": metadata}
    return [(data if len(data) > 1 else data[0], kwargs, "image")]


def _open_for_a_layer(path: Path):
    """:func:`orgaseg.open_volume`, its warning of an unknown voxel size said as it bears on the layer.

    That warning speaks of segmenting (a 1 nm guess, features filtering across sections, ``voxel_size=``); the
    layer opens at napari's default scale in pixels instead, and the Segment widget asks for the size.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = open_volume(path)
    for warning in caught:
        if issubclass(warning.category, VoxelSizeWarning) and volume.attrs.get("voxel_size_assumed"):
            warnings.warn(VoxelSizeWarning(
                f"{path}: voxel size unknown: opened at napari's default scale, 1 x 1 x 1 pixel, not in nm; type the "
                "voxel size in nm in the Segment widget, or save it in the file (Fiji: Image > Properties)"),
                stacklevel=3)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return volume


def _units(volume) -> str:
    """The layer's unit: nm, or napari's default ``pixel`` where the voxel size is unknown (taken as 1), so
    that nothing downstream (orgaseg's writer, the widgets) reads the guess as nanometres."""
    return "pixel" if volume.attrs.get("voxel_size_assumed") else "nm"


def _one_path(path) -> Path:
    """The path napari hands a reader (one, or a list of one)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    return Path(str(path).rstrip("/"))


def _lazy_levels(path: Path, volume) -> list:
    """The volume and its coarser pyramid levels as dask arrays, read only where napari looks."""
    import dask.array as da

    # unchunked formats (a memory-mapped TIFF) get chunks of a few planes
    return [da.from_array(level, chunks=level.chunks or tuple(min(s, c) for s, c in zip(level.shape, (16, 512, 512))),
                          asarray=True, fancy=False) for level in pyramid_levels(path, volume)]


def _stem(path: Path) -> str:
    """The file name without its volume suffix: the layer's name."""
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


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
