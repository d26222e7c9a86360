"""Annotations that name organelles: clicked points or scribbled labels, as voxel coordinates.

Two inputs, one result. A points CSV holds one click per row, ``z,y,x,name``
or napari's layout (``index,axis-0,axis-1,axis-2`` and the layer's features,
one of them ``name``), in voxels or (``units="nm"``) in nanometres in the
coordinates napari shows (those of the full volume for a crop: the origin
is subtracted). A scribble volume is a sparse label volume of the
segmentation's shape: 0 is unannotated, every other value a class, named by a
table ``value,name``.
Both become :class:`Annotations`: the annotated voxels' coordinates, the
class names and which name each voxel carries.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning, arg
from orgaseg.io.metadata import describe_origin
from orgaseg.io.volume import Volume
from orgaseg.labels import check_label_dtype, integer_labels
from orgaseg.pipeline.blocks import default_block_shape, make_blocks

#: Columns of a points CSV.
POINT_COLUMNS = ("z", "y", "x", "name")
#: The z, y, x columns of a 3D points layer that napari saved as CSV
#: (``index,axis-0,axis-1,axis-2``, then one column per feature of the layer).
NAPARI_POINT_AXES = ("axis-0", "axis-1", "axis-2")
#: Columns of a scribbles' names table.
NAME_COLUMNS = ("value", "name")
#: Coordinate units of a points CSV.
UNITS = ("voxels", "nm")
#: The name of clusters (and voxels) no annotation names.
UNASSIGNED = "unassigned"
#: Names no annotation may give: what they mean to orgaseg, for the message that refuses them.
RESERVED_NAMES = {UNASSIGNED: "the clusters no annotation names", "all": "the total row of measure's summary"}

_NAPARI_AXIS = re.compile(r"axis-\d+")


@dataclass(frozen=True)
class Annotations:
    """Annotated voxels and their names.

    Attributes
    ----------
    coords : ndarray, int64, shape (n, 3)
        Voxel coordinates ``(z, y, x)``.
    labels : ndarray, int64, shape (n,)
        Index into ``names`` of each voxel's name.
    names : tuple of str
        The class names, in the order they were first given.
    source : str
        Where they came from (for messages and the provenance).
    shape : tuple of int or None
        The shape of the volume they were read against (None when unknown):
        a segmentation of another shape is refused.
    """

    coords: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    source: str
    shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        for name in self.names:
            meaning = RESERVED_NAMES.get(name.strip().lower())
            if meaning is not None:
                raise OrgasegError(f"{self.source}: {name!r} is a name orgaseg keeps for {meaning}; call the class "
                                   "something else")

    def __len__(self) -> int:
        return len(self.labels)

    def check_fits(self, shape: tuple[int, ...], what: str) -> None:
        """Refuse annotations made for a volume of another shape than ``what``'s, or lying outside it."""
        shape = tuple(int(n) for n in shape)
        if self.shape is not None and tuple(self.shape) != shape:
            raise OrgasegError(f"{self.source}: the annotations were read for a volume of {_shape(self.shape)} voxels, "
                               f"but {what} has {_shape(shape)}: make them with the segmentation's shape (points_from_arrays(..., shape=))")
        outside = np.flatnonzero(((self.coords < 0) | (self.coords >= np.asarray(shape))).any(axis=1))
        if outside.size:
            raise OrgasegError(f"{self.source}: point {int(outside[0]) + 1} lies outside {what} "
                               f"({_shape(shape)} voxels)")

    def counts(self) -> dict[str, int]:
        """Annotated voxels per name."""
        per_name = np.bincount(self.labels, minlength=len(self.names))
        return {name: int(n) for name, n in zip(self.names, per_name)}

    def describe(self) -> dict:
        """A JSON-able summary for the provenance."""
        return {"source": self.source, "voxels": len(self), "per_name": self.counts()}


