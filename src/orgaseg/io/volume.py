"""The :class:`Volume`: a lazily read 3D array with axes and voxel size.

Every reader in :mod:`orgaseg.io` returns a :class:`Volume`. Its ``array`` is
anything that has ``shape``, ``dtype`` and numpy-style slicing (a zarr array, an
h5py dataset, a tensorstore view, a memory-mapped file, a numpy array), so a
block is read by slicing and nothing loads a large volume whole.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.io.metadata import check_origin, check_voxel_size, format_sizes

Region = tuple[slice, slice, slice]


@dataclass
class Volume:
    """A 3D volume with axes ``zyx``, read lazily block by block.

    Parameters
    ----------
    array : array-like
        Object with ``shape`` (3 ints, z y x), ``dtype`` and ``__getitem__``
        taking a tuple of three slices and returning an array.
    voxel_size : tuple of float
        Physical size of one voxel in nanometres, ``(z, y, x)``.
    path : str
        Where the data came from (for provenance and messages).
    key : str, optional
        Dataset key / resolution level inside a container, if any.
    chunks : tuple of int, optional
        Storage chunk shape ``(z, y, x)``, if the format is chunked.
    transform : callable, optional
        Applied to every block after reading (e.g. a lookup table mapping
        stored values to class ids). Must preserve the block's shape.
    dtype : numpy dtype, optional
        dtype of the transformed blocks; defaults to the array's dtype.
    attrs : dict, optional
        What the reader found out about the data (format, ...).
    origin : tuple of float
        Position of the first voxel's centre in nanometres, ``(z, y, x)``, in
        the coordinates of a larger volume this one was cut from (an OME-Zarr
        translation, e.g. written by ``orgaseg crop``); zero where the format
        does not say. Outputs computed from the volume carry it, so a viewer
        draws them in place.
    """

    array: Any
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    path: str = ""
    key: str | None = None
    chunks: tuple[int, int, int] | None = None
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    dtype: np.dtype | None = None
    attrs: dict = field(default_factory=dict)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.array.shape) != 3:
            raise ValueError(f"a Volume needs a 3D array, got shape {tuple(self.array.shape)}")
        given = self.voxel_size  # checked here, as every way to a Volume (as_volume too) passes by
        try:
            self.voxel_size = tuple(float(v) for v in np.ravel(given))
        except (TypeError, ValueError):
            self.voxel_size = ()
        if len(self.voxel_size) != 3 or not all(0 < v < float("inf") for v in self.voxel_size):
            raise OrgasegError(f"voxel_size must be 3 positive numbers (z, y, x) in nm, got {given!r}")
        self.origin = check_origin(self.origin)
        if self.dtype is None:
            self.dtype = np.dtype(self.array.dtype)
        else:
            self.dtype = np.dtype(self.dtype)

    axes = "zyx"

    def __repr__(self) -> str:
        """Where the volume comes from and what it holds, not its voxels (it may be read lazily from terabytes).

        Examples
        --------
        >>> import numpy as np
        >>> Volume(np.zeros((4, 32, 32), np.uint8), voxel_size=(30, 5, 5), path="stack.tif")
        <Volume 'stack.tif': 4 x 32 x 32 uint8, voxels 30 x 5 x 5 nm (z y x)>
        """
        source = (repr(self.path) if self.path else "in memory") + (f" (key {self.key!r})" if self.key else "")
        voxels = ("voxel size unknown" if self.attrs.get("voxel_size_assumed")
                  else f"voxels {format_sizes(self.voxel_size)} nm (z y x)")
        placed = f", origin {format_sizes(self.origin)} nm" if any(self.origin) else ""
        return f"<Volume {source}: {' x '.join(map(str, self.shape))} {self.dtype}, {voxels}{placed}>"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(z, y, x)`` in voxels."""
        return tuple(int(s) for s in self.array.shape)

    @property
    def ndim(self) -> int:
        """Always 3 (``z, y, x``; a 2D image is one slice)."""
        return 3

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole volume read into memory, at :attr:`dtype`."""
        return self.size * self.dtype.itemsize

    def read(self, region: Region | None = None) -> np.ndarray:
        """Read a region (three slices, zyx) as a numpy array.

        ``None`` reads the whole volume: only do that for small volumes. A
        volume opened from a file raises :class:`~orgaseg.errors.OrgasegError`
        naming the file and the region when the data cannot be read (a
        corrupt chunk, a truncated file).

        Parameters
        ----------
        region : tuple of slice, optional
            ``(z, y, x)`` slices in voxels, as numpy takes them (default: everything).

        Returns
        -------
        ndarray
            The region's values at :attr:`dtype`, after the volume's ``transform``.
        """
        if region is None:
            region = (slice(None),) * 3
        try:
            block = np.asarray(self.array[tuple(region)])
        except (OrgasegError, MemoryError):
            raise
        except Exception as exc:
            if "format" not in self.attrs:  # an in-memory array: a caller's bug, not a bad file
                raise
            # a corrupt chunk, strip or dataset: the codec's or library's error names neither file nor place
            where = ", ".join("{}:{}".format(*s.indices(n)[:2]) if isinstance(s, slice) else str(s)
                              for s, n in zip(region, self.shape))
            raise OrgasegError(
                f"{self.path}: cannot read the region [{where}] (zyx): {type(exc).__name__}: {exc}"
            ) from exc
        if self.transform is not None:
            block = self.transform(block)
        return block.astype(self.dtype, copy=False)

    def __getitem__(self, index) -> np.ndarray:
        """``volume[z, y, x]`` with integers, slices and ``...`` as numpy takes them: only that part is read."""
        region, squeeze = self._basic_region(index)
        block = self.read(region)
        return block[tuple(0 if axis in squeeze else slice(None) for axis in range(3))]

    def _basic_region(self, index) -> tuple[Region, set[int]]:
        """Three slices for a numpy basic index, and the axes an integer removes."""
        items = list(index) if isinstance(index, tuple) else [index]
        if sum(item is Ellipsis for item in items) > 1:
            raise IndexError("a Volume index may hold one '...'")
        at = next((i for i, item in enumerate(items) if item is Ellipsis), None)
        if at is not None:
            items[at:at + 1] = [slice(None)] * (3 - len(items) + 1)
        if len(items) > 3:
            raise IndexError(f"a Volume has 3 axes (z, y, x); the index {index!r} has {len(items)}")
        items += [slice(None)] * (3 - len(items))
        region, squeeze = [], set()
        for axis, (item, n) in enumerate(zip(items, self.shape)):
            if isinstance(item, slice):
                region.append(item)
                continue
            try:
                position = operator.index(item)
            except TypeError:
                raise IndexError(f"a Volume takes integers, slices and '...' (read a region, then index the array "
                                 f"for more), got {item!r}") from None
            if not -n <= position < n:
                raise IndexError(f"index {position} is out of range for axis {'zyx'[axis]} of size {n}")
            position %= n
            region.append(slice(position, position + 1))
            squeeze.add(axis)
        return tuple(region), squeeze

    def __array__(self, dtype=None, copy=None):
        data = self.read()
        return data if dtype is None else data.astype(dtype)

    def with_transform(self, transform: Callable[[np.ndarray], np.ndarray], dtype=None) -> "Volume":
        """A new volume over the same data whose blocks pass through ``transform``.

        Parameters
        ----------
        transform : callable
            ``block -> block`` of the same shape, applied after this volume's own transform.
        dtype : numpy dtype, optional
            The transformed blocks' dtype (default: this volume's).

        Returns
        -------
        Volume
        """
        previous = self.transform
        combined = transform if previous is None else (lambda block: transform(previous(block)))
        return Volume(
            array=self.array,
            voxel_size=self.voxel_size,
            path=self.path,
            key=self.key,
            chunks=self.chunks,
            transform=combined,
            dtype=dtype if dtype is not None else self.dtype,
            attrs=dict(self.attrs),
            origin=self.origin,
        )

    def is_anisotropic(self, ratio: float = 2.0) -> bool:
        """True when the z voxel size exceeds the in-plane size by more than ``ratio``.

        Parameters
        ----------
        ratio : float
            How many times the larger in-plane voxel size z must exceed.

        Returns
        -------
        bool
        """
        z, y, x = self.voxel_size
        return z > ratio * max(y, x)

    def describe(self) -> str:
        """One line: path, shape, dtype, voxel size."""
        shape = " x ".join(str(s) for s in self.shape)
        vs = format_sizes(self.voxel_size)
        return f"{self.path}: {shape} (zyx) {self.dtype}, voxel {vs} nm"


def as_volume(data, voxel_size=(1.0, 1.0, 1.0), path: str = "<array>") -> Volume:
    """Wrap a numpy array (2D or 3D) or return a :class:`Volume` unchanged.

    A 2D array becomes a volume with one slice.

    Parameters
    ----------
    data : Volume or array-like
        The data; a Volume is returned as it is (``voxel_size`` and ``path`` are then not used).
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in nm.
    path : str
        The name messages and provenance give the array.

    Returns
    -------
    Volume

    Raises
    ------
    OrgasegError
        An array that is not 2D or 3D, is empty or holds no numbers, or a voxel size that is
        not 3 positive numbers.
    """
    if isinstance(data, Volume):
        return data
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise OrgasegError(f"expected a 2D or 3D array, got {arr.ndim} dimensions (shape {arr.shape})")
    check_volume_data(arr.shape, arr.dtype, "the array")
    return Volume(arr, voxel_size=voxel_size, path=path)


def in_memory_volume(data, voxel_size=None) -> Volume:
    """An array or a :class:`Volume` given to a function, with the ``voxel_size`` given to it.

    ``voxel_size`` as :func:`~orgaseg.io.metadata.check_voxel_size` takes it: two numbers (y x) only for
    a single image, so the planes are counted first. Without it a Volume keeps its own, and an array is
    taken at 1 nm, marked ``voxel_size_assumed`` in its attrs, as a file without metadata is. A Volume
    given is not changed (the one returned has attrs of its own).
    """
    volume = as_volume(data)
    if voxel_size is not None:
        return replace(volume, voxel_size=check_voxel_size(voxel_size, planes=volume.shape[0]),
                       attrs=dict(volume.attrs))
    if not isinstance(data, Volume):
        volume.attrs["voxel_size_assumed"] = True
    return volume


def check_volume_data(shape, dtype, name: str) -> None:
    """Refuse data no command can read as a volume: an empty array, or values that are not numbers."""
    if np.dtype(dtype).kind not in "biuf":
        raise OrgasegError(f"{name}: expected intensities or labels (booleans, integers or floats), "
                           f"got values of type {np.dtype(dtype)}")
    if 0 in tuple(shape):
        raise OrgasegError(f"{name} is empty (shape {tuple(shape)})")


class AxesView:
    """A lazy ``zyx`` view of an array stored with another axis order.

    Reading a region reads only that region from ``array`` and transposes it,
    so a volume stored ``xyz`` (N5), ``zcyx`` or ``yx`` (one 2D image) can be
    wrapped in a :class:`Volume` without loading it.

    Parameters
    ----------
    array : array-like
        Object with ``shape``, ``dtype`` and numpy-style slicing.
    axes : str
        One letter per stored axis, e.g. ``"xyz"`` or ``"tczyx"``. It must
        contain ``y`` and ``x``; without ``z`` the view has one slice. Every
        other letter is an axis that is not part of the volume.
    fixed : dict, optional
        Index taken on each axis that is not ``z``, ``y`` or ``x`` (default 0),
        e.g. ``{"c": 2}`` to present the third channel.
    """

    def __init__(self, array: Any, axes: str, fixed: dict[str, int] | None = None) -> None:
        if len(axes) != len(array.shape) or len(set(axes)) != len(axes):
            raise ValueError(f"axes {axes!r} do not fit an array of shape {tuple(array.shape)}")
        if "y" not in axes or "x" not in axes:
            raise ValueError(f"axes {axes!r} need y and x")
        self.array = array
        self.axes = axes
        self.fixed = {a: int((fixed or {}).get(a, 0)) for a in axes if a not in "zyx"}
        self.dtype = np.dtype(array.dtype)
        self.shape = self.zyx(tuple(int(s) for s in array.shape), missing=1)

    ndim = 3

    def zyx(self, per_axis, missing=None) -> tuple:
        """Pick the z, y, x entries of a per-stored-axis sequence (``missing`` for absent z)."""
        by_name = dict(zip(self.axes, per_axis))
        return tuple(by_name.get(a, missing) for a in "zyx")

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3 or any(k is Ellipsis or k is None for k in key):
            raise IndexError(f"index a zyx view with up to three slices or ints, got {key!r}")
        wanted = dict(zip("zyx", key + (slice(None),) * (3 - len(key))))
        stored_key = tuple(wanted[a] if a in "zyx" else self.fixed[a] for a in self.axes)
        kept = [a for a in self.axes if a in "zyx" and isinstance(wanted[a], slice)]
        block = np.asarray(self.array[stored_key])
        if "z" not in self.axes:
            # a virtual z axis of length 1, indexed like a real one
            block = block[np.newaxis][wanted["z"]]
            if isinstance(wanted["z"], slice):
                kept.insert(0, "z")
        order = [kept.index(a) for a in "zyx" if a in kept]
        return np.ascontiguousarray(block.transpose(order))


def read_as(volume: Volume) -> dict[str, Any]:
    """How ``volume`` was read from its file beyond path and key: the stored axis order where it is not
    ``zyx``, the channel of multichannel data; :func:`~orgaseg.io.open_volume`'s ``axes`` and ``channel``,
    so that a record of the volume reads the same voxels again (the same file and shape can hold others)."""
    return {name: volume.attrs[name] for name in ("axes", "channel") if name in volume.attrs}


def absolute_path(path: str | Path | None) -> str | None:
    """``path`` made absolute, so that a record still finds it from another working directory
    (``"<array>"`` and other placeholders in angle brackets stay as they are)."""
    if path is None or str(path).startswith("<"):
        return path
    return str(Path(path).resolve())


def volume_record(volume: Volume) -> dict[str, Any]:
    """What a checkpoint records of a volume it was trained on: where it is (absolute), its shape and voxel size.

    ``voxel_size_assumed`` marks a voxel size the file did not give (1 nm
    assumed), ``resampled_from`` the input voxel size of a volume resampled to
    the training pixel size.
    """
    record = {"path": absolute_path(volume.path), "key": volume.key, **read_as(volume), "shape": list(volume.shape),
              "voxel_size": list(volume.voxel_size)}
    if volume.attrs.get("voxel_size_assumed"):
        record["voxel_size_assumed"] = True
    if "resampled_from" in volume.attrs:
        record["resampled_from"] = volume.attrs["resampled_from"]
    return record
