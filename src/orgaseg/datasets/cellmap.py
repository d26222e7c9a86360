"""OpenOrganelle / CellMap: FIB-SEM with densely annotated label crops.

Layout of a ``<name>.zarr`` (zarr v2/v3, OME-NGFF multiscales) or
``<name>.n5`` (COSEM ``transform`` metadata) container::

    recon-1/em/fibsem-uint8/s0 .. sN           the EM pyramid
    recon-1/labels/groundtruth/crop<N>/<class>/s0 .. sM
                                                one pyramid per class and crop

Every pyramid level carries a scale and a translation in nm (OME-NGFF
``coordinateTransformations`` or COSEM ``transform``); the translation is the
position of the centre of voxel 0, so at equal scales a crop sits at voxel
offset ``(crop translation - EM translation) / scale`` of the EM level. Crops
are often annotated at a finer scale than the EM's s0 (2 nm vs 4 nm): each
crop is paired with the EM level of the same scale, choosing the finest scale
that the EM and every class of every selected crop share. Nothing is
resampled: a crop with no level at that scale is an error.

Class arrays describe their own values in
``cellmap.annotation.annotation_type.encoding`` (semantic classes:
``absent 0, present 1, unknown 255``; instance classes: ``absent 0,
unknown 255`` and ids 1..N). A voxel takes the first class of ``classes``
(the priority order) whose array marks it present; a voxel no class claims is
``other`` (class 0) unless some class marks it ``unknown`` (not annotated),
in which case it is ignored. Without encoding metadata, ``> 0`` is present.

Default classes: the whole-organelle classes among :data:`DEFAULT_CLASSES`
(nucleus, mitochondria, ER, Golgi, vesicles, endosomes, lysosomes, lipid
droplets, peroxisomes) that every selected crop annotates; sub-structure
classes (``mito_mem``, ``er_lum``...) and the aggregate ``all`` are left out
because they overlap the whole-organelle classes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from orgaseg.datasets.base import (
    BlockFunctionArray,
    Dataset,
    EvaluationItem,
    SubArray,
    missing,
    require,
)
from orgaseg.errors import OrgasegError
from orgaseg.io import open_volume
from orgaseg.io.volume import Volume
from orgaseg.labels import IGNORE_LABEL
from orgaseg.options import natural_sort_key

EM_GROUP = "recon-1/em/fibsem-uint8"
CROPS_GROUP = "recon-1/labels/groundtruth"
DEFAULT_CLASSES = ("nuc", "mito", "er", "golgi", "ves", "endo", "lyso", "ld", "perox")
_CONTAINER_SUFFIXES = (".zarr", ".n5")
_UNIT_NM = {"nanometer": 1.0, "nm": 1.0, "micrometer": 1e3, "um": 1e3, "micron": 1e3, "angstrom": 0.1}


@dataclass(frozen=True)
class Level:
    """One resolution level of a pyramid: array key, scale and translation (nm, zyx)."""

    key: str
    scale: tuple[float, float, float]
    translation: tuple[float, float, float]


@dataclass(frozen=True)
class Encoding:
    """How a class array stores presence (CellMap ``annotation_type.encoding``)."""

    absent: int = 0
    present: int | None = None  # None: instance ids, anything not absent/unknown
    unknown: int | None = None

    def is_present(self, block: np.ndarray) -> np.ndarray:
        if self.present is not None:
            return block == self.present
        present = block != self.absent
        if self.unknown is not None:
            present &= block != self.unknown
        return present

    def is_unknown(self, block: np.ndarray) -> np.ndarray | None:
        return None if self.unknown is None else block == self.unknown


def crop_reference(masks: Sequence[np.ndarray], encodings: Sequence[Encoding]) -> np.ndarray:
    """Reference class ids of one block from per-class arrays in priority order.

    Class ``i`` of ``masks`` becomes id ``i + 1``; voxels no class claims are
    0 (other), or ``IGNORE_LABEL`` where any class marks them unknown.
    """
    reference = np.zeros(np.shape(masks[0]), dtype=np.uint8)
    claimed = np.zeros(reference.shape, dtype=bool)
    unknown = np.zeros(reference.shape, dtype=bool)
    for class_id, (block, encoding) in enumerate(zip(masks, encodings), start=1):
        present = encoding.is_present(block) & ~claimed
        reference[present] = class_id
        claimed |= present
        is_unknown = encoding.is_unknown(block)
        if is_unknown is not None:
            unknown |= is_unknown
    reference[unknown & ~claimed] = IGNORE_LABEL
    return reference


class _CropReference:
    """``crop_reference`` over named blocks, as :class:`BlockFunctionArray` passes them."""

    def __init__(self, classes: Sequence[str], encodings: Sequence[Encoding]) -> None:
        self.classes = tuple(classes)
        self.encodings = tuple(encodings)

    def __call__(self, **blocks: np.ndarray) -> np.ndarray:
        return crop_reference([blocks[c] for c in self.classes], self.encodings)


def _attributes(path: Path) -> dict:
    """User attributes of a zarr v2 / v3 or N5 node on disk (empty if none)."""
    for name, in_attributes in ((".zattrs", False), ("zarr.json", True), ("attributes.json", False)):
        file = path / name
        if file.is_file():
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise OrgasegError(f"{file}: unreadable metadata ({error})") from None
            return document.get("attributes", {}) if in_attributes else document
    return {}


def _zyx(values, axes: Sequence[str] | None, what: str) -> tuple[float, float, float]:
    values = [float(v) for v in values]
    if axes is None:
        if len(values) != 3:
            raise OrgasegError(f"{what}: expected 3 values (z, y, x), got {values}")
        return tuple(values)
    names = [a.lower() for a in axes]
    try:
        return tuple(values[names.index(axis)] for axis in "zyx")
    except ValueError:
        raise OrgasegError(f"{what}: axes {list(axes)} lack one of z, y, x") from None


def _unit_factor(unit: str | None, what: str) -> float:
    if unit is None:
        return 1.0
    if unit.lower() not in _UNIT_NM:
        raise OrgasegError(f"{what}: unsupported spatial unit {unit!r}")
    return _UNIT_NM[unit.lower()]


def pyramid_levels(container: Path, group: str) -> list[Level]:
    """The levels of a multiscale group, from OME-NGFF or COSEM N5 metadata.

    Scales and translations are returned in nm, zyx order.
    """
    path = container / group
    what = f"{container} [{group}]"
    attributes = _attributes(require(path, f"multiscale group {group!r} of {container.name}"))
    multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
    if not multiscales:
        raise OrgasegError(f"{what}: no multiscales metadata (scale and translation of each level)")
    multiscale = multiscales[0]
    axes = multiscale.get("axes")
    axis_names = [a["name"] if isinstance(a, dict) else a for a in axes] if axes else None
    unit = next((a.get("unit") for a in axes or () if isinstance(a, dict) and a.get("unit")), None)
    levels = []
    for dataset in multiscale.get("datasets", []):
        if "coordinateTransformations" in dataset:
            transforms = dataset["coordinateTransformations"]
            scale = next((t["scale"] for t in transforms if t["type"] == "scale"), None)
            translation = next((t["translation"] for t in transforms if t["type"] == "translation"), None)
            names, factor = axis_names, _unit_factor(unit, what)
        elif "transform" in dataset:  # COSEM N5
            transform = dataset["transform"]
            scale, translation = transform.get("scale"), transform.get("translate")
            names = transform.get("axes", axis_names)
            units = transform.get("units") or [None]
            factor = _unit_factor(units[0], what)
        else:
            raise OrgasegError(f"{what}: level {dataset.get('path')!r} has no scale metadata")
        if scale is None:
            raise OrgasegError(f"{what}: level {dataset.get('path')!r} has no scale")
        translation = translation if translation is not None else [0.0] * len(scale)
        levels.append(
            Level(
                key=f"{group}/{dataset['path']}",
                scale=tuple(factor * v for v in _zyx(scale, names, what)),
                translation=tuple(factor * v for v in _zyx(translation, names, what)),
            )
        )
    if not levels:
        raise OrgasegError(f"{what}: multiscales metadata lists no levels")
    return levels


def _level_at(levels: Sequence[Level], scale: Sequence[float]) -> Level | None:
    return next((lv for lv in levels if np.allclose(lv.scale, scale, rtol=1e-3)), None)


def _encoding(container: Path, group: str, key: str) -> Encoding:
    """The class array's value encoding, from its group's or array's attributes."""
    for node in (group, key):
        annotation = _attributes(container / node).get("cellmap", {}).get("annotation", {})
        encoding = annotation.get("annotation_type", {}).get("encoding")
        if encoding:
            return Encoding(
                absent=int(encoding.get("absent", 0)),
                present=None if encoding.get("present") is None else int(encoding["present"]),
                unknown=None if encoding.get("unknown") is None else int(encoding["unknown"]),
            )
    return Encoding(absent=0)


