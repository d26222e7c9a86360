"""Class maps: which stored reference values are which class.

Reference label files often store grey levels or arbitrary codes instead of
the class ids ``0 .. C-1`` that scoring needs (the vnc labels use 255 for
intracellular space, 0..128 for membranes, ...). A :class:`ClassMap` names
the classes and the values (or inclusive ranges of values) that belong to
each; every value it does not name is not scored. :func:`parse_class_map` is
the one parser, for the command line's ``--class-map`` and the API's
``class_map=``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orgaseg.errors import OrgasegError, in_words
from orgaseg.labels import IGNORE_LABEL, integer_labels

#: How a refusal of grey-level references says to give a dataset's class map, to a Python caller (which has no
#: ``dataset=``) and on the command line.
DATASET_CLASS_MAP = in_words("class_map=orgaseg.datasets.CLASS_MAPS[NAME], NAME 'vnc' or 'cdeep3m-mito'",
                             "--dataset vnc|cdeep3m-mito; orgaseg.datasets.CLASS_MAPS")

_ENTRY = re.compile(r"\s*(-?\d+)\s*(?:\.\.\s*(-?\d+)\s*)?=\s*(\S.*?)\s*")

#: How a class map is written, for messages.
SYNTAX = (
    "VALUE=NAME or LOW..HIGH=NAME items separated by commas (e.g. 255=intracellular,0..128=membrane), "
    'or a JSON file {"intracellular": [255], "membrane": [[0, 128]]}'
)


@dataclass(frozen=True)
class ClassMap:
    """Reference values to class ids ``0 .. C-1``.

    Parameters
    ----------
    classes : tuple of str
        Class names; class id ``i`` is ``classes[i]``.
    ranges : tuple of (int, int, int)
        ``(low, high, class id)``: the stored values ``low..high``
        (inclusive) are that class. Ranges do not overlap.
    background : tuple of str, optional
        The non-organelle classes, when the map knows them (a dataset's map).
    """

    classes: tuple[str, ...]
    ranges: tuple[tuple[int, int, int], ...]
    background: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise OrgasegError("a class map needs at least one class")
        if len(self.classes) >= IGNORE_LABEL:
            raise OrgasegError(f"a class map holds at most {IGNORE_LABEL - 1} classes, got {len(self.classes)}")
        spans = sorted(self.ranges)
        for (_, high, first), (next_low, _, second) in itertools.pairwise(spans):
            if next_low <= high:
                raise OrgasegError(
                    f"class map: value {next_low} is named twice "
                    f"({self.classes[first]} and {self.classes[second]})"
                )

    @classmethod
    def from_lookup(
        cls, classes: Sequence[str], table: np.ndarray, background: Sequence[str] | None = None
    ) -> ClassMap:
        """The map of a lookup table (``table[value]`` is a class id, :data:`IGNORE_LABEL` if not scored)."""
        table = np.asarray(table)
        edges = np.flatnonzero(np.diff(table)) + 1
        ranges = [
            (int(start), int(stop) - 1, int(table[start]))
            for start, stop in zip(np.concatenate([[0], edges]), np.concatenate([edges, [table.size]]))
            if table[start] != IGNORE_LABEL
        ]
        return cls(tuple(classes), tuple(ranges), None if background is None else tuple(background))

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Class ids of stored ``values`` (uint8), :data:`IGNORE_LABEL` where the map names no class.

        Float values are read as :func:`~orgaseg.labels.integer_labels` reads any label volume: whole numbers
        only. A range would otherwise take a fraction for a class (64.5 in ``0..128``) and a single value
        would leave it, or NaN, unscored without a word.
        """
        values = integer_labels(values, "the reference")
        ids = np.full(values.shape, IGNORE_LABEL, dtype=np.uint8)
        for low, high, class_id in self.ranges:
            ids[(values >= low) & (values <= high)] = class_id
        return ids

    def named(self, values: Sequence[int]) -> list[int]:
        """The ``values`` that the map names."""
        return [v for v in values if any(low <= v <= high for low, high, _ in self.ranges)]

    def __str__(self) -> str:
        return ",".join(
            f"{low}={self.classes[c]}" if low == high else f"{low}..{high}={self.classes[c]}"
            for low, high, c in sorted(self.ranges, key=lambda r: (r[2], r[0]))
        )


class MappedLabels:
    """A lazy array of the class ids of a reference read through a :class:`ClassMap`.

    Slicing reads the same region of ``labels`` and maps it, so a reference
    larger than memory is scored block by block as before.

    Parameters
    ----------
    labels : array-like
        Stored reference values (numpy array, Volume, zarr array), 2D or 3D.
    class_map : ClassMap
    """

    def __init__(self, labels: Any, class_map: ClassMap) -> None:
        self.labels = labels if hasattr(labels, "shape") else np.asarray(labels)
        self.class_map = class_map
        self.shape = tuple(int(n) for n in self.labels.shape)
        self.dtype = np.dtype(np.uint8)

    @property
    def origin(self) -> tuple[float, float, float]:
        """The stored reference's origin (nm), where it says one: mapping values does not move it."""
        return tuple(getattr(self.labels, "origin", (0.0, 0.0, 0.0)))

    @property
    def voxel_size(self) -> tuple[float, float, float] | None:
        """The stored reference's voxel size (nm), where it has one."""
        return getattr(self.labels, "voxel_size", None)

    @property
    def attrs(self) -> dict:
        """What the reader found out about the stored reference (e.g. that its voxel size was assumed)."""
        return dict(getattr(self.labels, "attrs", {}))

    def __getitem__(self, region) -> np.ndarray:
        return self.class_map.lookup(self.labels[region])

    def __array__(self, dtype=None, copy=None):
        ids = self.class_map.lookup(np.asarray(self.labels))
        return ids if dtype is None else ids.astype(dtype)


def reference_classes(
    values: np.ndarray,
    *,
    class_map: ClassMap | str | Path | Mapping[str, Any] | None = None,
    ignore: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Class ids of a block of stored reference values, :data:`IGNORE_LABEL` wherever a voxel is not scored.

    The same rule as :func:`orgaseg.evaluation.evaluate`: through the class
    map if one is given (unnamed values are not scored), else the values
    themselves with ``ignore`` (default :data:`IGNORE_LABEL`) not scored;
    voxels where ``mask`` is 0 are not scored either. Figures use it to leave
    unscored voxels uncoloured.
    """
    values = np.asarray(values)
    if class_map is not None:
        ids = parse_class_map(class_map).lookup(values)
    else:
        ids = np.where(np.isin(values, list(ignore or (IGNORE_LABEL,))), IGNORE_LABEL, values)
    return ids if mask is None else np.where(np.asarray(mask) != 0, ids, IGNORE_LABEL)


def parse_class_map(spec: ClassMap | str | Path | Mapping[str, Any]) -> ClassMap:
    """A :class:`ClassMap` from its text, a JSON file, or a mapping.

    Parameters
    ----------
    spec : ClassMap, str, Path or mapping
        ``"255=intracellular,0..128=membrane,191=mitochondria"``: values or
        inclusive ranges ``LOW..HIGH`` to class names, classes numbered in
        order of first appearance; a path to a ``.json`` file holding a
        mapping; or a mapping ``{"intracellular": [255], "membrane":
        [[0, 128]], ...}`` (a value, a list of values and ``[low, high]``
        pairs), classes numbered in the mapping's order. A mapping of values
        to names, ``{255: "intracellular", 191: "mitochondria"}`` (as
        :func:`~orgaseg.organelles.name_clusters` takes ``names``), is read the same
        way round, classes numbered in order of first appearance.

    Returns
    -------
    ClassMap

    Raises
    ------
    OrgasegError
        Unreadable text or file, an empty map, a value named twice.
    """
    if isinstance(spec, ClassMap):
        return spec
    if isinstance(spec, Mapping):
        return _from_mapping(_by_name(spec), "class map")
    text = str(spec)
    if text.lower().endswith(".json"):
        path = Path(text).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise OrgasegError(f"{path}: cannot read the class map ({exc.strerror})") from exc
        except ValueError as exc:
            raise OrgasegError(f"{path}: not a JSON class map ({exc})") from exc
        if not isinstance(data, Mapping):
            raise OrgasegError(f"{path}: a JSON class map is an object of class names; {SYNTAX}")
        return _from_mapping(data, str(path))
    classes: list[str] = []
    ranges = []
    for item in text.split(","):
        match = _ENTRY.fullmatch(item)
        if match is None:
            raise OrgasegError(f"class map item {item.strip()!r} is not understood; a class map is {SYNTAX}")
        low, high, name = match.groups()
        if name not in classes:
            classes.append(name)
        ranges.append(_range(int(low), int(high if high is not None else low), classes.index(name), item.strip()))
    return ClassMap(tuple(classes), tuple(ranges))


def _by_name(spec: Mapping) -> Mapping:
    """A mapping of values to names (``{255: "intracellular"}``) turned round to names to values; others as given.

    Only integer keys with string values are turned: names are strings, values integers, so neither
    way round is taken for the other.
    """
    integer_keys = all(isinstance(key, (int, np.integer)) and not isinstance(key, bool) for key in spec)
    if not spec or not integer_keys or not all(isinstance(name, str) for name in spec.values()):
        return spec
    by_name: dict[str, list[int]] = {}
    for value, name in spec.items():
        by_name.setdefault(name, []).append(int(value))
    return by_name


def _from_mapping(data: Mapping[str, Any], where: str) -> ClassMap:
    classes, ranges = [], []
    for name, values in data.items():
        classes.append(str(name))
        items = values if isinstance(values, (list, tuple)) else [values]
        for item in items:
            bounds = item if isinstance(item, (list, tuple)) else (item, item)
            if len(bounds) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
                raise OrgasegError(
                    f"{where}: class {name!r} has {item!r}; give integer values or [low, high] pairs; {SYNTAX}"
                )
            ranges.append(_range(bounds[0], bounds[1], len(classes) - 1, f"{name}: {item}"))
    if not ranges:
        raise OrgasegError(f"{where} names no values; {SYNTAX}")
    return ClassMap(tuple(classes), tuple(ranges))


def _range(low: int, high: int, class_id: int, item: str) -> tuple[int, int, int]:
    if low > high:
        raise OrgasegError(f"class map item {item!r}: the range {low}..{high} is empty (low above high)")
    return (low, high, class_id)
