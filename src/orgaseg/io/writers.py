"""Write label volumes block by block, safely: OME-Zarr or ImageJ TIFF.

The output is built under a hidden temporary sibling name
(``.<name>.partial-<pid>``) and renamed into place by
:meth:`LabelWriter.finalize`, so an interrupted or failed run never leaves a
half-written output, and an existing output (replaced only with
``overwrite``) is removed only after the new one is complete.

Layouts
-------
OME-Zarr (``.ome.zarr`` / ``.zarr``), Zarr v2 format, NGFF 0.4::

    seg.ome.zarr/.zattrs                  {"labels": ["labels/segmentation"], "orgaseg": provenance}
    seg.ome.zarr/labels/.zattrs           {"labels": ["segmentation"]}
    seg.ome.zarr/labels/segmentation/     multiscales (z, y, x in nanometer, scale = voxel
                                          size) + image-label (colours, names, source)
    seg.ome.zarr/labels/segmentation/0    the labels, blosc-zstd chunks, "/" separator

The root lists the label image by its path from the root, so readers that
start at the root (``ome_zarr``'s ``Reader``, napari-ome-zarr) find it
without an image beside it; ``labels/`` is the standard NGFF labels group.

TIFF (``.tif`` / ``.tiff``): an ImageJ hyperstack (``ZYX``, spacing and
resolution in nm, so Fiji shows the voxel size), written through a memory
map; ImageJ holds at most 65,536 labels (uint16).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numcodecs
import numpy as np
import tifffile
import zarr

from orgaseg.errors import OrgasegError
from orgaseg.io.metadata import check_voxel_size
from orgaseg.io.provenance import to_jsonable, write_provenance
from orgaseg.labels import smallest_label_dtype
from orgaseg.viz.colors import label_colors

_ZARR_SUFFIXES = (".ome.zarr", ".zarr")
_TIFF_SUFFIXES = (".tif", ".tiff")
_DEFAULT_CHUNKS = (64, 256, 256)


class LabelWriter:
    """Writes a label volume block by block; see :func:`create_label_writer`.

    Attributes
    ----------
    path : Path
        Final output path.
    shape : tuple of int
        ``(z, y, x)``.
    dtype : numpy dtype
        Smallest unsigned dtype for ``n_labels``.
    chunks : tuple of int or None
        Storage chunks; blocks aligned to them can be written in parallel.
    """

    chunks: tuple[int, int, int] | None = None

    def __init__(self, path: Path, shape, n_labels: int, voxel_size, overwrite: bool, label_names) -> None:
        self.path = path
        self.shape = _check_shape(shape)
        self.n_labels = int(n_labels)
        if self.n_labels < 1:
            raise OrgasegError(f"need at least one label, got n_labels={n_labels}")
        self.dtype = smallest_label_dtype(self.n_labels)
        self.voxel_size = check_voxel_size(voxel_size)
        self.label_names = list(label_names) if label_names is not None else None
        if self.label_names is not None and len(self.label_names) > self.n_labels:
            raise OrgasegError(f"{len(self.label_names)} label names for {self.n_labels} labels")
        self.overwrite = overwrite
        self._check_target()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
        _remove(self.temporary)  # a leftover of an earlier crash with the same pid
        self._done = False

    def _check_target(self) -> None:
        if not self.overwrite and (self.path.exists() or self.path.is_symlink()):
            raise OrgasegError(f"{self.path} exists; pass --overwrite to replace it")

    def write(self, region: tuple[slice, slice, slice], block: np.ndarray) -> None:
        """Write ``block`` (label ids ``0 .. n_labels - 1``) at ``region`` (three slices, zyx)."""
        if self._done:
            raise RuntimeError(f"{self.path}: writer already finalized or aborted")
        block = np.asarray(block)
        expected = tuple(len(range(*s.indices(n))) for s, n in zip(region, self.shape))
        if len(region) != 3 or block.shape != expected:
            raise ValueError(
                f"block of shape {block.shape} does not fit region {region} (expects {expected})"
            )
        if block.size and (block.min() < 0 or block.max() >= self.n_labels):
            raise ValueError(
                f"label ids must lie in 0..{self.n_labels - 1}, got {block.min()}..{block.max()}"
            )
        self._write(tuple(region), block.astype(self.dtype, copy=False))

    def finalize(self, provenance: dict) -> Path:
        """Complete the output, move it into place and write its provenance record.

        Returns the output path.
        """
        if self._done:
            raise RuntimeError(f"{self.path}: writer already finalized or aborted")
        record = dict(provenance)
        if self.label_names is not None:
            record.setdefault("label_names", self.label_names)
        try:
            self._close(record)
            self._check_target()  # something may have appeared there meanwhile
            _move_into_place(self.temporary, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        write_provenance(self.path, record)
        return self.path

    def abort(self) -> None:
        """Remove the temporary output; an existing output stays untouched."""
        self._done = True
        self._release()
        _remove(self.temporary)

    def __enter__(self) -> "LabelWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        # leaving the block without finalize (an exception, a return) discards the output
        if not self._done:
            self.abort()

    def _write(self, region, block) -> None:
        raise NotImplementedError

    def _close(self, record: dict) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop open handles before the temporary output is renamed or removed."""


