"""HDF5 files (a dataset by key; ilastik's axistags) as a :class:`~orgaseg.io.metadata.StoredArray`:
:func:`read_hdf5`.

What is read and what refused is listed with the other formats in :mod:`orgaseg.io.readers`, which
presents the array as a volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from orgaseg.errors import OrgasegError, arg
from orgaseg.io.metadata import StoredArray, axis_order, voxel_size_from_attrs


def read_hdf5(path: Path, key: str | None) -> StoredArray:
    """Dataset ``key`` of the HDF5 file at ``path`` (or its only dataset), left open to read from."""
    try:
        handle = h5py.File(path, "r")  # stays open: the volume reads from it
    except OSError as exc:
        raise OrgasegError(f"{path}: not a readable HDF5 file ({exc})") from exc
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    if key is None and len(names) == 1:
        key = names[0]
    if key is None or not isinstance(handle.get(key), h5py.Dataset):
        handle.close()
        problem = "needs a key" if key is None else f"has no dataset {key!r}"
        raise OrgasegError(f"{path} {problem}; pass {arg('key')}, one of the datasets: {', '.join(names) or '(none)'}")
    dataset = handle[key]
    attrs = dict(dataset.attrs)
    axes = _axistags_axes(attrs.get("axistags"), dataset.ndim)
    named_by = "ilastik's axistags" if axes else None
    if axes is None and dataset.ndim in (2, 3):
        axes = "zyx"[3 - dataset.ndim :]
    sizes = voxel_size_from_attrs(attrs, axes) if axes else None
    return StoredArray(dataset, "hdf5", axes=axes, sizes=sizes, chunks=dataset.chunks, key=key,
                       axes_named_by=named_by)


def _axistags_axes(axistags, ndim: int) -> str | None:
    """Stored axis order (C order, slowest first) from an ilastik / vigra ``axistags`` attribute.

    ``axistags`` is the attribute's JSON text (``{"axes": [{"key": "z", ...}, ...]}``, one entry per
    stored axis in the dataset's order). Returns None where there is none, or where it does not name
    ``ndim`` distinct axes among t, z, y, x and c (:func:`~orgaseg.io.metadata.axis_order`): the default
    order then applies, as for any HDF5 file.
    """
    if axistags is None:
        return None
    try:
        text = axistags.decode() if isinstance(axistags, bytes) else str(axistags)
        keys = [axis["key"] for axis in json.loads(text)["axes"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return axis_order(keys, ndim)