def points_from_arrays(
    coords,
    names: Sequence[str],
    *,
    shape: Sequence[int],
    voxel_size: Sequence[float] | None = None,
    units: str = "voxels",
    source: str = "points",
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> Annotations:
    """Annotations from clicked points (e.g. a napari points layer) and their names.

    Parameters
    ----------
    coords : array-like, shape (n, 3)
        ``(z, y, x)`` per point, in ``units``; rounded to the nearest voxel.
    names : sequence of str
        The organelle name of each point.
    shape : sequence of int
        The volume's shape; points outside it are refused.
    voxel_size : sequence of float, optional
        ``(z, y, x)`` in nm; needed for ``units="nm"``.
    units : {"voxels", "nm"}
        Units of ``coords``.
    source : str
        Where the points came from, for messages.
    origin : sequence of float
        ``(z, y, x)`` in nm where the volume's first voxel lies (its
        :attr:`~orgaseg.io.Volume.origin`): points in nm are taken in the same
        coordinates, so nm read off the full volume fit a crop of it.

    Returns
    -------
    Annotations
    """
    if units not in UNITS:
        raise OrgasegError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
    coords = np.asarray(coords, dtype=np.float64)
    names = [str(n).strip() for n in names]
    if coords.size == 0 or not names:
        raise OrgasegError(f"{source}: no annotated points")
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise OrgasegError(f"{source}: points must be (z, y, x) triples, got an array of shape {coords.shape}")
    if len(names) != len(coords):
        raise OrgasegError(f"{source}: {len(coords)} points but {len(names)} names")
    if not np.all(np.isfinite(coords)):
        raise OrgasegError(f"{source}: point {int(np.flatnonzero(~np.isfinite(coords).all(1))[0]) + 1} is not a number")
    blank = [i + 1 for i, n in enumerate(names) if not n]
    if blank:
        raise OrgasegError(f"{source}: point(s) {_few(blank)} have no name")
    given = coords
    shape = np.asarray(shape, dtype=np.int64)
    if units == "nm":
        if voxel_size is None:
            raise OrgasegError(f"{source}: points in nm need the volume's voxel size")
        local = coords - np.asarray(origin, dtype=np.float64)
        coords = local / np.asarray(voxel_size, dtype=np.float64)
        # voxel indices read as nm crowd into the corner of the volume, within the voxel counts along every axis
        coarse = np.asarray(voxel_size, dtype=np.float64) >= 2
        if coarse.any() and np.all((local[:, coarse] >= 0) & (local[:, coarse] < shape[coarse])):
            warnings.warn(OrgasegWarning(
                f"{source}: every point, read in nm, lies in the volume's first "
                f"{' x '.join(map(str, shape.tolist()))} nm, a corner as many nm wide as the volume has voxels: "
                f"are they voxel indices? then leave out {arg('units')}"), stacklevel=2)
    voxels = np.rint(coords).astype(np.int64)
    outside = np.flatnonzero(np.any((voxels < 0) | (voxels >= shape), axis=1))
    if outside.size:
        first = outside[0]
        where = " x ".join(map(str, shape.tolist()))
        raise OrgasegError(f"{source}: {outside.size} point(s) lie outside the volume ({where} voxels), e.g. point "
                           f"{first + 1} at z, y, x = {', '.join(f'{v:g}' for v in given[first])} {units}"
                           + (_nm_hint(origin) if units == "nm" else _voxels_hint(voxels, shape, origin, voxel_size)))
    order = list(dict.fromkeys(names))
    index = {name: i for i, name in enumerate(order)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    _warn_if_a_voxel_has_two_names(voxels, names, source)
    return Annotations(coords=voxels, labels=labels, names=tuple(order), source=source,
                       shape=tuple(int(n) for n in shape))


def _warn_if_a_voxel_has_two_names(voxels: np.ndarray, names: Sequence[str], source: str) -> None:
    """Warn when points that round to one voxel carry different names (both are counted, so they cancel)."""
    _, first, inverse = np.unique(voxels, axis=0, return_index=True, return_inverse=True)
    earlier = first[inverse.ravel()]  # the first point on each point's voxel
    clash = [i for i, j in enumerate(earlier) if names[i] != names[j]]
    if clash:
        i, j = clash[0], earlier[clash[0]]
        warnings.warn(OrgasegWarning(
            f"{source}: {len(clash)} point(s) fall on a voxel an earlier point gives another name, e.g. point "
            f"{i + 1} ({names[i]}) and point {j + 1} ({names[j]}) at z, y, x = "
            f"{', '.join(map(str, voxels[i].tolist()))} voxels: the vote and a refining classifier count both "
            "names there; check the clicks"), stacklevel=3)


def _voxels_hint(voxels: np.ndarray, shape: np.ndarray, origin: Sequence[float],
                 voxel_size: Sequence[float] | None) -> str:
    """What voxel indices outside a volume of ``shape`` may have been meant as, for the message refusing them."""
    def fits(candidate):
        return bool(np.all((candidate >= 0) & (candidate < shape)))

    if voxel_size is not None and any(origin):  # a crop: indices of the volume it was cut from?
        corner = np.rint(np.asarray(origin, np.float64) / np.asarray(voxel_size, np.float64)).astype(np.int64)
        if fits(voxels - corner):
            return (f"; are they voxel indices of the volume this one was cut from? its first voxel is voxel "
                    f"{', '.join(map(str, corner.tolist()))} (z, y, x) of that one: subtract it, or give nm with "
                    f"{arg('units')}")
    if fits(voxels - 1):  # every point one past where it would be: counted from 1
        return "; are they counted from 1 (as Fiji numbers slices)? voxel indices start at 0: subtract 1"
    if fits(voxels[:, ::-1]):
        return "; are the columns x, y, z? the header says which column is which (x,y,z,name)"
    if (voxels < 0).any():  # voxel indices cannot be negative however they were meant; nm can be too large
        return ""
    return f"; are they in nanometres? then say {arg('units')}"


def _nm_hint(origin: Sequence[float]) -> str:
    """Where a volume with an origin starts, for a message about points in nm."""
    if not any(origin):
        return ""
    return f" (the volume's first voxel lies at {describe_origin(origin)})"


def read_points(
    path: str | Path,
    *,
    shape: Sequence[int],
    voxel_size: Sequence[float] | None = None,
    units: str = "voxels",
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> Annotations:
    """Read a points CSV: the header ``z,y,x,name`` or napari's points layout.

    Parameters
    ----------
    path : str or Path
        The CSV file. Either the columns ``z,y,x,name``, in any order, and
        any others, which are ignored (``y,x,name`` for a segmentation of
        one slice, a 2D image), or a
        points layer as napari saves it (File > Save Selected Layers...,
        or ``layer.save("clicks.csv")`` in a running napari):
        ``index,axis-0,axis-1,axis-2``, then one column per feature of the
        layer. There ``axis-0, axis-1, axis-2`` are z, y, x (``axis-0, axis-1`` are y, x
        for the 2D points of a single image), the name is the
        ``name`` feature, and ``index`` and the other features are ignored.
        napari writes the layer's data coordinates: voxels of the
        segmentation when the points layer has its scale and no translation
        (the New clicks layer of orgaseg's naming widget takes the
        segmentation's scale and translation; so does napari's new points
        layer made with the segmentation layer selected).
    shape, voxel_size, units, origin
        As :func:`points_from_arrays`.

    Returns
    -------
    Annotations

    Raises
    ------
    OrgasegError
        A missing column; napari points that are not 3D or have no ``name``
        column; a coordinate that is not a number; and as
        :func:`points_from_arrays`.
    """
    path = Path(path)
    header, body = _read_csv(path, POINT_COLUMNS)
    if any(_NAPARI_AXIS.fullmatch(column) for column in header):
        # a points layer over a single image is 2D: axis-0, axis-1 are its y, x (its one slice is z = 0)
        flat = int(shape[0]) == 1 and {"axis-0", "axis-1"} <= set(header) and "axis-2" not in header
        _check_napari_header(path, header, NAPARI_POINT_AXES[:2] if flat else NAPARI_POINT_AXES)
        axes = NAPARI_POINT_AXES[:2] if flat else NAPARI_POINT_AXES
    elif "z" not in header and {"name", "x", "y"} <= set(header):  # points of a 2D image: its one slice is z = 0
        if "slice" in header and int(shape[0]) != 1:  # Fiji's Measure of points on a stack: X, Y, Slice
            raise OrgasegError(f"{path}: no column z; Fiji's Slice column counts slices from 1: add a column z "
                               "holding Slice - 1 (and check that X and Y are pixels: Fiji measures them in the "
                               "image's calibrated unit)")
        if int(shape[0]) != 1:
            raise OrgasegError(f"{path}: points without a z column fit a segmentation of one slice; this one has "
                               f"{int(shape[0])}: add the column z")
        axes = ("y", "x")
    else:
        _check_header(path, header, POINT_COLUMNS, also=f" (or napari's index,{','.join(NAPARI_POINT_AXES)},name)",
                      others=True)
        axes = ("z", "y", "x")
    coords, names = [], []
    for line, row in _rows(path, header, body):
        try:
            coords.append([0.0] * (3 - len(axes)) + [float(row[c]) for c in axes])
        except ValueError:
            raise OrgasegError(f"{path}, line {line}: {', '.join(axes)} must be numbers, got "
                               f"{', '.join(row[c] for c in axes)}") from None
        names.append(row["name"])
    return points_from_arrays(coords, names, shape=shape, voxel_size=voxel_size, units=units, source=str(path),
                              origin=origin)


def read_names_table(path: str | Path) -> dict[int, str]:
    """Read a scribbles' names table, a CSV with the header ``value,name``; returns ``{value: name}``."""
    path = Path(path)
    table: dict[int, str] = {}
    for line, row in _read_table(path, NAME_COLUMNS):
        try:
            value = int(row["value"])
        except ValueError:
            raise OrgasegError(f"{path}, line {line}: value must be an integer, got {row['value']!r}") from None
        if value <= 0:
            raise OrgasegError(f"{path}, line {line}: value {value}: 0 means 'not annotated'; name values 1 and up")
        if value in table:
            raise OrgasegError(f"{path}, line {line}: value {value} is named twice")
        if not row["name"]:
            raise OrgasegError(f"{path}, line {line}: value {value} has no name")
        table[value] = row["name"]
    return table


def read_scribbles(
    scribbles: Volume,
    *,
    shape: Sequence[int],
    names: dict[int, str] | None = None,
    block_voxels: int = 16 * 1024**2,
) -> Annotations:
    """The annotated voxels of a sparse scribble volume, read block by block.

    Parameters
    ----------
    scribbles : Volume
        Integer labels, 0 where nothing is annotated.
    shape : sequence of int
        The segmentation's shape, which the scribbles must have.
    names : dict of int to str, optional
        Name of each scribble value (:func:`read_names_table`); default: the values themselves.
    block_voxels : int
        Voxels read at a time.

    Returns
    -------
    Annotations
        Names in the table's order (values without a table: ascending).
    """
    source = scribbles.path or "the scribbles"
    if tuple(scribbles.shape) != tuple(shape):
        raise OrgasegError(f"{source}: scribbles of shape {tuple(scribbles.shape)} differ from the segmentation's "
                           f"{tuple(shape)}")
    check_label_dtype(scribbles.dtype, f"{source}: the scribbles")
    coords, values = [], []
    for block in make_blocks(tuple(shape), default_block_shape(tuple(shape), scribbles.chunks, voxels=block_voxels)):
        data = integer_labels(scribbles.read(block.region), f"{source}: the scribbles")
        where = np.nonzero(data)
        if where[0].size:
            values.append(data[where].astype(np.int64))
            coords.append(np.stack(where, axis=1) + np.array([r.start for r in block.region]))
    if not values:
        raise OrgasegError(f"{source}: no annotated voxel (every value is 0)")
    coords, values = np.concatenate(coords), np.concatenate(values)
    found = np.unique(values)
    if (found < 0).any():
        raise OrgasegError(f"{source}: scribble values must be non-negative, found {int(found[0])}")
    if names is None:
        names = {int(v): str(int(v)) for v in found}
    unnamed = [int(v) for v in found if int(v) not in names]
    if unnamed:
        raise OrgasegError(f"{source}: scribble value(s) {_few(unnamed)} are not in the names table "
                           f"(it names {_few(sorted(names))})")
    order = list(dict.fromkeys(names.values()))
    index = {value: order.index(name) for value, name in names.items()}
    labels = np.array([index[int(v)] for v in found], dtype=np.int64)[np.searchsorted(found, values)]
    return Annotations(coords=coords.astype(np.int64), labels=labels, names=tuple(order), source=str(source),
                       shape=tuple(int(n) for n in shape))


def values_at(volume: Volume, coords: np.ndarray, *, block_voxels: int = 16 * 1024**2) -> np.ndarray:
    """The values of ``volume`` at voxel ``coords`` ``(n, 3)``, reading only the blocks that hold them."""
    coords = np.asarray(coords, dtype=np.int64)
    out = np.zeros(len(coords), dtype=volume.dtype)
    blocks = make_blocks(tuple(volume.shape), default_block_shape(tuple(volume.shape), volume.chunks,
                                                                  voxels=block_voxels))
    for block in blocks:
        starts = np.array([r.start for r in block.region])
        stops = np.array([r.stop for r in block.region])
        rows = np.flatnonzero(np.all((coords >= starts) & (coords < stops), axis=1))
        if rows.size == 0:
            continue
        low, high = coords[rows].min(axis=0), coords[rows].max(axis=0) + 1  # the points' box only
        data = np.asarray(volume.read(tuple(slice(int(a), int(b)) for a, b in zip(low, high))))
        local = coords[rows] - low
        out[rows] = data[local[:, 0], local[:, 1], local[:, 2]]
    return out


def _read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with exactly ``columns`` (any order), as ``(line number, {column: text})``."""
    header, body = _read_csv(path, columns)
    _check_header(path, header, columns)
    return _rows(path, header, body)


def _read_csv(path: Path, columns: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header of a CSV (stripped, lower case) and its non-blank rows with their line numbers.

    ``columns``, the header expected, is named if the file is empty.
    """
    if not path.is_file():
        raise OrgasegError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            body = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise OrgasegError(f"{path}: not a readable CSV file ({err})") from None
    if header is None:
        raise OrgasegError(f"{path}: empty file; expected the header {','.join(columns)}")
    header = [cell.strip().lower() for cell in header]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise OrgasegError(f"{path}: column(s) {', '.join(map(repr, twice))} named twice")
    return header, body


def _check_header(path: Path, header: list[str], columns: tuple[str, ...], also: str = "", others: bool = False) -> None:
    """Refuse a header that is not exactly ``columns`` (any order; with ``others``, ``columns`` and any more, which
    are ignored, as a spreadsheet's comments or napari's features are); ``also`` follows the header expected."""
    unknown = [] if others else [c for c in header if c not in columns]
    missing = [c for c in columns if c not in header]
    if unknown or missing:
        said = (f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown
                else f"missing column(s) {', '.join(missing)}")
        raise OrgasegError(f"{path}: {said}; expected the header {','.join(columns)}{also}")


def _check_napari_header(path: Path, header: list[str], expected: tuple[str, ...] = NAPARI_POINT_AXES) -> None:
    """Refuse a napari points CSV whose points are not 3D (or, over a single image, 2D: ``expected``) or that
    has no ``name`` column."""
    axes = [c for c in header if _NAPARI_AXIS.fullmatch(c)]
    if set(axes) != set(expected):
        raise OrgasegError(f"{path}: napari points with the coordinate column(s) {', '.join(axes)}; orgaseg reads "
                           f"3D points, {', '.join(NAPARI_POINT_AXES)} as z, y, x (2D points, axis-0, axis-1 as "
                           "y, x, over a segmentation of a single image): add the points layer over the "
                           "segmentation")
    if "name" not in header:
        raise OrgasegError(f"{path}: napari points without a 'name' column, the organelle each point marks: give "
                           "the points layer a 'name' feature and save it again (orgaseg's naming widget makes a "
                           "clicks layer with it; for another layer, in napari's console: "
                           "layer.features['name'] = ['mitochondria', ...], one name per point)")


def _rows(path: Path, header: list[str], body: list[tuple[int, list[str]]]) -> list[tuple[int, dict[str, str]]]:
    """``body`` as ``(line number, {column: text})``; refuses a row with another number of fields, or no row."""
    rows = []
    for line, row in body:
        if len(row) != len(header):
            raise OrgasegError(f"{path}, line {line}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        rows.append((line, {c: cell.strip() for c, cell in zip(header, row)}))
    if not rows:
        raise OrgasegError(f"{path}: no annotations (only a header)")
    return rows


def _few(values: Sequence, limit: int = 5) -> str:
    """``1, 2, 3`` or ``1, 2, 3, 4, 5 and 7 more``."""
    shown = ", ".join(map(str, values[:limit]))
    return shown if len(values) <= limit else f"{shown} and {len(values) - limit} more"


def _shape(shape) -> str:
    return " x ".join(str(int(n)) for n in shape)