class OmeZarrLabelWriter(LabelWriter):
    """OME-Zarr (NGFF 0.4, Zarr v2) label image; layout in the module docstring."""

    def __init__(self, path, shape, n_labels, voxel_size, overwrite, label_names, *, chunks, name) -> None:
        super().__init__(path, shape, n_labels, voxel_size, overwrite, label_names)
        if not name or "/" in name or name.startswith("."):
            raise OrgasegError(f"invalid label name {name!r}: use a plain name such as 'segmentation'")
        self.chunks = _check_chunks(chunks, self.shape)
        root = zarr.open_group(str(self.temporary), mode="w", zarr_format=2)
        root.attrs["labels"] = [f"labels/{name}"]
        labels = root.create_group("labels")
        labels.attrs["labels"] = [name]
        group = labels.create_group(name)
        group.attrs.update(self._ngff_attrs(name))
        self._root = root
        self._array = group.create_array(
            "0",
            shape=self.shape,
            chunks=self.chunks,
            dtype=self.dtype,
            fill_value=0,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF 0.4 requires "/"
        )

    def _ngff_attrs(self, name: str) -> dict:
        axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        scale = [{"type": "scale", "scale": list(self.voxel_size)}]
        image_label = {
            "version": "0.4",
            "colors": [
                {"label-value": i, "rgba": [int(round(255 * c)) for c in rgba]}
                for i, rgba in enumerate(label_colors(self.n_labels))
            ],
            "source": {"image": "../../"},
        }
        if self.label_names is not None:
            image_label["properties"] = [
                {"label-value": i, "name": str(n)} for i, n in enumerate(self.label_names)
            ]
        multiscale = {
            "version": "0.4",
            "name": name,
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": scale}],
        }
        return {"multiscales": [multiscale], "image-label": image_label}

    def _write(self, region, block) -> None:
        self._array[region] = block

    def _close(self, record: dict) -> None:
        self._root.attrs["orgaseg"] = to_jsonable(record)


class TiffLabelWriter(LabelWriter):
    """ImageJ hyperstack written through a memory map of the temporary file."""

    def __init__(self, path, shape, n_labels, voxel_size, overwrite, label_names) -> None:
        super().__init__(path, shape, n_labels, voxel_size, overwrite, label_names)
        if self.dtype.itemsize > 2:
            raise OrgasegError(
                f"{path}: ImageJ TIFF holds at most 65536 labels, got {self.n_labels}; "
                "write .ome.zarr instead"
            )
        self._map = tifffile.memmap(
            self.temporary, shape=self.shape, dtype=self.dtype, **_imagej_metadata(self.voxel_size)
        )

    def _write(self, region, block) -> None:
        self._map[region] = block

    def _close(self, record: dict) -> None:
        self._map.flush()
        self._release()

    def _release(self) -> None:
        self._map = None