def find_container(data_root: Path, container: str | None = None) -> Path:
    """The CellMap container: ``data_root`` itself, or one inside ``data_root[/cellmap]``."""
    data_root = Path(data_root).expanduser()
    if data_root.suffix in _CONTAINER_SUFFIXES:
        return require(data_root, "CellMap container")
    folder = data_root / "cellmap" if (data_root / "cellmap").is_dir() else data_root
    if not folder.is_dir():
        raise missing(folder, "CellMap data folder")
    found = sorted(p for p in folder.iterdir() if p.suffix in _CONTAINER_SUFFIXES and p.is_dir())
    if container is not None:
        chosen = [p for p in found if container in (p.name, p.stem)]
        if not chosen:
            raise missing(folder / container, "CellMap container")
        return chosen[0]
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise OrgasegError(
            f"{folder}: expected one .zarr or .n5 container, found {names} "
            "(name one with container=, or point --data-root at it)"
        )
    return found[0]


def _crop_names(container: Path, crops) -> list[str]:
    folder = require(container / CROPS_GROUP, f"CellMap label crops ({CROPS_GROUP})")
    available = sorted((p.name for p in folder.iterdir() if re.fullmatch(r"crop\d+", p.name)), key=natural_sort_key)
    if crops is None:
        if not available:
            raise OrgasegError(f"{folder}: no crop<N> groups")
        return available
    if isinstance(crops, (str, int)):  # one crop: "crop12" or 12, not its characters
        crops = [crops]
    names = [f"crop{c}" if isinstance(c, int) or str(c).isdigit() else str(c) for c in crops]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise OrgasegError(f"{container}: no label crop(s) {unknown}; available: {available}")
    return names


