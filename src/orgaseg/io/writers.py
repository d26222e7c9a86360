"""Write label volumes block by block, safely and resumably: OME-Zarr or ImageJ TIFF.

The output is built in ``<name>.partial/`` beside it and moved into place by
:meth:`LabelWriter.finalize` (see :mod:`orgaseg.io.partial`): an interrupted
or failed run never leaves a half-written output, and an existing output is
replaced (only with ``overwrite``) once the new one is complete. Given a
``resume_key`` (a signature of everything the labels depend on), a writer
reopens a partial output left with the same key instead of starting afresh.

Layouts
-------
OME-Zarr (``.ome.zarr`` / ``.zarr``), Zarr v2 format, NGFF 0.4::

    seg.ome.zarr/.zattrs                  {"labels": ["labels/segmentation"], "orgaseg": provenance}
    seg.ome.zarr/labels/.zattrs           {"labels": ["segmentation"]}
    seg.ome.zarr/labels/segmentation/     multiscales (z, y, x in nanometer, scale = voxel
                                          size) + image-label (colours, names, source)
    seg.ome.zarr/labels/segmentation/0    the labels, blosc-zstd chunks, "/" separator
    seg.ome.zarr/labels/segmentation/1..  coarser levels (mode downsampling, see
                                          :mod:`orgaseg.io.pyramid`), built by finalize

The root lists the label image by its path from the root, so readers that
start at the root (``ome_zarr``'s ``Reader``, napari-ome-zarr) find it
without an image beside it; ``labels/`` is the standard NGFF labels group.

TIFF (``.tif`` / ``.tiff``): an ImageJ hyperstack (``ZYX``, spacing and
resolution in nm, so Fiji shows the voxel size), written through a memory
map; ImageJ holds at most 65,536 labels (uint16).
"""


from __future__ import annotations

import errno
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numcodecs
import numpy as np
import tifffile
import zarr

from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io.metadata import (
    VOXEL_SIZE_UNKNOWN,
    check_origin,
    check_voxel_size,
    describe_origin,
)
from orgaseg.io.partial import PartialOutput, atomic_path, digest, refuse_existing
from orgaseg.io.provenance import provenance_put_in_place, to_jsonable
from orgaseg.io.pyramid import downsampled_shape, level_blocks, plan_levels, write_level
from orgaseg.labels import smallest_label_dtype
from orgaseg.progress import ProgressCallback, report
from orgaseg.viz.colors import label_colors

#: Label outputs by suffix: OME-Zarr and ImageJ TIFF.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
TIFF_SUFFIXES = (".tif", ".tiff")
#: The data types an ImageJ TIFF holds (tifffile refuses the others for ``imagej=True``).
IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")
_DEFAULT_CHUNKS = (64, 256, 256)


#: Label names stored with a transparent colour: the unnamed voxels of ``name``, the background of ``instances``.
TRANSPARENT_NAMES = ("unassigned", "background")


class OutputError(OrgasegError):
    """An output could not be written: a full disk, a folder the user may not write to.

    The cause lies outside the input, but it is the user's to fix, so the
    command line reports it in one line with exit code 2 like bad input.
    """

    def keep(self, note: str) -> None:
        """Add ``note`` (what was kept of the run) to the message, so the report stays one line."""
        self.args = (f"{self.args[0]}; {note}",) + self.args[1:]


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Report an ``OSError`` while writing the output ``path`` as an :class:`OutputError` naming it and the cause."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"{path}: cannot write the output: {_cause(err)}") from err


def check_writable(path: Path) -> None:
    """Refuse an output that cannot be written before the long work that makes it (a training run): its folder
    is created if missing, and a file made there and removed."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=path.parent, prefix=".tmp-writable-")
        os.close(descriptor)
        os.remove(probe)


def give_up(partial: PartialOutput | None) -> None:
    """After a failed start: keep an earlier run's partial output for the next try, remove a new one."""
    if partial is None:
        return
    if partial.resumed:
        partial.release()
    else:
        partial.discard()