def create_label_writer(
    path: str | Path,
    shape: Sequence[int],
    n_labels: int,
    *,
    voxel_size: Sequence[float],
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    name: str = "segmentation",
    label_names: Sequence[str] | None = None,
) -> LabelWriter:
    """Start writing a label volume; the format follows the extension of ``path``.

    Parameters
    ----------
    path : str or Path
        ``*.ome.zarr`` / ``*.zarr`` (OME-Zarr) or ``*.tif`` / ``*.tiff`` (ImageJ TIFF).
    shape : sequence of 3 ints
        ``(z, y, x)``.
    n_labels : int
        Number of label ids; picks the dtype (uint8 / uint16 / uint32).
    voxel_size : sequence of 3 floats
        ``(z, y, x)`` in nanometres.
    chunks : sequence of 3 ints, optional
        OME-Zarr chunks; default ``(min(z, 64), min(y, 256), min(x, 256))``.
    overwrite : bool
        Replace an existing output (only once the new one is complete).
    name : str
        Name of the OME-Zarr label image.
    label_names : sequence of str, optional
        Name of each label id (OME-Zarr ``properties`` and the provenance record).

    Returns
    -------
    LabelWriter
        Call ``write(region, block)`` per block, then ``finalize(provenance)``
        (or ``abort()``); usable as a context manager that aborts unless finalized.

    Raises
    ------
    OrgasegError
        Unsupported extension, or ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path).expanduser()
    lower = path.name.lower()
    if lower.endswith(_ZARR_SUFFIXES):
        return OmeZarrLabelWriter(
            path, shape, n_labels, voxel_size, overwrite, label_names, chunks=chunks, name=name
        )
    if lower.endswith(_TIFF_SUFFIXES):
        return TiffLabelWriter(path, shape, n_labels, voxel_size, overwrite, label_names)
    raise OrgasegError(
        f"{path}: cannot write labels with this extension; use .ome.zarr, .zarr, .tif or .tiff"
    )


def write_labels(
    path: str | Path,
    labels: np.ndarray,
    *,
    voxel_size: Sequence[float],
    provenance: dict,
    overwrite: bool = False,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write a label array (2D or 3D, ids ``0 .. n - 1``) in one go; return the path."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise OrgasegError(
            f"labels must be a non-empty 2D or 3D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.min() < 0:
        raise OrgasegError(f"labels must be non-negative, found {labels.min()}")
    n_labels = max(int(labels.max()) + 1, len(label_names or ()))
    with create_label_writer(
        path, labels.shape, n_labels, voxel_size=voxel_size, overwrite=overwrite, label_names=label_names
    ) as writer:
        writer.write((slice(None),) * 3, labels)
        return writer.finalize(provenance)


def write_tiff_image(path: str | Path, image: np.ndarray, *, voxel_size: Sequence[float], overwrite: bool = False) -> Path:
    """Write a greyscale volume (e.g. raw EM) as an ImageJ TIFF with its voxel size, atomically."""
    path = Path(path).expanduser()
    image = np.asarray(image)
    if image.ndim != 3:
        raise OrgasegError(f"{path}: expected a 3D (z, y, x) image, got shape {image.shape}")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OrgasegError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tifffile.imwrite(temporary, image, **_imagej_metadata(check_voxel_size(voxel_size)))
    _move_into_place(temporary, path)
    return path


def _imagej_metadata(voxel_size: tuple[float, float, float]) -> dict:
    """tifffile keywords that make Fiji show the voxel size in nm."""
    z, y, x = voxel_size
    return {"imagej": True, "resolution": (1.0 / x, 1.0 / y), "metadata": {"spacing": z, "unit": "nm", "axes": "ZYX"}}


def _move_into_place(temporary: Path, path: Path) -> None:
    """Rename ``temporary`` to ``path``; an old ``path`` is removed only afterwards."""
    if not (path.exists() or path.is_symlink()):
        os.rename(temporary, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(old)
    os.rename(path, old)
    try:
        os.rename(temporary, path)
    except BaseException:
        os.rename(old, path)  # put the user's output back
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_shape(shape) -> tuple[int, int, int]:
    values = tuple(int(s) for s in shape)
    if len(values) != 3 or min(values) < 1:
        raise OrgasegError(f"label volume shape must be 3 positive sizes (z, y, x), got {tuple(shape)}")
    return values


def _check_chunks(chunks, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    chunks = _DEFAULT_CHUNKS if chunks is None else tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise OrgasegError(f"chunks must be 3 positive sizes (z, y, x), got {chunks}")
    return tuple(min(c, s) for c, s in zip(chunks, shape))