def _class_names(container: Path, crops: Sequence[str], classes) -> tuple[str, ...]:
    present = [{p.name for p in (container / CROPS_GROUP / crop).iterdir() if p.is_dir()} for crop in crops]
    if classes is None:
        chosen = tuple(c for c in DEFAULT_CLASSES if all(c in names for names in present))
        if not chosen:
            raise OrgasegError(
                f"{container}: the crops {list(crops)} share none of the default classes "
                f"{list(DEFAULT_CLASSES)}; name them with classes="
            )
        return chosen
    if isinstance(classes, str):  # one class, not its letters
        classes = [classes]
    for crop, names in zip(crops, present):
        lacking = [c for c in classes if c not in names]
        if lacking:
            raise OrgasegError(f"{container}: {crop} has no class group(s) {lacking}; it has {sorted(names)}")
    return tuple(classes)


def _choose_em_level(em_levels, crop_levels: dict, level: int | None, container: Path) -> Level:
    """The EM level whose scale every class of every crop also has (finest first)."""
    def shared(em: Level) -> bool:
        return all(_level_at(levels, em.scale) for per_class in crop_levels.values() for levels in per_class.values())

    if level is not None:
        if not 0 <= level < len(em_levels):
            raise OrgasegError(f"{container}: EM level {level} does not exist (levels 0..{len(em_levels) - 1})")
        candidates = [em_levels[level]]
    else:
        candidates = sorted(em_levels, key=lambda lv: np.prod(lv.scale))
    for em in candidates:
        if shared(em):
            return em
    crop_scales = {
        f"{crop}/{cls}": [lv.scale for lv in levels]
        for crop, per_class in crop_levels.items()
        for cls, levels in per_class.items()
    }
    raise OrgasegError(
        f"{container}: no EM level with a scale that every label crop has "
        f"(EM scales {[lv.scale for lv in candidates]}, crop scales {crop_scales}); nothing is resampled"
    )