def _cause(err: OSError) -> str:
    """What went wrong, in words that say what to do."""
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}; free some space or write elsewhere"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{err.strerror or 'permission denied'}{where}; write to a folder you may write to"
    return f"{err.strerror or err}{where}"


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
        Storage chunks; blocks aligned to them write disjoint chunks.
    resumed : bool
        Whether this writer continues an interrupted run's partial output.
    state_dir : Path
        Folder inside the partial output for the runner's resume state.
    """

    chunks: tuple[int, int, int] | None = None

    def __init__(self, path: Path, shape, n_labels: int, voxel_size, overwrite: bool, label_names,
                 resume_key: str | None = None) -> None:
        self.path = path
        self.shape = check_shape(shape)
        self.n_labels = int(n_labels)
        if self.n_labels < 1:
            raise OrgasegError(f"need at least one label, got n_labels={n_labels}")
        self.dtype = smallest_label_dtype(self.n_labels)
        # None: the input's voxel size was unknown; the output says so instead of carrying a guess
        self.voxel_size_known = voxel_size is not None
        self.voxel_size = check_voxel_size(voxel_size) if self.voxel_size_known else (1.0, 1.0, 1.0)
        self.label_names = list(label_names) if label_names is not None else None
        if self.label_names is not None and len(self.label_names) > self.n_labels:
            raise OrgasegError(f"{len(self.label_names)} label names for {self.n_labels} labels")
        self._partial: PartialOutput | None = None
        self._resume_key = resume_key
        self._overwrite = overwrite
        self._done = False

    def _start(self, layout: dict) -> None:
        """Create or reuse the partial output; ``layout`` is what the stored output depends on."""
        key = None
        if self._resume_key is not None:
            layout = {"writer": type(self).__name__, "shape": self.shape, "dtype": self.dtype.str,
                      "voxel_size": self.voxel_size if self.voxel_size_known else None,
                      "label_names": self.label_names, **layout}
            key = digest({"content": self._resume_key, "layout": to_jsonable(layout)})
        try:
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._partial = PartialOutput(self.path, self._overwrite, key)
                if self._partial.resumed:
                    self._reopen(self._partial.target)
                else:
                    self._create(self._partial.target)
                    self._partial.commit_key()
        except BaseException:
            give_up(self._partial)
            raise

    @property
    def resumed(self) -> bool:
        return self._partial.resumed

    @property
    def state_dir(self) -> Path:
        return self._partial.state

    @property
    def partial(self) -> Path:
        """The folder holding the output under construction."""
        return self._partial.folder

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
        with writing(self.path):
            self._write(tuple(region), block.astype(self.dtype, copy=False))

    def flush(self) -> None:
        """Make the blocks written so far durable (before the runner marks them done)."""

    def finalize(self, provenance: dict, progress: ProgressCallback | None = None) -> Path:
        """Complete the output (pyramid, metadata), move it into place, write its provenance record.

        ``progress`` is told of the pyramid's blocks (``building the pyramid``). Returns the output path.
        """
        if self._done:
            raise RuntimeError(f"{self.path}: writer already finalized or aborted")
        record = dict(provenance)
        if self.label_names is not None:
            record.setdefault("label_names", self.label_names)
        try:
            with writing(self.path):
                self._close(record, progress)
                self._release()
                with provenance_put_in_place(self.path, record):
                    self._partial.move_into_place()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Remove the partial output; an existing output stays untouched."""
        self._done = True
        self._release()
        if self._partial is not None:
            self._partial.discard()

    def suspend(self) -> None:
        """Stop writing but keep the partial output, so a rerun with the same key resumes it."""
        self._done = True
        self.flush()
        self._release()
        if self._partial is not None:
            self._partial.release()

    def __enter__(self) -> "LabelWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        # leaving the block without finalize (an exception, a return) discards the output
        if not self._done:
            self.abort()

    def _create(self, target: Path) -> None:
        raise NotImplementedError

    def _reopen(self, target: Path) -> None:
        raise NotImplementedError

    def _write(self, region, block) -> None:
        raise NotImplementedError

    def _close(self, record: dict, progress: ProgressCallback | None) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop open handles before the partial output is moved or removed."""


#: NGFF 0.4 axes of every OME-Zarr orgaseg writes.
NGFF_AXES = tuple({"name": a, "type": "space", "unit": "nanometer"} for a in "zyx")

def ngff_multiscale(name: str, datasets: list[dict], voxel_size_known: bool = True) -> dict:
    """An NGFF 0.4 multiscale of ``datasets`` in nm; with an unknown voxel size, in voxels and marked so.

    The mark (:data:`~orgaseg.io.metadata.VOXEL_SIZE_UNKNOWN`) makes orgaseg read the volume back as one
    without a voxel size, so nothing is measured in nm from the 1 nm a reader assumed for its input.
    """
    axes = [dict(axis) if voxel_size_known else {"name": axis["name"], "type": "space"} for axis in NGFF_AXES]
    multiscale = {"version": "0.4", "name": name, "axes": axes, "datasets": datasets}
    if not voxel_size_known:
        multiscale["metadata"] = {VOXEL_SIZE_UNKNOWN: True}
    return multiscale


#: Zarr v2 chunk keys as NGFF 0.4 requires them ("/" between indices).
NGFF_CHUNK_KEYS = {"name": "v2", "separator": "/"}


class OmeZarrLabelWriter(LabelWriter):
    """OME-Zarr (NGFF 0.4, Zarr v2) label image with a pyramid; layout in the module docstring."""

    def __init__(self, path, shape, n_labels, voxel_size, overwrite, label_names, resume_key=None, *,
                 chunks, name, origin=None) -> None:
        super().__init__(path, shape, n_labels, voxel_size, overwrite, label_names, resume_key)
        if not name or "/" in name or name.startswith("."):
            raise OrgasegError(f"invalid label name {name!r}: use a plain name such as 'segmentation'")
        self.name = name
        self.placed = origin is not None  # a translation is written, zero included
        self.origin = check_origin(origin)
        self.chunks = check_chunks(chunks, self.shape)
        self._start({"chunks": self.chunks, "name": name})

    def _create(self, target: Path) -> None:
        root = zarr.open_group(str(target), mode="w", zarr_format=2)
        root.attrs["labels"] = [f"labels/{self.name}"]
        labels = root.create_group("labels")
        labels.attrs["labels"] = [self.name]
        self._group = labels.create_group(self.name)
        self._group.attrs.update(self._ngff_attrs([]))
        self._root = root
        self._array = self._create_level("0", self.shape)

    def _reopen(self, target: Path) -> None:
        self._root = zarr.open_group(str(target), mode="r+", zarr_format=2)
        self._group = self._root["labels"][self.name]
        self._array = self._group["0"]

    def _create_level(self, path: str, shape: tuple[int, int, int]):
        return self._group.create_array(
            path,
            shape=shape,
            chunks=tuple(min(c, s) for c, s in zip(self.chunks, shape)),
            dtype=self.dtype,
            fill_value=0,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
            chunk_key_encoding=NGFF_CHUNK_KEYS,
            # every chunk is stored, even one of label 0 only: in orgaseg's output a
            # missing chunk then always means lost data (open_volume warns about it)
            config={"write_empty_chunks": True},
            overwrite=True,  # a level left by an interrupted finalize
        )

    def _ngff_attrs(self, steps: Sequence[tuple[int, int, int]]) -> dict:
        full = [{"type": "scale", "scale": list(self.voxel_size)}]
        if self.placed:
            full.append({"type": "translation", "translation": list(self.origin)})
        datasets = [{"path": "0", "coordinateTransformations": full}]
        factor = np.ones(3)
        for level, step in enumerate(steps, 1):
            factor = factor * step
            # a coarse voxel's centre lies between the centres of the voxels it covers
            # (rounded to 1e-6 nm: 6.8999999999999995 is 6.9 to any reader)
            shift = [round(float(o + v * (f - 1) / 2), 6) for o, v, f in zip(self.origin, self.voxel_size, factor)]
            datasets.append({
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [round(float(v * f), 6) for v, f in zip(self.voxel_size, factor)]},
                    {"type": "translation", "translation": shift},
                ],
            })
        colors = label_colors(self.n_labels)
        for i, name in enumerate(self.label_names or ()):
            if name in TRANSPARENT_NAMES:  # what no one named, or no object: see-through in any NGFF viewer
                colors[i, 3] = 0.0
        image_label = {
            "version": "0.4",
            "colors": [{"label-value": i, "rgba": [int(round(255 * c)) for c in rgba]} for i, rgba in enumerate(colors)],
            "source": {"image": "../../"},
        }
        if self.label_names is not None:
            image_label["properties"] = [
                {"label-value": i, "name": str(n)} for i, n in enumerate(self.label_names)
            ]
        return {"multiscales": [ngff_multiscale(self.name, datasets, self.voxel_size_known)], "image-label": image_label}

    def _write(self, region, block) -> None:
        self._array[region] = block

    def _close(self, record: dict, progress: ProgressCallback | None) -> None:
        steps = plan_levels(self.shape, self.voxel_size)
        targets, shape = [], self.shape
        for level, step in enumerate(steps, 1):
            shape = downsampled_shape(shape, step)
            targets.append(self._create_level(str(level), shape))
        total, done = sum(len(level_blocks(t, step)) for t, step in zip(targets, steps)), 0

        def written() -> None:  # minutes on a large volume, after the last block: said, not silent
            nonlocal done
            done += 1
            report(progress, "building the pyramid", done, total)

        source = self._array
        for target, step in zip(targets, steps):
            write_level(source, target, step, written=written)
            source = target
        self._group.attrs.update(self._ngff_attrs(steps))
        self._root.attrs["orgaseg"] = to_jsonable(record)


class TiffLabelWriter(LabelWriter):
    """ImageJ hyperstack written through a memory map of the partial file (no pyramid)."""

    def __init__(self, path, shape, n_labels, voxel_size, overwrite, label_names, resume_key=None) -> None:
        super().__init__(path, shape, n_labels, voxel_size, overwrite, label_names, resume_key)
        if self.dtype.itemsize > 2:
            raise OrgasegError(
                f"{path}: ImageJ TIFF holds at most 65536 labels, got {self.n_labels}; "
                "write .ome.zarr instead"
            )
        self._map = None
        self._start({})

    def _create(self, target: Path) -> None:
        self._map = tifffile.memmap(target, shape=self.shape, dtype=self.dtype,
                                    **imagej_metadata(self.voxel_size if self.voxel_size_known else None))

    def _reopen(self, target: Path) -> None:
        self._map = tifffile.memmap(target, mode="r+")

    def _write(self, region, block) -> None:
        self._map[region] = block

    def flush(self) -> None:
        if self._map is not None:
            with writing(self.path):
                self._map.flush()

    def _close(self, record: dict, progress: ProgressCallback | None) -> None:
        self.flush()

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
    resume_key: str | None = None,
    origin: Sequence[float] | None = None,
) -> LabelWriter:
    """Start (or resume) writing a label volume; the format follows the extension of ``path``.

    Parameters
    ----------
    path : str or Path
        ``*.ome.zarr`` / ``*.zarr`` (OME-Zarr) or ``*.tif`` / ``*.tiff`` (ImageJ TIFF).
    shape : sequence of 3 ints
        ``(z, y, x)``.
    n_labels : int
        Number of label ids; picks the dtype (uint8 / uint16 / uint32).
    voxel_size : sequence of 3 floats or None
        ``(z, y, x)`` in nanometres; None when the input's is unknown (the
        output then carries none: ImageJ without calibration, OME-Zarr scales
        in voxels marked unknown, so it is read back as unknown).
    chunks : sequence of 3 ints, optional
        OME-Zarr chunks; default ``(min(z, 64), min(y, 256), min(x, 256))``.
    overwrite : bool
        Replace an existing output (only once the new one is complete); a
        partial output of an earlier run is discarded.
    name : str
        Name of the OME-Zarr label image.
    label_names : sequence of str, optional
        Name of each label id (OME-Zarr ``properties`` and the provenance record).
    resume_key : str, optional
        Signature of everything the labels depend on. When the partial output
        ``<path>.partial`` was left by a run with the same key (and the same
        shape, labels, chunks), it is reopened (``writer.resumed``) and the
        blocks written so far are kept; otherwise it is discarded.
    origin : sequence of 3 floats, optional
        Position of the first voxel's centre in nanometres ``(z, y, x)``, the
        input's place (:func:`~orgaseg.io.metadata.placement`): an OME-Zarr
        translation, so labels of a cropped region overlay it in a viewer
        (None: no translation, as for an input that says nothing of its
        place). An ImageJ TIFF has no place for it and starts at zero.

    Returns
    -------
    LabelWriter
        Call ``write(region, block)`` per block, then ``finalize(provenance)``
        (or ``abort()``, or ``suspend()`` to keep the partial output for a
        rerun); usable as a context manager that aborts unless finalized.

    Raises
    ------
    OrgasegError
        Unsupported extension, or ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path).expanduser()
    lower = path.name.lower()
    if lower.endswith(ZARR_SUFFIXES):
        return OmeZarrLabelWriter(
            path, shape, n_labels, voxel_size, overwrite, label_names, resume_key, chunks=chunks, name=name,
            origin=origin,
        )
    if lower.endswith(TIFF_SUFFIXES):
        if any(check_origin(origin)):
            warnings.warn(OrgasegWarning(
                f"{path}: the input lies at {describe_origin(check_origin(origin))} (a crop of a larger volume), and "
                "a TIFF has no place for that: the labels will start at 0; write .ome.zarr to keep their place"),
                stacklevel=2)
        return TiffLabelWriter(path, shape, n_labels, voxel_size, overwrite, label_names, resume_key)
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
    origin: Sequence[float] | None = None,
) -> Path:
    """Write a label array (2D or 3D, ids ``0 .. n - 1``) in one go; return the path.

    ``origin`` as in :func:`create_label_writer`.
    """
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
        path, labels.shape, n_labels, voxel_size=voxel_size, overwrite=overwrite, label_names=label_names,
        origin=origin,
    ) as writer:
        writer.write((slice(None),) * 3, labels)
        return writer.finalize(provenance)


