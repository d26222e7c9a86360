"""Chunked containers: Zarr v2/v3, OME-Zarr (NGFF 0.4 and 0.5) and N5.

Used by :func:`orgaseg.io.open_volume`; see the FORMATS list in
:mod:`orgaseg.io.readers` for what each format must look like.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore
import zarr

from orgaseg.errors import OrgasegError, arg
from orgaseg.io.metadata import (
    VOXEL_SIZE_UNKNOWN,
    MissingChunks,
    StoredArray,
    axis_order,
    nanometres_per_unit,
    origin_from_attrs,
    to_nanometres,
    voxel_size_from_attrs,
)

_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
_LISTED = 20  # names shown when a key is missing


def is_zarr(path: Path) -> bool:
    """A Zarr v2/v3 array or group (by its metadata file or a ``.zarr`` name)."""
    return path.suffix.lower() == ".zarr" or any((path / m).exists() for m in _ZARR_MARKERS)


def is_n5(path: Path) -> bool:
    """An N5 container, group or dataset (by a ``.n5`` name or ``attributes.json``)."""
    return path.suffix.lower() == ".n5" or (path / "attributes.json").exists()


# --- Zarr and OME-Zarr ------------------------------------------------------


def read_zarr(path: Path, key: str | None, level: int) -> StoredArray:
    """Open a Zarr array, a group + ``key``, or an OME-Zarr image at ``level``."""
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several kinds for a broken store
        raise OrgasegError(f"{path}: not a readable Zarr store ({exc})") from exc
    where = str(path)
    if key is not None:
        if not isinstance(node, zarr.Group):
            raise OrgasegError(f"{path}: key {key!r} given, but this is a Zarr array, not a group")
        try:
            node = node[key]
        except KeyError:
            raise OrgasegError(
                f"{path} has no array or group {key!r}; arrays: {_zarr_arrays(node)}"
            ) from None
        where = f"{path}/{key}"
    while isinstance(node, zarr.Group):
        meta = _ome(node.attrs)
        if "multiscales" in meta:
            return _read_multiscale(node, meta, level, where)
        if meta.get("labels"):
            # a labels-only group (orgaseg's output): open its first label image
            node = node[meta["labels"][0]]
            where = f"{where}/{meta['labels'][0]}"
            continue
        raise OrgasegError(
            f"{where}: a Zarr group without OME-Zarr multiscales; pass {arg('key')}, one of: {_zarr_arrays(node)}"
        )
    if level:
        raise OrgasegError(f"{where}: level={level} given, but this is a single Zarr array")
    within = _multiscale_level(Path(where))
    if within is not None:  # a level of an OME-Zarr image opened by its path: its scale and place are the image's
        return within
    named = _dimension_axes(node)
    axes = named or ("zyx"[3 - node.ndim :] if node.ndim in (2, 3) else None)
    attrs = dict(node.attrs)
    sizes = voxel_size_from_attrs(attrs, axes) if axes else None
    return StoredArray(node, "zarr", axes=axes, sizes=sizes, chunks=node.chunks, key=_relative(node),
                       missing_chunks=_zarr_missing_chunks(node), origin=origin_from_attrs(attrs, axes) if axes else None,
                       axes_named_by="the array's Zarr dimension_names" if named else None)


def _dimension_axes(array: zarr.Array) -> str | None:
    """The stored axis order a Zarr v3 array's ``dimension_names`` give (``["x", "y", "z"]``: ``"xyz"``), when
    each is a distinct one of z, y, x, c, t; else None."""
    return axis_order([n for n in getattr(array.metadata, "dimension_names", None) or () if n is not None], array.ndim)


def _multiscale_level(array_path: Path) -> StoredArray | None:
    """The array at ``array_path`` read as the level it is of the OME-Zarr image in the folder above, if it is one."""
    try:
        parent = zarr.open_group(str(array_path.parent), mode="r")
    except (ValueError, OSError):  # no group above (zarr's errors are ValueErrors): a plain array
        return None
    meta = _ome(parent.attrs)
    try:
        paths = [str(d["path"]).strip("/") for d in meta["multiscales"][0]["datasets"]]
    except (KeyError, IndexError, TypeError):
        return None
    if array_path.name not in paths:
        return None
    return _read_multiscale(parent, meta, paths.index(array_path.name), str(array_path.parent))


def _ome(attrs: Any) -> dict:
    """OME metadata of a group: NGFF 0.5 nests it under ``"ome"``, 0.4 does not."""
    attrs = dict(attrs)
    return dict(attrs["ome"]) if isinstance(attrs.get("ome"), dict) else attrs


def _zarr_arrays(group: zarr.Group) -> str:
    names = [name for name, member in group.members(max_depth=None) if isinstance(member, zarr.Array)]
    shown = ", ".join(sorted(names)[:_LISTED]) or "(none)"
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LISTED else "")


def _relative(node: Any) -> str | None:
    name = str(node.path).strip("/")
    return name or None


def _read_multiscale(group: zarr.Group, meta: dict, level: int, where: str) -> StoredArray:
    multiscale = meta["multiscales"][0]
    datasets = multiscale["datasets"]
    if level >= len(datasets):
        raise OrgasegError(
            f"{where}: resolution level {level} requested, "
            f"but there are {len(datasets)} (0..{len(datasets) - 1})"
        )
    dataset = datasets[level]
    array = group[dataset["path"]]
    axes, units = _ngff_axes(multiscale.get("axes"), array.ndim)
    named = "the OME-Zarr multiscales axes" if multiscale.get("axes") else None
    # NGFF applies the dataset's scale and translation, then the multiscale-wide ones
    scale, shift, translated = np.ones(array.ndim), np.zeros(array.ndim), False
    for transforms in (dataset.get("coordinateTransformations"), multiscale.get("coordinateTransformations")):
        for transform in transforms or []:
            kind = transform.get("type")
            values = transform.get(kind) if kind in ("scale", "translation") else None
            if values is None or len(values) != array.ndim:
                continue
            values = np.asarray(values, dtype=float)
            if kind == "scale":
                scale, shift = scale * values, shift * values
            else:
                shift, translated = shift + values, True
    note = None
    if (multiscale.get("metadata") or {}).get(VOXEL_SIZE_UNKNOWN):
        # written by orgaseg from a volume without a voxel size: the scale and the translation are in voxels
        origin = [float(t / s) if s > 0 and math.isfinite(t / s) else 0.0 for t, s in zip(shift, scale)] \
            if translated else None
        return StoredArray(array, "ome-zarr", axes=axes, sizes=[None] * array.ndim, chunks=array.chunks,
                           key=_relative(array), missing_chunks=_zarr_missing_chunks(array), origin=origin,
                           origin_in_voxels=True, axes_named_by=named)
    if any(u is None for a, u in zip(axes, units) if a in "zyx"):
        note = "OME-Zarr axes carry no unit; the scale is taken as nanometres"
    # a scale that is not positive and finite is NaN: wrong metadata, which the reader refuses
    sizes = [
        to_nanometres(s, u) if u is not None else (float(s) if math.isfinite(s) and s > 0 else math.nan)
        for s, u in zip(scale, units)
    ]
    # a translation in an unknown unit, or not finite, places nothing; none at all: the image is not placed
    # (a translation of zero places it at the corner: a crop of a larger volume taken there)
    factors = [nanometres_per_unit(u) if u is not None else 1.0 for u in units]
    origin = [float(t) * f if f is not None and math.isfinite(t) else 0.0 for t, f in zip(shift, factors)] \
        if translated else None
    return StoredArray(
        array, "ome-zarr", axes=axes, sizes=sizes, chunks=array.chunks, key=_relative(array), note=note,
        missing_chunks=_zarr_missing_chunks(array), origin=origin, axes_named_by=named,
    )


def _ngff_axes(axes: Any, ndim: int) -> tuple[str, list[str | None]]:
    """Axis letters and units from NGFF ``axes`` (0.4+: dicts; 0.3: names; older: t c z y x)."""
    if not axes:
        return "tczyx"[5 - ndim :], [None] * ndim
    names, units = [], []
    for axis in axes:
        name = axis.get("name", "") if isinstance(axis, dict) else str(axis)
        kind = axis.get("type") if isinstance(axis, dict) else None
        letter = {"channel": "c", "time": "t"}.get(kind, name[:1].lower())
        names.append(letter)
        units.append(axis.get("unit") if isinstance(axis, dict) else None)
    return "".join(names), units


# --- missing chunks ---------------------------------------------------------


def _stored_keys(folder: Path) -> set[str]:
    """Every file below ``folder``, as a ``/``-separated path relative to it (chunk keys are such paths)."""
    keys = set()
    for parent, _, files in os.walk(folder):
        prefix = Path(parent).relative_to(folder).as_posix()
        keys.update(name if prefix == "." else f"{prefix}/{name}" for name in files)
    return keys


def _missing_chunks(shape, chunks, key_of, stored: set[str], fill_value: Any) -> MissingChunks:
    """Count the chunks of a regular grid whose key is not among the ``stored`` keys."""
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks))
    count, first = 0, None
    for index in np.ndindex(grid):
        if key_of(index) not in stored:
            count += 1
            first = index if first is None else first
    return MissingChunks(count, math.prod(grid), first, fill_value)


def _zarr_missing_chunks(array: zarr.Array) -> MissingChunks:
    """The missing chunks (shards, when sharded) of a Zarr array in a local folder store."""
    folder = Path(str(array.store_path.store.root)) / array.path
    return _missing_chunks(
        array.shape, array.shards or array.chunks, array.metadata.encode_chunk_key, _stored_keys(folder),
        np.asarray(array.fill_value).tolist(),  # a plain number in messages
    )


# --- N5 -------------------------------------------------------------------------


class TensorStoreArray:
    """Numpy-style slicing over a tensorstore view (reads synchronously)."""

    def __init__(self, store: tensorstore.TensorStore) -> None:
        self.store = store
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        return self.store[key].read().result()


def read_n5(path: Path, key: str | None, level: int) -> StoredArray:
    """Open an N5 dataset (``path`` itself, or ``key`` inside it; a multiscale group gives ``s<level>``)."""
    target = path / key if key else path
    if not target.is_dir():  # N5 groups need no attributes.json; datasets do
        raise OrgasegError(f"{path} has no N5 dataset or group {key!r}; datasets: {_n5_datasets(path)}")
    attrs = _n5_attrs(target)
    group_attrs: dict = {}
    if "dimensions" not in attrs:
        scale_level = target / f"s{level}"
        if "dimensions" not in _n5_attrs(scale_level):
            raise OrgasegError(
                f"{target}: an N5 group, not a dataset; pass {arg('key')}, one of: {_n5_datasets(path)}"
            )
        target, group_attrs, attrs = scale_level, attrs, _n5_attrs(scale_level)
    elif level:
        raise OrgasegError(f"{target}: level={level} given, but this is a single N5 dataset")
    try:
        store = tensorstore.open(
            {"driver": "n5", "kvstore": {"driver": "file", "path": str(target)}}, read=True
        ).result()
    except Exception as exc:  # tensorstore reports every failure as ValueError or its own errors
        raise OrgasegError(f"{target}: cannot open N5 dataset ({exc})") from exc
    # N5 lists dimensions fastest first (x y z): present C order (z y x)
    array = TensorStoreArray(store.T)
    axes = "zyx"[3 - array.ndim :] if array.ndim in (2, 3) else None
    sizes = _n5_sizes(attrs, group_attrs or _n5_attrs(target.parent), axes) if axes else None
    chunks = tuple(reversed(attrs.get("blockSize", ()))) or None
    relative = str(target.relative_to(path)) if target != path else None
    # N5 names a chunk by its grid index fastest axis first: "x/y/z"
    missing = None if chunks is None else _missing_chunks(
        array.shape, chunks, lambda index: "/".join(map(str, reversed(index))), _stored_keys(target), fill_value=0
    )
    return StoredArray(array, "n5", axes=axes, sizes=sizes, chunks=chunks, key=relative, missing_chunks=missing,
                       origin=origin_from_attrs(attrs, axes) if axes else None)


def _n5_attrs(folder: Path) -> dict:
    try:
        return json.loads((folder / "attributes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _n5_sizes(attrs: dict, parent: dict, axes: str) -> list[float | None] | None:
    """A dataset's voxel size: its own, or its multiscale group's; times its ``downsamplingFactors``
    where the size is a ``pixelResolution`` or the group's (N5 Viewer and n5-spark's pyramids write the
    full resolution's ``pixelResolution`` on every level, with the level's factors)."""
    sizes = voxel_size_from_attrs(attrs, axes, fastest_first=True)
    if sizes is None:
        sizes = voxel_size_from_attrs(parent, axes, fastest_first=True)
    elif "pixelResolution" not in attrs or "transform" in attrs:
        return sizes
    factors = attrs.get("downsamplingFactors")
    if sizes is not None and factors is not None and len(factors) == len(axes):
        sizes = [s * f if s is not None else None for s, f in zip(sizes, reversed(factors))]
    return sizes


def _n5_datasets(root: Path) -> str:
    names = []
    for folder, subfolders, files in os.walk(root):
        if "attributes.json" in files and "dimensions" in _n5_attrs(Path(folder)):
            names.append(str(Path(folder).relative_to(root)))
            subfolders.clear()  # below a dataset there are only chunks
    names.sort()
    shown = ", ".join(names[:_LISTED]) or "(none)"
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LISTED else "")
