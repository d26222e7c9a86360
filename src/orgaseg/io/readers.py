"""Open any supported volume lazily: :func:`open_volume`.

FORMATS (how each format is recognised and where its voxel size comes from):

- **TIFF** (``.tif``/``.tiff``, multi-page, ImageJ hyperstack, OME-TIFF):
  memory-mapped when the pixels are stored contiguously, otherwise read
  through ``tifffile``'s zarr store. Voxel size from OME-XML
  (``PhysicalSize{X,Y,Z}`` with their units), ImageJ metadata
  (``spacing`` + ``unit`` for z, 1 unit without ``spacing`` as ImageJ
  reads it; the resolution tags for y and x; ``yunit`` and ``zunit`` where
  ImageJ gives y or z a unit of its own), or a plain TIFF's resolution
  tags in cm or inch for y and x (not a print default such as 72 dpi).
  A single 2D page is a volume with one slice.
- **2D image** (``.png``/``.jpg``/``.jpeg``): a volume with one slice; no voxel size. A
  colour image (RGB, RGBA, LA) has a channel axis: ``channel`` picks one.
- **Folder of slices** (a directory of ``.tif``/``.tiff``/``.png``/``.jpg``
  files, sorted naturally: ``2.png`` before ``10.png``): read slice by
  slice; all slices must share shape and dtype (1-bit slices among 8-bit
  ones read as uint8 0/255); colour PNG or JPEG slices of one mode have a
  channel axis, of which ``channel`` picks one; no voxel size.
- **Zarr v2/v3** (a directory with ``.zarray``/``.zgroup``/``zarr.json``, or
  named ``*.zarr``): an array, or a group plus ``key``; a v3 array's
  ``dimension_names`` give its stored axis order where they are axis
  letters (``x``, ``y``, ``z``, ``c``, ``t``). Voxel size from array
  attributes (``transform`` with named axes, ``pixelResolution`` in x y z
  as N5 lists it, ``resolution`` in stored order); the ``origin`` from a
  ``transform``'s ``translate`` (CellMap).
- **OME-Zarr** NGFF 0.4 (``multiscales`` in ``.zattrs``) and 0.5
  (``multiscales`` under ``"ome"`` in ``zarr.json``): resolution ``level``
  (0 = full); voxel size from that level's ``scale`` transform (times a
  multiscale-wide one) with the axes' units; the volume's ``origin`` from
  its ``translation`` transforms (zero for the formats without a
  ``transform`` translation, MRC included). A group holding only ``labels`` (as orgaseg writes) opens its
  first label image.
- **N5** (a directory named ``*.n5`` or holding ``attributes.json``; dataset
  via ``key``, e.g. ``recon-1/em/fibsem-uint8/s0``) through ``tensorstore``.
  N5 lists dimensions fastest first (x y z); the volume is presented in C
  order (z y x), and ``axes`` refers to that order. A multiscale group as
  ``key`` opens dataset ``s<level>``. Voxel size from ``transform``
  (CellMap), ``pixelResolution`` or ``resolution`` (N5 order), on the
  dataset or its parent group times the dataset's ``downsamplingFactors``;
  the ``origin`` from the dataset's ``transform`` ``translate``.
- **HDF5** (``.h5``/``.hdf5``/``.hdf``) with ``key`` (optional when the file
  holds one dataset), kept open and read lazily. Voxel size from attributes
  ``element_size_um`` (micrometres) or ``resolution`` (nm), stored order.
  The stored axis order from ``axistags`` where ilastik (vigra) wrote them
  (e.g. ``tzyxc`` for its exports), else ``zyx`` (``yx`` for one image).
- **MRC** (``.mrc``/``.mrcs``/``.rec``/``.st``/``.ali``/``.map``: IMOD,
  SerialEM, EMPIAR) through ``mrcfile``, memory-mapped. A header that is slightly off
  (no machine stamp, no ``MAP`` identifier as before MRC2000, a file longer
  than it declares) is read with an :class:`OrgasegWarning` per problem
  mrcfile finds; a file the header does not describe (truncated, not MRC) is
  refused. The stored axes are sections, rows, columns, which ``mapc``,
  ``mapr``, ``maps`` name (1, 2, 3 is z y x; 3, 2, 1 is stored ``xyz``,
  presented zyx like any other order; codes that are no order of 1, 2, 3,
  and one image whose rows or columns lie along z, are refused). An image
  stack (space group 0) is a volume, a single image one slice; a volume
  stack (space group 401) holds its volumes on a ``c`` axis, of which
  ``channel`` reads one (several without ``channel``: refused, naming
  them). Modes 0 (int8), 1 (int16), 2 (float32), 6 (uint16), 12 (float16);
  the complex modes 3 and 4, RGB (16) and 4-bit (101) are refused. Mode 0 is
  read signed, as MRC2014 defines it, unless IMOD's stamp is there without
  IMOD's flag for signed bytes: IMOD wrote unsigned bytes (always before
  IMOD 4.2.23, since then as that flag says), read as uint8 as IMOD reads
  them (a file without the stamp cannot say). Voxel size from the header's ``voxel_size`` (cell ``cella`` over
  sampling ``mx``/``my``/``mz``, in Å) per axis; an axis whose cell or
  sampling is 0 (mrcfile's default) or whose cell or voxel is 1 Å (what
  writers leave when nothing was set) has none. No origin: ``ORIGIN``
  (MRC2014: the subvolume's origin in Å) has opposite signs in IMOD and UCSF
  Chimera, and ``NXSTART``/``NYSTART``/``NZSTART`` (in voxels), which IMOD
  ignores, is what other programs place a map by: no one reading places every
  writer's file, so the origin is zero.
- **NumPy** ``.npy``: memory-mapped; no voxel size.

Axes: ``axes`` names the stored order (``"zyx"``, ``"xyz"``, ``"yx"``,
``"zcyx"``, ...); by default the metadata's order, else ``"zyx"``/``"yx"``
by dimensionality (extra axes of size 1 are dropped). The volume always
presents ``zyx``. Voxel size: ``voxel_size`` argument > metadata > 1 nm with
a :class:`VoxelSizeWarning`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning, arg, with_key_option
from orgaseg.io import containers
from orgaseg.io.hdf5 import read_hdf5
from orgaseg.io.metadata import StoredArray, check_voxel_size, format_sizes, tenfold
from orgaseg.io.mrc import MRC_SUFFIXES, read_mrc
from orgaseg.io.slices import COLOUR_MODES, IMAGE_SUFFIXES, ColourImage, SliceStack, image_files
from orgaseg.io.tiff import read_tiff
from orgaseg.io.tifflog import route_tifffile_log
from orgaseg.io.volume import AxesView, Volume, check_volume_data

_TIFF_SUFFIXES = (".tif", ".tiff")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_SUPPORTED = (
    "TIFF (.tif/.tiff), PNG/JPEG images, a folder of 2D slices, Zarr/OME-Zarr, "
    f"N5, HDF5 (.h5/.hdf5/.hdf), MRC ({'/'.join(MRC_SUFFIXES)}), NumPy (.npy)"
)


route_tifffile_log()


class VoxelSizeWarning(OrgasegWarning):
    """The voxel size of a volume is unknown or partly guessed."""


def assumed_voxel_size(what: str, assumption: str, nz: int) -> VoxelSizeWarning:
    """The warning for a voxel size guessed as ``assumption`` (e.g. ``"voxel size unknown, assuming 1 x 1 x 1
    nm"``) for ``what`` (a path, "the array"), with what the guess does to a stack of ``nz`` sections."""
    # an isotropic guess is the costly part on serial sections: the filters smooth across them
    consequence = (": the stack is taken as isotropic (features filter across sections, sizes in nm take them as "
                   "thin as the pixels)") if nz > 1 else ""
    # a single image has no thickness to give: say which Z will do, and what the guess costs its features
    single = (f" (one image: its pixel size Y X will do, e.g. {arg('voxel_size', (4.6, 4.6))}, its thickness Z then "
              "taken as Y, which matters little (a size in nm^3 for instances reads it); the baseline's filter scales "
              "are in nm, so 1 nm pixels make them 10 to 160 pixels wide)"
              ) if nz == 1 and "1 x 1 x 1" in assumption else ""
    return VoxelSizeWarning(f"{what}: {assumption}{consequence}; pass {arg('voxel_size')} in nm{single}")


class MissingChunksWarning(OrgasegWarning):
    """A Zarr or N5 store lacks chunks of the array, which read as the fill value."""


def _override_remark(given: tuple[float, float, float], stored: tuple[float, float, float]) -> str:
    """What a voxel size given over the file's own may say about either: a unit slip, another axis order."""
    if tenfold(given, stored):
        return f": is it in Å? {arg('voxel_size')} is in nm"
    if np.allclose(np.divide(stored, given), 1000.0, rtol=0.01):  # the correction that info and segment ask for
        return ": the file's is 1000 times larger (a size in nm stored as um)"
    if np.allclose(sorted(given), sorted(stored), rtol=0.01):
        return ": is the order right?"
    return ""

def open_volume(
    path: str | Path,
    key: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    axes: str | None = None,
    level: int = 0,
    channel: int | None = None,
    strict_chunks: bool = False,
) -> Volume:
    """Open a volume lazily in any supported format (see the module's FORMATS).

    Parameters
    ----------
    path : str or Path
        File or directory.
    key : str, optional
        Dataset inside a container (Zarr group, N5, HDF5).
    voxel_size : float or sequence of 3 floats, optional
        Voxel size ``(z, y, x)`` in nanometres (one number: isotropic; two,
        ``(y, x)``, for a single image, whose z is then y). Overrides the
        metadata.
    axes : str, optional
        Stored axis order, e.g. ``"xyz"`` or ``"zcyx"``; default from metadata.
    level : int
        Resolution level of a multiscale OME-Zarr or N5 group (0 = full).
    channel : int, optional
        Channel to read when the data has a channel axis with several entries.
    strict_chunks : bool
        Refuse a Zarr or N5 array whose store lacks chunks. By default a
        :class:`MissingChunksWarning` gives their number and the first one's
        index: a missing chunk reads as the fill value.

    Returns
    -------
    Volume
        Axes ``zyx``, voxel size in nm, ``chunks`` for chunked formats.

    Raises
    ------
    OrgasegError
        Missing path, unknown format, bad key, wrong dimensionality, a file
        that holds less than its metadata declares (truncated TIFF, a gap in
        a numbered slice sequence), voxel-size metadata that is not a positive
        number, missing chunks with ``strict_chunks``, ...

    Examples
    --------
    >>> import numpy as np
    >>> import tifffile
    >>> import orgaseg
    >>> tifffile.imwrite("stack.tif", np.zeros((4, 32, 32), np.uint8), imagej=True, resolution=(200, 200),
    ...                  metadata={"spacing": 0.03, "unit": "um", "axes": "ZYX"})  # pixels of 1/200 um
    >>> orgaseg.open_volume("stack.tif")
    <Volume 'stack.tif': 4 x 32 x 32 uint8, voxels 30 x 5 x 5 nm (z y x)>
    """
    path = existing_path(path)
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or level < 0:
        raise OrgasegError(f"level must be a whole number, 0 or more, got {level!r}")
    stored = _read_stored(path, key, level)
    if stored.missing_chunks is not None and stored.missing_chunks.count:
        _report_missing_chunks(stored, path, strict_chunks)
    return _to_volume(stored, path, voxel_size=voxel_size, axes=axes, channel=channel)


def pyramid_levels(path: str | Path, volume: Volume) -> list[Volume]:
    """Every level of the OME-Zarr pyramid ``volume`` (opened from ``path``, at any level) belongs to, full
    resolution first; ``[volume]`` for a volume of one resolution. What the levels' metadata warns about was
    said when ``volume`` was opened."""
    if volume.attrs.get("format") != "ome-zarr":
        return [volume]
    group = volume.key.rsplit("/", 1)[0] if volume.key and "/" in volume.key else None  # labels/NAME of labels/NAME/0
    levels: list[Volume] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while True:
            try:
                levels.append(open_volume(path, key=group, level=len(levels)))
            except OrgasegError:  # no further level
                break
    return levels or [volume]


def open_on_grid(path: str | Path, what: str, grid: str, shape: tuple[int, int, int], *, key: str | None = None,
                 key_option: str = "key", voxel_size=None) -> Volume:
    """Open a volume that lies on another's grid by definition (a raw volume or mask beside instances, scribbles
    beside a segmentation).

    Its axes are z, y, x whatever a TIFF's metadata calls them (an ImageJ TIFF of a 3D array says channels), or
    those an MRC header's axis codes name, and its voxel size plays no part (``voxel_size``, else its own,
    without warnings); the caller checks the shape.
    Data of two axes or of more than three is read by its own metadata (an image as one slice; axes of one
    entry dropped); one of several channels or time points is refused naming them (the command line adds how
    ``orgaseg crop`` picks one).

    Parameters
    ----------
    path : str or Path
        The volume.
    what, grid : str
        What it is and whose grid it lies on, for messages: ``"the mask volume"``, ``"the instances'"``.
    shape : tuple of 3 int
        The grid's shape, named in the message when the volume cannot be read as three axes.
    key : str, optional
        Dataset inside its container.
    key_option : str
        The argument that gives ``key`` (e.g. ``raw_key``), named when a container needs one.
    voxel_size : sequence of 3 float, optional
        The grid's voxel size.
    """
    # an MRC header's axis codes say which stored axis is which (a permuted file is read the right way round);
    # other metadata may call a 3D array's axes something else
    stored = None if Path(path).suffix.lower() in MRC_SUFFIXES else "zyx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return open_volume(path, key=key, voxel_size=voxel_size, axes=stored)
        except OrgasegError as err:
            if arg("key") in err.args[0]:  # a container that needs a key: this input's own option
                raise with_key_option(err, key_option) from None
            if "do not fit data of shape" not in err.args[0]:
                raise OrgasegError(f"{what} must be a 3D volume of {grid} shape {shape} (z, y, x), and this one "
                                   f"cannot be read as such: {err.args[0]}") from None
        try:  # not three axes as stored: its metadata says which are z, y, x and what the others are
            return open_volume(path, key=key, voxel_size=voxel_size)
        except OrgasegError as err:
            raise OrgasegError(f"{what} must be a 3D volume of {grid} shape {shape} (z, y, x), and this one cannot "
                               f"be read as such: {err.args[0]}") from None


def existing_path(path: str | Path) -> Path:
    """``path`` with ``~`` expanded; an :class:`OrgasegError` naming it if nothing is there."""
    if not isinstance(path, (str, os.PathLike)):  # pathlib's TypeError says nothing of what to do
        held = (" (data in memory: orgaseg.io.as_volume(array, voxel_size=(z, y, x)) makes it a Volume, and "
                "segment, evaluate and train take it as it is)" if hasattr(path, "shape") else "")
        raise OrgasegError(f"a path to a file or folder is needed, got {type(path).__name__}{held}")
    path = Path(path).expanduser()
    if not path.exists():
        raise OrgasegError(f"{path}: no such file or directory")
    return path


def _report_missing_chunks(stored: StoredArray, path: Path, strict: bool) -> None:
    missing = stored.missing_chunks
    where = f"{path}/{stored.key}" if stored.key else str(path)
    along = f" along {stored.axes}" if stored.axes else ""
    found = (
        f"{where}: {missing.count:,} of {missing.total:,} chunks are missing from the store "
        f"(the first at chunk index {missing.first}{along}) and read as the fill value {missing.fill_value!r}"
    )
    if strict:
        raise OrgasegError(f"{found}; {arg('strict_chunks')} refuses such a volume")
    warnings.warn(
        f"{found}: right if the writer skipped chunks holding only that value, otherwise lost data that will "
        "be segmented as real; pass " + arg("strict_chunks") + " to refuse it",
        MissingChunksWarning,
        stacklevel=3,
    )


def _read_stored(path: Path, key: str | None, level: int) -> StoredArray:
    suffix = path.suffix.lower()
    if path.is_dir():
        if containers.is_n5(path):
            return containers.read_n5(path, key, level)
        if containers.is_zarr(path):
            return containers.read_zarr(path, key, level)
        files = image_files(path)
        if files:
            _refuse_level(level, path)
            stack = SliceStack(files)
            colour = stack.colour_mode  # colour slices: their channels, one picked with channel
            return _refuse_key(StoredArray(stack, "slices", axes="zyxc" if colour else "zyx",
                                           channels=COLOUR_MODES.get(colour)), key, path)
        raise OrgasegError(
            f"{path}: unknown format (a folder with no 2D images and no Zarr/N5 metadata); "
            f"supported: {_SUPPORTED}"
        )
    if path.exists():
        _refuse_level(level, path)  # every file format below holds one resolution
    if suffix in _TIFF_SUFFIXES:
        return _refuse_key(read_tiff(path), key, path)
    if suffix in IMAGE_SUFFIXES:
        mode = ColourImage.mode_of(path)
        if mode is not None:  # a colour PNG or JPEG: its channels, one picked with channel
            return _refuse_key(StoredArray(ColourImage(path), "image", axes="yxc", channels=COLOUR_MODES[mode]),
                               key, path)
        return _refuse_key(StoredArray(SliceStack([path]), "image", axes="zyx"), key, path)
    if suffix in _HDF5_SUFFIXES:
        return read_hdf5(path, key)
    if suffix in MRC_SUFFIXES:
        return _refuse_key(read_mrc(path), key, path)
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise OrgasegError(f"{path}: not a readable .npy file ({exc})") from exc
        return _refuse_key(StoredArray(array, "npy"), key, path)
    raise OrgasegError(f"{path}: unknown format {suffix or '(no extension)'!r}; supported: {_SUPPORTED}")


def _refuse_key(stored: StoredArray, key: str | None, path: Path) -> StoredArray:
    if key is not None:
        raise OrgasegError(f"{path}: key {key!r} given, but this format holds a single volume")
    return stored


def _refuse_level(level: int, path: Path) -> None:
    if level:
        raise OrgasegError(f"{path}: level={level} given, but this format holds one resolution "
                           "(levels are those of a multiscale OME-Zarr or N5 pyramid)")


def _to_volume(stored: StoredArray, path: Path, *, voxel_size, axes, channel) -> Volume:
    """Resolve axes and voxel size and wrap ``stored`` as a zyx :class:`Volume`."""
    shape = tuple(int(s) for s in stored.array.shape)
    if axes is not None and stored.format == "image" and len(axes) == 2:
        axes = "z" + axes  # a 2D image is read as one slice: its two axes are the last two
    order = _resolve_axes(shape, axes if axes is not None else stored.axes, path, channel, stored.channels)
    if axes is not None and stored.axes_named_by and _zyx_positions(order) != _zyx_positions(stored.axes):
        # the metadata says which stored axis is which: another order transposes the volume and its voxel size
        # (naming an axis c that is no z, y or x, a time axis, is how one entry of it is read: nothing moves)
        warnings.warn(OrgasegWarning(
            f"{path}: the axis order given, {order}, overrides the one named by {stored.axes_named_by}, "
            f"{stored.axes}, which already reads the file the right way round: leave out {arg('axes')} unless the "
            "metadata is wrong"), stacklevel=4)
    fixed = {"c": channel} if channel is not None else None
    array = stored.array if order == "zyx" else AxesView(stored.array, order, fixed)
    nz = shape[order.index("z")] if "z" in order else 1
    attrs = {"format": stored.format}
    if order != "zyx":  # what open_volume needs to read the same volume again (read_as)
        attrs["axes"] = order
    if channel is not None:
        attrs["channel"] = channel
    if stored.unread_place:
        attrs["unread_place"] = stored.unread_place
    found = dict(zip(order, stored.sizes)) if stored.sizes is not None else {}
    if "z" not in order and stored.plane_z is not None:
        found["z"] = stored.plane_z
    if voxel_size is not None:
        try:
            size = check_voxel_size(voxel_size, planes=nz)
        except OrgasegError as err:  # two numbers (y x) are refused for a stack: say which file has its planes
            raise OrgasegError(f"{path}: {err.args[0]}") from None
        stored_size = tuple(found.get(a) for a in "zyx")
        if None not in stored_size and all(math.isfinite(v) for v in stored_size) \
                and not np.allclose(size, stored_size, rtol=0.01):
            warnings.warn(OrgasegWarning(
                f"{path}: the voxel size given, {format_sizes(size)} nm, overrides the file's own, "
                f"{format_sizes(stored_size)} nm (z, y, x)" + _override_remark(size, stored_size)),
                stacklevel=4)
    else:
        size = _voxel_size_from_metadata(found, nz, path, stored.note)
        if found.get("y") is None or found.get("x") is None:
            attrs["voxel_size_assumed"] = True  # nothing physical may be derived from it (a working pixel size)
    chunks = None
    if stored.chunks is not None:
        by_axis = dict(zip(order, stored.chunks))
        chunks = tuple(int(by_axis.get(a, 1)) for a in "zyx")
    origin = (0.0, 0.0, 0.0)
    if stored.origin is not None:
        by_axis = dict(zip(order, stored.origin))
        origin = tuple(float(by_axis.get(a, 0.0)) for a in "zyx")
        if stored.origin_in_voxels:  # of a volume without a voxel size: in nm at the one given (else 1 nm)
            origin = tuple(o * v for o, v in zip(origin, size))
        attrs["placed"] = True  # its place is known, the corner included
    check_volume_data(shape, stored.array.dtype, str(path))
    return Volume(array, voxel_size=size, path=str(path), key=stored.key, chunks=chunks, attrs=attrs,
                  origin=origin)


def _zyx_positions(axes: str) -> tuple[int, ...]:
    """Where z, y and x lie among the stored ``axes`` (-1 for one that is absent)."""
    return tuple(axes.lower().find(letter) for letter in "zyx")


def _resolve_axes(shape: tuple[int, ...], axes: str | None, path: Path, channel: int | None,
                  channels: str | None = None) -> str:
    """Validate or infer the stored axis order; every letter but z/y/x must be one index.

    ``channels`` says what the reader knows a ``c`` axis to hold (plural, e.g. the volumes of an MRC
    volume stack), for messages; None: channels, or an axis that may really be z.
    """
    ndim = len(shape)
    if axes is None:
        if ndim < 2:
            raise OrgasegError(f"{path}: {ndim}D data (shape {shape}); a volume needs 2 or 3 dimensions")
        if ndim <= 3:
            axes = "zyx"[3 - ndim :]
        else:
            # keep the axes longer than 1 (at least the last two) as z, y, x
            keep = [i for i, s in enumerate(shape) if s > 1]
            keep = keep if len(keep) >= 2 else [ndim - 2, ndim - 1]
            if len(keep) > 3 or ndim > 6:
                extra = len(keep) - 3
                raise OrgasegError(
                    f"{path}: {ndim}D data (shape {shape}) with {extra} {'axis' if extra == 1 else 'axes'} besides "
                    f"z, y and x longer than 1, and nothing says which; pass {arg('axes')} (e.g. 'czyx') and "
                    f"{arg('channel')} to choose a volume"
                )
            names, extra = iter("zyx"[3 - len(keep) :]), iter("tcqr")
            axes = "".join(next(names) if i in keep else next(extra) for i in range(ndim))
    axes = axes.lower()
    if len(axes) != ndim or len(set(axes)) != ndim or not {"y", "x"} <= set(axes):
        raise OrgasegError(
            f"{path}: axes {axes!r} do not fit data of shape {shape}; give one distinct letter "
            "per axis, including y and x (e.g. 'zyx', 'xyz', 'zcyx')"
        )
    if channel is not None and "c" not in axes:
        raise OrgasegError(
            f"{path}: channel {channel} given, but the data has no channel axis (axes {axes!r})"
        )
    for letter, size in zip(axes, shape):
        if letter == "c" and channel is not None:
            if not 0 <= channel < size:
                raise OrgasegError(f"{path}: channel {channel} out of range; the data has {size} "
                                   f"{channels or 'channels'}")
        elif letter == "c" and size > 1:
            # a c axis the format itself names (a volume stack's volumes) is not a z axis misread
            really_z = "" if channels else f", or {arg('axes')} if that axis is really z"
            raise OrgasegError(
                f"{path}: data has {size} {channels or 'channels'} (axes {axes!r}, shape {shape}); pass "
                f"{arg('channel')} to choose one{really_z}"
            )
        elif letter not in "zyxc" and size > 1:
            swapped = axes.replace("c", "\0").replace(letter, "c").replace("\0", letter)
            raise OrgasegError(
                f"{path}: axis {letter!r} has {size} entries (axes {axes!r}, shape {shape}); "
                f"orgaseg reads one 3D volume: pass {arg('axes')} naming the z, y, x axes, or, to read entry N "
                f"of this axis (a time point), {arg('axes')} naming it c and {arg('channel')} (here "
                f"{swapped!r})"
            )
    return axes


def _voxel_size_from_metadata(
    found: dict, nz: int, path: Path, note: str | None
) -> tuple[float, float, float]:
    """Voxel size from the sizes the metadata gave per axis (warns where it guesses)."""
    how = f"pass {arg('voxel_size')} in nm"
    invalid = [axis for axis in "zyx" if axis in found and found[axis] is not None and math.isnan(found[axis])]
    if invalid:
        raise OrgasegError(
            f"{path}: the metadata gives a voxel size for {', '.join(invalid)} that is not a positive number "
            f"(0, negative or NaN); {how}"
        )
    y, x = found.get("y"), found.get("x")
    if y is None or x is None:
        warnings.warn(assumed_voxel_size(str(path), "voxel size unknown, assuming 1 x 1 x 1 nm", nz), stacklevel=4)
        return (1.0, 1.0, 1.0)
    z = found.get("z")
    if z is None:
        z = y  # irrelevant for a single slice; a guess otherwise
        if nz > 1:
            warnings.warn(
                assumed_voxel_size(str(path), f"z spacing unknown, assuming {z:g} nm (the in-plane size)", nz),
                stacklevel=4,
            )
    if note:
        warnings.warn(f"{path}: {note}; {how}", VoxelSizeWarning, stacklevel=4)
    return (float(z), float(y), float(x))
