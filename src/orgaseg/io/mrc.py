"""MRC files (IMOD, SerialEM, EMPIAR) as a :class:`~orgaseg.io.metadata.StoredArray`: :func:`read_mrc`.

What is read and what refused is listed with the other formats in :mod:`orgaseg.io.readers`, which
presents the array as a volume.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io.metadata import StoredArray, to_nanometres

#: The suffixes read as MRC (``.mrcs``: an image stack, as RELION and cryoSPARC name their particle stacks).
MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".st", ".ali", ".map")

#: The MRC data modes read, with the dtype mrcfile gives each.
_MRC_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}

#: The MRC data modes refused, with what they hold.
_MRC_REFUSED_MODES = {
    3: "complex 16-bit integers, a Fourier transform rather than an image",
    4: "complex 32-bit floats, a Fourier transform rather than an image",
    16: "RGB colour",
    101: "4-bit values packed two per byte, which mrcfile does not read",
}

#: What the header's mapc, mapr and maps codes name.
_MRC_AXES = {1: "x", 2: "y", 3: "z"}

#: Bytes of the main header; the extended header (``nsymbt`` bytes) and the data follow.
_MRC_HEADER_BYTES = 1024

#: Tilt angles spanning more than this many degrees across the sections say the file is a tilt series.
TILT_SERIES_DEGREES = 1.0

#: SerialEM's extended header (exttyp ``SERI``): bytes per section (``nint``) and flags of what each holds
#: (``nreal``) at bytes 128 and 130 of the main header; flag 1: the tilt angle x 100 in its first 2 bytes.
_SERI_NINT_OFFSET, _SERI_NREAL_OFFSET, _SERI_TILT = 128, 130, 1

#: IMOD's stamp (bytes 152-155 of the header) and, in the flags that follow it, the bit saying that mode 0
#: is signed: an IMOD file without that bit holds unsigned bytes.
_IMOD_STAMP = 1146047817
_IMOD_SIGNED_BYTES = 1


def read_mrc(path: Path) -> StoredArray:
    """Memory-map an MRC file (what is read and what refused: FORMATS in :mod:`orgaseg.io.readers`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # permissive: a header slightly off (no machine stamp, no 'MAP' as before MRC2000) is read with
            # warnings instead of refused; data that cannot be mapped is left None, and _check_mrc says why
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except Exception as exc:  # mrcfile raises several kinds for a file that is not MRC
            size = path.stat().st_size
            if size < _MRC_HEADER_BYTES:
                raise OrgasegError(f"{path}: not an MRC file ({size:,} bytes, less than the {_MRC_HEADER_BYTES:,} "
                                   "of an MRC header: an empty or truncated file?)") from exc
            raise OrgasegError(f"{path}: not a readable MRC file ({type(exc).__name__}: {exc})") from exc
    try:
        header, data = mrc.header, mrc.data
        tilts = _tilt_angles(mrc)
    finally:
        mrc.close()  # the memory map holds the file on its own
    _check_mrc(path, header, data)
    if tilts is not None and tilts.size > 1 and np.ptp(tilts) > TILT_SERIES_DEGREES:
        warnings.warn(OrgasegWarning(
            f"{path}: a tilt series, by its extended header (tilt angles {tilts.min():g}° to {tilts.max():g}° over "
            f"{tilts.size} sections): its sections are projections of one region at different angles, not serial "
            "sections, yet they are read as sections; reconstruct a tomogram first (e.g. IMOD's etomo) and read "
            "that"), stacklevel=4)
    for warning in caught:  # said only of a file that is read
        warnings.warn(OrgasegWarning(f"{path}: {warning.message} (mrcfile); read as the header describes"),
                      stacklevel=4)
    if int(header.mode) == 0 and _imod_unsigned_bytes(header):
        # the header says how its bytes are meant, as IMOD reads them: 0 to 255 (the same bytes, another view)
        data = data.view(np.uint8)
    mapping = (int(header.mapc), int(header.mapr), int(header.maps))
    axes = "".join(_MRC_AXES[code] for code in reversed(mapping))  # sections, rows, columns: the C order
    channels = None
    if data.ndim == 2:  # one image: mrcfile leaves out its single section
        axes = axes[1:]
        if "z" in axes:
            raise OrgasegError(
                f"{path}: one image whose {'rows' if axes[0] == 'z' else 'columns'} lie along z (mapc, mapr, "
                f"maps = {', '.join(map(str, mapping))}); orgaseg reads one image as an x-y plane")
    elif data.ndim == 4:  # a volume stack: volume, section, row, column
        axes, channels = "c" + axes, "volumes in an MRC volume stack"
    sizes = _mrc_voxel_size(header)
    return StoredArray(data, "mrc", axes=axes, sizes=[sizes.get(a) for a in axes], channels=channels,
                       plane_z=sizes["z"] if "z" not in axes else None, unread_place=_unread_place(header),
                       axes_named_by="the MRC header's axis codes (mapc, mapr, maps)")


def _tilt_angles(mrc) -> np.ndarray | None:
    """The tilt angle of each section in degrees, where the extended header gives them (SerialEM's ``SERI``,
    Thermo Fisher's ``FEI1``/``FEI2``); else None."""
    header = mrc.header
    kind = bytes(header.exttyp)
    try:
        if kind in (b"FEI1", b"FEI2"):
            with warnings.catch_warnings():  # an extended header that does not match its type: no angles
                warnings.simplefilter("ignore")
                indexed = mrc.indexed_extended_header
            return None if indexed is None else np.asarray(indexed["Alpha tilt"], dtype=np.float64)
        if kind == b"SERI":
            nint, nreal = (int(_header_words(header, "i2", offset, 1)[0])
                           for offset in (_SERI_NINT_OFFSET, _SERI_NREAL_OFFSET))
            sections = int(header.nz)
            extended = np.asarray(mrc.extended_header).tobytes()
            if not nreal & _SERI_TILT or nint < 2 or len(extended) < nint * sections:
                return None
            entries = np.frombuffer(extended, dtype=np.uint8, count=nint * sections).reshape(sections, nint)
            return entries[:, :2].copy().view(np.dtype("i2").newbyteorder(header.mode.dtype.byteorder))[:, 0] / 100.0
    except (ValueError, KeyError, TypeError):  # a damaged extended header says nothing of tilts
        return None
    return None


def _unread_place(header: np.recarray) -> str | None:
    """What the header says of where the volume lies (ORIGIN, the start indices), which is not read; None
    where it says nothing (zeros)."""
    origin = [float(header.origin[a]) for a in "xyz"]
    start = [int(header.nxstart), int(header.nystart), int(header.nzstart)]
    said = ([f"ORIGIN {', '.join(f'{v:g}' for v in origin)} Å"] if any(origin) else []) + (
        [f"start {', '.join(map(str, start))} voxels"] if any(start) else [])
    return f"the MRC header's {' and '.join(said)} (x y z)" if said else None


def _check_mrc(path: Path, header: np.recarray, data: np.ndarray | None) -> None:
    """Refuse, naming why, an MRC file whose header does not describe data orgaseg can read."""
    start = _MRC_HEADER_BYTES + int(header.nsymbt)  # the data follow the extended header
    held = max(path.stat().st_size - start, 0)
    if bytes(header.map)[:3] != b"MAP" and (data is None or data.nbytes != held):
        # writers before MRC2000 left the identifier out, but their headers describe their files
        raise OrgasegError(f"{path}: not an MRC file (its header has no 'MAP' identifier, and its sizes and data "
                           "mode do not describe the file)")
    mode = int(header.mode)
    readable = "; orgaseg reads modes " + ", ".join(f"{m} ({name})" for m, name in _MRC_MODES.items())
    if mode in _MRC_REFUSED_MODES:
        raise OrgasegError(f"{path}: MRC data mode {mode}, {_MRC_REFUSED_MODES[mode]}{readable}")
    if mode not in _MRC_MODES:
        raise OrgasegError(f"{path}: unknown MRC data mode {mode} (a damaged header?){readable}")
    nx, ny, nz, mz = (int(header.nx), int(header.ny), int(header.nz), int(header.mz))
    if mrcfile.utils.spacegroup_is_volume_stack(header.ispg) and (mz <= 0 or nz % mz):
        # mrcfile would read nz // mz volumes and leave the rest of the sections out
        raise OrgasegError(f"{path}: the header declares a volume stack (space group {int(header.ispg)}) of "
                           f"{nz} sections in volumes of mz = {mz}, which does not divide them (a damaged header?)")
    if data is None:
        if min(nx, ny, nz) < 0:
            raise OrgasegError(f"{path}: the header declares {nz} x {ny} x {nx} voxels (a damaged header?)")
        dtype = np.dtype(_MRC_MODES[mode])
        needed = nx * ny * nz * dtype.itemsize
        raise OrgasegError(f"{path}: the header declares {nz} x {ny} x {nx} voxels of {dtype} (sections x rows x "
                           f"columns, {needed:,} bytes), but the file holds {held:,} after the header "
                           "(truncated MRC?)")
    mapping = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(mapping) != [1, 2, 3]:
        raise OrgasegError(f"{path}: the header's axis codes (mapc, mapr, maps = {', '.join(map(str, mapping))}) "
                           "are not an order of 1, 2, 3 (x, y, z); a damaged header?")


def _header_words(header: np.recarray, kind: str, offset: int, count: int) -> np.ndarray:
    """``count`` numbers of numpy type ``kind`` (``"i2"``, ``"i4"``) at byte ``offset`` of the main header, in
    its byte order: fields mrcfile does not name (IMOD's stamp and flags, SerialEM's nint and nreal)."""
    dtype = np.dtype(kind).newbyteorder(header.mode.dtype.byteorder)
    return np.frombuffer(np.asarray(header).tobytes(), dtype=dtype, count=count, offset=offset)


def _imod_unsigned_bytes(header: np.recarray) -> bool:
    """Whether the header carries IMOD's stamp without IMOD's flag for signed bytes."""
    stamp, flags = _header_words(header, "i4", 152, 2)
    return int(stamp) == _IMOD_STAMP and not int(flags) & _IMOD_SIGNED_BYTES


def _mrc_voxel_size(header: np.recarray) -> dict[str, float | None]:
    """The voxel size in nm along x, y and z: the cell's length over its sampling, in Å (mrcfile's ``voxel_size``).

    None along an axis where the header sets none: a cell or sampling of 0 (what mrcfile writes when no
    size is given), a cell or a voxel of 1 Å (what other writers leave; no volume EM is sampled that
    finely). NaN for a negative or non-finite size, which :func:`open_volume` refuses.
    """
    sizes: dict[str, float | None] = {}
    for axis in "xyz":
        cell, samples = float(header.cella[axis]), int(getattr(header, f"m{axis}"))
        unset = cell == 0 or samples == 0 or cell == 1 or math.isclose(cell / samples, 1.0, rel_tol=1e-5)
        # the header holds float32: 7 significant digits are all it says (5.9 nm, not 5.9000000254)
        sizes[axis] = None if unset else float(f"{to_nanometres(cell / samples, 'Å'):.7g}")
    return sizes