def write_tiff_image(path: str | Path, image: np.ndarray, *, voxel_size: Sequence[float], overwrite: bool = False) -> Path:
    """Write a greyscale volume (e.g. raw EM) as an ImageJ TIFF with its voxel size, atomically.

    Parameters
    ----------
    path : str or Path
        The file, ``.tif`` or ``.tiff``.
    image : ndarray, shape (z, y, x)
        uint8, uint16, int16 or float32: the types an ImageJ TIFF holds.
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in nm, written as ImageJ's spacing and resolution.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OrgasegError
        Another suffix, an image that is not 3D or of another type, a voxel size that is
        not 3 positive numbers, or ``path`` exists and not ``overwrite``.
    """
    path = Path(path).expanduser()
    image = np.asarray(image)
    if not path.name.lower().endswith(TIFF_SUFFIXES):  # a .png name held a TIFF
        raise OrgasegError(f"{path}: write the image as .tif or .tiff")
    if image.ndim != 3:
        raise OrgasegError(f"{path}: expected a 3D (z, y, x) image, got shape {image.shape}")
    if image.dtype.name not in IMAGEJ_DTYPES:  # tifffile's "does not support data type 'd'" named no type
        raise OrgasegError(f"{path}: an ImageJ TIFF holds {', '.join(IMAGEJ_DTYPES)}, and the image is "
                           f"{image.dtype.name}: convert it first (e.g. image.astype(np.float32))")
    refuse_existing(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, image, **imagej_metadata(check_voxel_size(voxel_size)))
    return path


def imagej_metadata(voxel_size: tuple[float, float, float] | None) -> dict:
    """tifffile keywords that make Fiji show the voxel size in nm (None: no calibration, the size is unknown)."""
    if voxel_size is None:
        return {"imagej": True, "metadata": {"axes": "ZYX"}}
    z, y, x = voxel_size
    return {"imagej": True, "resolution": (1.0 / x, 1.0 / y), "metadata": {"spacing": z, "unit": "nm", "axes": "ZYX"}}


def check_shape(shape) -> tuple[int, int, int]:
    """``shape`` as three positive ints (z, y, x), or a clear error."""
    values = tuple(int(s) for s in shape)
    if len(values) != 3 or min(values) < 1:
        raise OrgasegError(f"the volume shape must be 3 positive sizes (z, y, x), got {tuple(shape)}")
    return values


def check_chunks(chunks, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Three positive chunk sizes (default ``(64, 256, 256)``) clipped to ``shape``."""
    chunks = _DEFAULT_CHUNKS if chunks is None else tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise OrgasegError(f"chunks must be 3 positive sizes (z, y, x), got {chunks}")
    return tuple(min(c, s) for c, s in zip(chunks, shape))