def _crop_box(em: Level, em_shape, crop: Level, crop_shape, what: str) -> tuple[slice, ...]:
    offset = (np.array(crop.translation) - np.array(em.translation)) / np.array(em.scale)
    rounded = np.round(offset)
    if not np.allclose(offset, rounded, atol=1e-2):
        raise OrgasegError(f"{what}: crop offset {offset.tolist()} voxels is not on the EM grid")
    start = rounded.astype(int)
    stop = start + np.array(crop_shape)
    if (start < 0).any() or (stop > np.array(em_shape)).any():
        raise OrgasegError(
            f"{what}: crop voxels {start.tolist()}..{stop.tolist()} fall outside the EM (shape {list(em_shape)})"
        )
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def _crop_item(path: Path, crop: str, per_class: dict[str, list[Level]], em_level: Level, em: Volume) -> EvaluationItem:
    """One crop: the EM box it covers and its reference from the class arrays at the EM scale."""
    chosen = {cls: _level_at(levels, em_level.scale) for cls, levels in per_class.items()}
    first_class, first = next(iter(chosen.items()))
    for cls, level in chosen.items():
        if not np.allclose(level.translation, first.translation):
            raise OrgasegError(
                f"{path}: {crop}/{cls} is placed at {level.translation} nm, {first_class} at {first.translation}"
            )
    sources = {cls: open_volume(path, key=level.key, voxel_size=em_level.scale) for cls, level in chosen.items()}
    encodings = [_encoding(path, f"{CROPS_GROUP}/{crop}/{cls}", level.key) for cls, level in chosen.items()]
    array = BlockFunctionArray(sources, _CropReference(list(chosen), encodings), np.uint8)
    box = _crop_box(em_level, em.shape, first, array.shape, f"{path} {crop}")
    raw = Volume(SubArray(em, box), voxel_size=em.voxel_size, path=f"{em.path} [{crop} region]", key=em.key)
    reference = Volume(array, voxel_size=em.voxel_size, path=f"{path}/{CROPS_GROUP}/{crop}")
    return EvaluationItem(crop, raw, reference)


def load_cellmap(
    data_root: Path,
    *,
    container: str | None = None,
    classes: Sequence[str] | None = None,
    crops: Sequence[str | int] | None = None,
    level: int | None = None,
) -> Dataset:
    """An OpenOrganelle / CellMap container with its ground-truth crops.

    Parameters
    ----------
    data_root : Path
        A ``.zarr`` / ``.n5`` container, or a folder holding exactly one (in
        ``cellmap/`` or directly).
    container : str, optional
        Name of the container when the folder holds several.
    classes : str or sequence of str, optional
        Crop class groups to score, in priority order; class 0 is ``other``.
        Default: see the module docstring.
    crops : str, int, or sequence of them, optional
        Crops to evaluate (``"crop7"`` or ``7``); default all.
    level : int, optional
        EM pyramid level for training and evaluation; default the finest
        level whose scale every selected crop has.
    """
    path = find_container(data_root, container)
    crop_names = _crop_names(path, crops)
    class_names = _class_names(path, crop_names, classes)
    em_levels = pyramid_levels(path, EM_GROUP)
    crop_levels = {
        crop: {c: pyramid_levels(path, f"{CROPS_GROUP}/{crop}/{c}") for c in class_names} for crop in crop_names
    }
    em_level = _choose_em_level(em_levels, crop_levels, level, path)
    em = open_volume(path, key=em_level.key, voxel_size=em_level.scale)

    evaluation = [_crop_item(path, crop, per_class, em_level, em) for crop, per_class in crop_levels.items()]
    return Dataset(
        name="cellmap",
        classes=("other",) + class_names,
        background=("other",),
        voxel_size=em.voxel_size,
        train=[em],
        evaluation=evaluation,
        notes=[
            f"{path.name}: EM level {em_level.key} at {'x'.join(f'{v:g}' for v in em_level.scale)} nm; "
            f"classes {', '.join(class_names)} in priority order; unannotated voxels ignored"
        ],
    )
