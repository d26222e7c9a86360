"""Physical units and voxel-size conventions found in volume metadata.

Readers of every format return a :class:`StoredArray` and reduce what the file says about pixel spacing to one
number per stored axis in nanometres (or ``None`` where it says nothing), using
the helpers here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orgaseg.errors import OrgasegError, arg

#: Nanometres per unit, keyed by the spellings found in ImageJ, OME-XML,
#: OME-Zarr (NGFF) and N5 metadata (compared in lower case).
_NANOMETRES_PER_UNIT = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,  # micro sign U+00B5
    "μm": 1e3,  # Greek mu U+03BC
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "inch": 2.54e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "å": 0.1,  # U+00C5
    "Å": 0.1,  # angstrom sign U+212B
    "a": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
}


def nanometres_per_unit(unit: Any) -> float | None:
    """Nanometres in one ``unit`` (``"nm"``, ``"micron"``, ``"µm"``, ``"Å"``, ...).

    ``None`` for a unit that is not a length (``"pixel"``, empty, unknown).
    ImageJ's escaped micro sign (a literal ``\\u00B5m``) is understood.
    """
    if not isinstance(unit, str):
        return None
    text = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    return _NANOMETRES_PER_UNIT.get(text) or _NANOMETRES_PER_UNIT.get(text.lower())


def to_nanometres(value: Any, unit: Any) -> float | None:
    """``value`` in ``unit`` as nanometres.

    ``None`` when the unit is not a length or the value is not a number (the
    metadata says nothing usable); NaN when it is a length that is not
    positive and finite (the metadata is wrong, which readers refuse).
    """
    factor = nanometres_per_unit(unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if factor is None:
        return None
    if not math.isfinite(number) or number <= 0:
        return math.nan
    return number * factor


def sizes_in_nanometres(values: Sequence[Any], units: Sequence[Any] | Any) -> list[float | None]:
    """Convert per-axis sizes, with one unit for all axes or one unit per axis."""
    if isinstance(units, str) or units is None:
        units = [units] * len(values)
    return [to_nanometres(v, u) for v, u in zip(values, units)]


#: The smallest voxel size a user can give, in nm (one angstrom).
MIN_VOXEL_NM = 0.1

#: An in-plane pixel this coarse (1 um) or coarser is no electron microscope's: ``info`` says so.
MAX_EM_PIXEL_NM = 1000.0


def micrometre_hint() -> str:
    """What a voxel size 1000 times too large usually is, and how to override it (for messages)."""
    return f"a size in nm stored as um reads 1000 times too large; {arg('voxel_size')} overrides the file's"


def check_voxel_size(voxel_size: Any, planes: int | None = None) -> tuple[float, float, float]:
    """A voxel size given by the user as ``(z, y, x)`` nm floats.

    One number is isotropic. Two, ``(y, x)``, are a single image's pixel size, taken only for a volume of
    one plane (``planes`` 1; None: not known to be one): its thickness z is then its y size, as where a
    single image's metadata gives only its pixel size.
    """
    try:
        values = np.asarray(voxel_size, dtype=float).ravel()
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.size == 1:
        values = np.repeat(values, 3)
    elif values.size == 2 and np.all(np.isfinite(values)) and np.all(values > 0):
        if planes != 1:
            which = f"this volume has {planes} planes" if planes else "a volume may have several planes"
            raise OrgasegError(f"voxel size {' '.join(f'{v:g}' for v in values)} nm: two numbers (y x) are the "
                               f"pixel size of a single image (one plane), but {which}: pass {arg('voxel_size')} "
                               "with z, the spacing of the planes")
        values = values[[0, 0, 1]]
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise OrgasegError(f"voxel_size must be 3 positive numbers (z, y, x) in nm (2, y x, for a single image), "
                           f"got {voxel_size!r}")
    if np.any(values < MIN_VOXEL_NM):  # no electron microscope samples finer; micrometres typed as nm
        hint = ""
        if np.all(values < 1):  # every axis in micrometres; a mix of units says nothing this simple
            hint = f" (if these were micrometres, give {', '.join(f'{v * 1000:g}' for v in values)})"
        raise OrgasegError(f"voxel_size {tuple(values.tolist())} nm goes below {MIN_VOXEL_NM} nm, smaller than an atom: "
                           f"voxel sizes are in nanometres{hint}")
    return (float(values[0]), float(values[1]), float(values[2]))


def check_origin(origin: Any) -> tuple[float, float, float]:
    """A volume's origin ``(z, y, x)`` in nm as three finite floats; ``None`` is zero."""
    if origin is None:
        return (0.0, 0.0, 0.0)
    try:
        values = np.asarray(origin, dtype=float).ravel()
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise OrgasegError(f"origin must be 3 finite numbers (z, y, x) in nm, got {origin!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def placement(volume: Any) -> tuple[float, float, float] | None:
    """Where ``volume`` lies (its origin, nm), or None when nothing says: a file without a place (a TIFF).

    An origin of zero from metadata that gives one (an OME-Zarr crop taken at
    the corner) is a place; the zero a volume without one gets is not.
    """
    origin = tuple(float(v) for v in getattr(volume, "origin", (0.0, 0.0, 0.0)))
    return origin if any(origin) or getattr(volume, "attrs", {}).get("placed") else None


def tenfold(larger: Sequence[float], smaller: Sequence[float]) -> bool:
    """Whether voxel size ``larger`` is ten times ``smaller`` on every axis: given in Å for nm (an MRC
    header's unit, cryo-EM's habit)."""
    return bool(np.allclose(np.asarray(larger, np.float64) / np.asarray(smaller, np.float64), 10.0, rtol=0.01))


def format_sizes(values: Sequence[float]) -> str:
    """``"50 x 4.6 x 4.6"``: a voxel size (or any z, y, x triple) for messages."""
    return " x ".join(f"{float(v):g}" for v in values)


def describe_origin(origin: Sequence[float]) -> str:
    """``"z, y, x = 60, 200, 100 nm"``: where a volume lies, for messages."""
    return "z, y, x = " + ", ".join(f"{v:g}" for v in origin) + " nm"


def warn_if_placed_apart(first: Any, second: Any, names: tuple[str, str], consequence: str,
                         stacklevel: int = 2) -> None:
    """Warn when two volumes that should overlay say they do not.

    That is, when both say where they lie (an origin) and the places differ
    by half a voxel or more, or when both know their voxel sizes and these
    differ by more than 1%. Volumes of the same shape cut from different
    regions, or from stacks of different resolutions, would be compared
    voxel by voxel as if they overlaid; a volume without a place (a TIFF,
    :func:`placement`) or whose voxel size was assumed says nothing and is
    trusted.

    Parameters
    ----------
    first, second : Volume or array
        The two volumes.
    names : tuple of str
        How messages call them, possessive (``("the prediction's", "the reference's")``).
    consequence : str
        What goes wrong when they do not overlay, for the message.
    stacklevel : int
        Of the warnings, counted from the caller of this function (2: the caller's caller).
    """
    import warnings

    from orgaseg.errors import OrgasegWarning

    sizes = [known_voxel_size(v) for v in (first, second)]
    if None not in sizes and not np.allclose(sizes[0], sizes[1], rtol=0.01):
        angstrom = tenfold(*sizes) or tenfold(*sizes[::-1])
        warnings.warn(OrgasegWarning(
            f"{names[0]} voxels are {format_sizes(sizes[0])} nm, {names[1]} {format_sizes(sizes[1])} nm: "
            + ("ten times apart on every axis, as if one were given in Å for nm, " if angstrom else
               "they come from different stacks or resolutions, ") + f"and {consequence}"),
            stacklevel=stacklevel + 1)
    places = [placement(v) for v in (first, second)]
    if None in places:
        return
    places = [np.asarray(p) for p in places]
    step = np.asarray(getattr(first, "voxel_size", (1.0, 1.0, 1.0)), float)
    if np.any(np.abs(places[0] - places[1]) >= step / 2):
        warnings.warn(OrgasegWarning(
            f"{names[0]} first voxel lies at {describe_origin(places[0])}, {names[1]} at "
            f"{describe_origin(places[1])}: they cover different regions, and {consequence}"),
            stacklevel=stacklevel + 1)


def voxel_size_from_attrs(
    attrs: Mapping[str, Any], axes: str, *, fastest_first: bool = False
) -> list[float | None] | None:
    """Voxel size per stored axis (nm) from common container attributes.

    Understood conventions, first match wins:

    - ``transform``: ``{"axes": [...], "scale": [...], "units": [...]}``
      (CellMap / OpenOrganelle; axes are named, so their order is explicit);
    - ``pixelResolution``: ``{"dimensions": [...], "unit": "nm"}`` or a bare
      list (N5 viewer / Saalfeld lab): fastest axis first (x y z) in any
      container, as N5 lists dimensions; N5 data copied to Zarr keeps it so;
    - ``resolution``: list in nm (N5 viewer: fastest axis first; Zarr and
      HDF5: stored order, slowest first, as CREMI's);
    - ``element_size_um``: list in micrometres in stored order (ilastik / Fiji HDF5).

    ``axes`` names the stored axes in C order (slowest first). With
    ``fastest_first`` (N5), ``resolution`` is reversed to match too.
    Returns ``None`` when no convention applies.
    """
    ndim = len(axes)
    transform = attrs.get("transform")
    if isinstance(transform, Mapping) and "scale" in transform:
        by_name = _transform_by_axis(transform, "scale", axes, to_nanometres)
        if by_name is not None and all(a in by_name for a in axes):
            return [by_name[a] for a in axes]
    resolution = attrs.get("pixelResolution")
    unit: Any = "nm"
    if isinstance(resolution, Mapping):
        unit = resolution.get("unit", "nm")
        resolution = resolution.get("dimensions")
    reverse = fastest_first or resolution is not None
    if resolution is None:
        resolution = attrs.get("resolution")
    if resolution is not None and _is_list_of(resolution, ndim):
        values = list(reversed(resolution)) if reverse else list(resolution)
        return sizes_in_nanometres(values, unit)
    element_size = attrs.get("element_size_um")
    if element_size is not None and _is_list_of(element_size, ndim):
        return sizes_in_nanometres(list(element_size), "um")
    return None


def axis_order(names: Sequence[Any], ndim: int) -> str | None:
    """The stored axis order per-axis ``names`` give (``["x", "y", "z"]``: ``"xyz"``), when they are ``ndim``
    distinct ones of z, y, x, c and t (in any case); else None (the format's default order applies)."""
    letters = [str(name).lower() for name in names]
    if len(letters) != ndim or len(set(letters)) != ndim or not set(letters) <= set("zyxct"):
        return None
    return "".join(letters)


def origin_from_attrs(attrs: Mapping[str, Any], axes: str) -> list[float] | None:
    """Where the first voxel's centre lies (nm per stored axis) from a ``transform`` attribute's ``translate``.

    CellMap / OpenOrganelle write ``{"axes": [...], "scale": [...], "translate": [...], "units": [...]}``
    beside each array (a pyramid's coarser levels half a voxel further in, as voxel centres move). Axes
    other than z, y and x lie at 0. Returns None where there is no translation or it cannot be read (a
    unit that is not a length, a value that is not a finite number, a z, y or x axis it does not name):
    the volume then lies at zero, as in any format without a place.
    """
    transform = attrs.get("transform")
    if not isinstance(transform, Mapping) or "translate" not in transform:
        return None
    by_name = _transform_by_axis(transform, "translate", axes, _offset_in_nanometres)
    if by_name is None or None in by_name.values() or not all(a in by_name for a in axes if a in "zyx"):
        return None
    return [by_name.get(a, 0.0) for a in axes]


def _transform_by_axis(transform: Mapping[str, Any], field: str, axes: str, convert) -> dict[str, Any] | None:
    """A CellMap ``transform``'s ``field`` (``scale``, ``translate``) by axis name, each value through
    ``convert(value, unit)``; the names default to ``axes``, the units to nm. None where the field does not
    hold one value per named axis."""
    names = [str(a).lower() for a in transform.get("axes", axes)]
    values = transform[field]
    if not _is_list_of(values, len(names)):
        return None
    units = transform.get("units", "nm")
    units = [units] * len(names) if isinstance(units, str) or units is None else list(units)
    return {name: convert(value, unit) for name, value, unit in zip(names, values, units)}


def _offset_in_nanometres(value: Any, unit: Any) -> float | None:
    """``value`` in ``unit`` as nm, any sign (a place, not a size); None where either is unusable."""
    factor = nanometres_per_unit(unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * factor if factor is not None and math.isfinite(number) else None


def _is_list_of(value: Any, length: int) -> bool:
    # h5py hands attributes back as numpy arrays, JSON as lists
    return not isinstance(value, str) and np.ndim(value) == 1 and len(value) == length


@dataclass
class MissingChunks:
    """The chunks of a Zarr or N5 array that its store does not hold.

    Zarr and N5 define a missing chunk as one filled with ``fill_value``, so
    a reader returns data for it without complaint: that is right where a
    writer skipped chunks holding nothing but the fill value, and silent data
    loss where a copy or a write stopped early.

    Attributes
    ----------
    count : int
        Chunks the store lacks.
    total : int
        Chunks of the array's grid.
    first : tuple of int or None
        Grid index (stored C order) of the first missing chunk.
    fill_value : object
        What a missing chunk reads as.
    """

    count: int
    total: int
    first: tuple[int, ...] | None
    fill_value: Any


@dataclass
class StoredArray:
    """What a format reader found, before axes and voxel size are resolved.

    ``format`` names the format (kept in the volume's ``attrs``); ``axes`` is
    the stored order the metadata names (``None``: unknown); ``sizes`` (nm;
    ``None`` where the metadata says nothing, NaN where it gives a size that
    is not positive), ``chunks`` and ``origin`` (nm; ``None``: the format
    places nothing) hold one entry per stored axis. With ``origin_in_voxels``
    the origin is in voxels (the metadata gives no voxel size): it is
    multiplied by the voxel size the volume is read with.
    """

    array: Any
    format: str
    axes: str | None = None
    sizes: Sequence[float | None] | None = None
    chunks: Sequence[int] | None = None
    key: str | None = None
    note: str | None = None  # caveat about ``sizes``, warned when they are used
    missing_chunks: MissingChunks | None = None  # chunked containers only
    origin: Sequence[float] | None = None  # nm per stored axis: where the first voxel's centre lies
    origin_in_voxels: bool = False  # ``origin`` counts voxels, not nm
    axes_named_by: str | None = None  # what in the metadata names each stored axis (None: nothing; a default)
    plane_z: float | None = None  # nm: the z spacing the metadata gives for data without a z axis (one image)
    unread_place: str | None = None  # what the metadata says of the volume's place that is not read, for ``info``
    channels: str | None = None  # what a ``c`` axis holds, plural, for messages (None: channels)


def known_voxel_size(data) -> tuple[float, float, float] | None:
    """``data``'s voxel size in nm, or None when it has none or its reader assumed one (no metadata)."""
    size = getattr(data, "voxel_size", None)
    if size is None or getattr(data, "attrs", {}).get("voxel_size_assumed"):
        return None
    return tuple(float(v) for v in size)


#: Key of an OME-Zarr multiscale's ``metadata`` that says its scale is in voxels: the volume it was
#: computed from had no voxel size, and it is read back as unknown (nothing is measured in nm from a guess).
VOXEL_SIZE_UNKNOWN = "orgaseg_voxel_size_unknown"
