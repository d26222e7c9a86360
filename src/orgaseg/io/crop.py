"""A region of a volume as a volume of its own (``orgaseg crop``).

Trying a method on a small region of a large volume, or scoring it there,
needs the region of the raw volume and the same region of its reference as
files every command reads. :func:`crop_volume` copies a region, block by
block, into an ImageJ TIFF or an OME-Zarr image with the source's voxel size;
the OME-Zarr image also carries the region's position (a translation in nm),
so napari draws it where it lies in the full volume. A provenance record
beside the output names the source and the region.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
import zarr

from orgaseg.errors import OrgasegError
from orgaseg.io.metadata import known_voxel_size
from orgaseg.io.partial import (
    move_into_place,
    refuse_existing,
    refuse_replacing_an_input,
    remove,
    remove_leftovers,
    run_tag,
)
from orgaseg.io.provenance import make_provenance, provenance_put_in_place
from orgaseg.io.volume import Region, Volume
from orgaseg.io.writers import (
    IMAGEJ_DTYPES,
    NGFF_CHUNK_KEYS,
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    check_writable,
    imagej_metadata,
    ngff_multiscale,
)
from orgaseg.pipeline.blocks import default_block_shape, make_blocks
from orgaseg.progress import ProgressCallback, report

#: Voxels copied per block (whole planes where they fit).
COPY_BLOCK_VOXELS = 32 * 1024**2

#: Output suffixes, by format (those of the label writers).
SUFFIXES = {"tiff": TIFF_SUFFIXES, "ome-zarr": ZARR_SUFFIXES}


def parse_region(items, shape: Sequence[int]) -> Region:
    """The region ``START:STOP`` per axis (z, y, x), in voxels, checked against ``shape``.

    As Python slices: ``START`` is included, ``STOP`` is not, and an empty
    side means the start or the end of the axis (``:`` is the whole axis).

    Parameters
    ----------
    items : sequence of 3, or str
        Per axis a ``"START:STOP"`` string (as ``orgaseg crop --region``), a ``slice`` (``np.s_[0:4, :, 100:]``;
        step 1) or a ``(START, STOP)`` pair (None: the axis' start or end); or one string of three ranges
        separated by spaces, ``"0:4 : 100:"``.
    shape : sequence of int
        The volume's ``(z, y, x)`` shape.

    Returns
    -------
    tuple of slice
        Three slices with their start and stop filled in, for :func:`crop_volume`.

    Raises
    ------
    OrgasegError
        Not three ranges, a range that is none of those forms, or one not inside the volume.

    Examples
    --------
    >>> parse_region(["0:4", ":", "100:"], (10, 512, 512))
    (slice(0, 4, None), slice(0, 512, None), slice(100, 512, None))
    >>> parse_region(np.s_[0:4, :, 100:], (10, 512, 512)) == parse_region([(0, 4), (None, None), (100, None)],
    ...                                                                   (10, 512, 512))
    True
    """
    items = items.split() if isinstance(items, str) else list(items)
    if len(items) != 3:
        raise OrgasegError(f"a region needs three ranges START:STOP (z, y, x), got {len(items)}: "
                           f"{' '.join(map(str, items))}")
    return tuple(_inside(axis, *_range_of(axis, item, size), size) for axis, item, size in zip("zyx", items, shape))


def _range_of(axis: str, item, size: int) -> tuple[int, int]:
    """``(start, stop)`` of one axis' range: a ``"START:STOP"`` string, a slice or a pair."""
    if isinstance(item, str):
        parts = item.split(":")
    elif isinstance(item, slice) and item.step in (None, 1):
        parts = [item.start, item.stop]
    elif not isinstance(item, slice) and isinstance(item, Sequence):
        parts = list(item)
    else:
        parts = []
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (default if part is None or (isinstance(part, str) and not part.strip()) else
                       int(part) if isinstance(part, str) else operator.index(part)
                       for part, default in zip(parts, (0, size)))
    except (ValueError, TypeError):
        python_forms = "" if isinstance(item, str) else ", a slice with step 1 or a (START, STOP) pair"
        raise OrgasegError(f"region {axis} {item!r}: expected START:STOP in voxels, e.g. 0:64 (or : for the whole "
                           f"axis){python_forms}") from None
    return start, stop


def _inside(axis: str, start: int, stop: int, size: int) -> slice:
    if not 0 <= start < stop <= size:
        raise OrgasegError(f"region {axis} {start}:{stop} is not inside the volume's {axis} axis (0:{size}); "
                           "START must be below STOP, both within the axis")
    return slice(start, stop)


def output_format(path: str | Path) -> str:
    """``"tiff"`` or ``"ome-zarr"`` from the output's suffix."""
    name = Path(path).name.lower()
    for kind, suffixes in SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    raise OrgasegError(f"{path}: unknown output format; use .ome.zarr / .zarr or .tif")


def crop_volume(volume: Volume, region: Region, output: str | Path, *, overwrite: bool = False,
                progress: ProgressCallback | None = None) -> Path:
    """Copy ``region`` of ``volume`` into ``output`` (.tif or .ome.zarr), keeping its voxel size.

    Parameters
    ----------
    volume : Volume
        The source (:func:`orgaseg.io.open_volume`).
    region : tuple of slice
        ``(z, y, x)`` voxel ranges, e.g. from :func:`parse_region`.
    output : str or Path
        ``.tif`` / ``.tiff`` (ImageJ, voxel size in nm) or ``.ome.zarr`` / ``.zarr``
        (OME-Zarr NGFF 0.4 image, one level, the region's corner as a translation in nm, added
        to the source's own :attr:`~orgaseg.io.Volume.origin`).
    overwrite : bool
        Replace an existing output (never the source).
    progress : callable, optional
        Progress callback (one step per copied block).

    Returns
    -------
    Path
        The output; its provenance (source, region, voxel size) is ``OUTPUT.provenance.json``.

    Raises
    ------
    OrgasegError
        ``volume`` that is no Volume, a region that is not three slices inside it, an
        unknown output suffix, a TIFF of a type ImageJ does not hold, an output that
        exists (without ``overwrite``) or is the source.
    """
    started = time.time()
    if not isinstance(volume, Volume):  # an array has no origin or voxel size for the crop to keep
        raise OrgasegError(f"crop_volume copies a Volume (orgaseg.open_volume opens one), got {type(volume).__name__}")
    output = Path(output).expanduser()
    kind = output_format(output)
    if not (len(region) == 3 and all(isinstance(r, slice) and isinstance(r.start, int) and isinstance(r.stop, int)
                                     and r.step in (None, 1) for r in region)):
        raise OrgasegError(f"the region must be three slices START:STOP (parse_region makes one), got {region}")
    region = tuple(_inside(axis, r.start, r.stop, n) for axis, r, n in zip("zyx", region, volume.shape))
    if kind == "tiff" and np.dtype(volume.dtype).name not in IMAGEJ_DTYPES:
        source = volume.path or "the volume"
        raise OrgasegError(f"{output}: an ImageJ TIFF holds {', '.join(IMAGEJ_DTYPES)}, and {source} is "
                           f"{np.dtype(volume.dtype).name}: crop to .ome.zarr, which holds it as it is")
    refuse_replacing_an_input(output, volume)
    refuse_existing(output, overwrite=overwrite)
    shape = tuple(r.stop - r.start for r in region)
    corner = tuple(r.start for r in region)
    position = _position_nm(volume, corner)
    check_writable(output)  # a read-only folder is said at once, as a bad input is
    remove_leftovers(output.parent)  # a killed crop's copy, before this one takes the space again
    temporary = output.with_name(f".tmp-crop-{run_tag()}-{output.name}")  # the pid keeps two runs apart
    remove(temporary)
    try:
        if kind == "tiff":
            _write_tiff(volume, corner, shape, temporary, progress)
        else:
            _write_ome_zarr(volume, corner, position, shape, temporary, output.name, progress)
        record = make_provenance(
            command="crop", source=str(volume.path), source_key=volume.key,
            region={"start": list(corner), "stop": [r.stop for r in region]},
            origin_nm=position, shape=list(shape),
            voxel_size_nm=known_voxel_size(volume), dtype=str(volume.dtype),
            wall_time_s=round(time.time() - started, 3),
        )
        with provenance_put_in_place(output, record):
            move_into_place(temporary, output)
    finally:
        remove(temporary)  # left only when the copy failed
    return output


def _position_nm(volume: Volume, corner: tuple[int, int, int]) -> list[float]:
    """Where the region's first voxel lies, in nm: the source's origin plus the corner's offset.

    Rounded, so that 100 x 4.6 reads 460, not 459.99...; a crop of a crop
    is placed in the first source's coordinates.
    """
    return [round(o + float(c * v), 6) for o, c, v in zip(volume.origin, corner, volume.voxel_size)]


def _source_region(block_region: Region, corner: tuple[int, int, int]) -> Region:
    return tuple(slice(r.start + c, r.stop + c) for r, c in zip(block_region, corner))


def _write_tiff(volume: Volume, corner, shape, target: Path, progress) -> None:
    # a TIFF is written plane after plane, so its blocks are runs of whole planes in z order
    planes_per_block = max(1, COPY_BLOCK_VOXELS // (shape[1] * shape[2]))
    blocks = make_blocks(shape, (planes_per_block, shape[1], shape[2]))

    def planes():
        report(progress, "cropping", 0, len(blocks))
        for done, block in enumerate(blocks, 1):
            yield from np.asarray(volume.read(_source_region(block.region, corner)))
            report(progress, "cropping", done, len(blocks))

    tifffile.imwrite(target, data=planes(), shape=shape, dtype=volume.dtype,
                     **imagej_metadata(known_voxel_size(volume)))


def _write_ome_zarr(volume: Volume, corner, position, shape, target: Path, name: str, progress) -> None:
    blocks = make_blocks(shape, default_block_shape(shape, voxels=COPY_BLOCK_VOXELS))
    root = zarr.open_group(str(target), mode="w", zarr_format=2)
    chunks = tuple(min(c, s) for c, s in zip(blocks[0].shape, shape))
    # every chunk stored, even one of zeros only: a missing chunk in orgaseg's output always means lost data
    array = root.create_array("0", shape=shape, chunks=chunks, dtype=volume.dtype,
                              chunk_key_encoding=NGFF_CHUNK_KEYS, config={"write_empty_chunks": True})
    report(progress, "cropping", 0, len(blocks))
    for done, block in enumerate(blocks, 1):
        array[block.region] = np.asarray(volume.read(_source_region(block.region, corner)))
        report(progress, "cropping", done, len(blocks))
    root.attrs["multiscales"] = [ngff_multiscale(name, [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": list(volume.voxel_size)},
        {"type": "translation", "translation": position},
    ]}], known_voxel_size(volume) is not None)]


__all__ = ["COPY_BLOCK_VOXELS", "crop_volume", "output_format", "parse_region"]
