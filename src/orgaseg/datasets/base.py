"""The dataset data model and the helpers every layout loader shares.

A :class:`Dataset` fixes, for one benchmark, which volumes a method trains on,
which volumes it is scored on and what the reference classes are. Reference
volumes are lazy: they map stored label values (grey levels, binary masks,
instance ids) to class ids block by block, so building a dataset reads no
voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from orgaseg.errors import OrgasegError, arg
from orgaseg.io.volume import Region, Volume
from orgaseg.labels import IGNORE_LABEL

#: Environment variable naming the folder that holds the datasets.
DATA_ROOT_ENV = "ORGASEG_DATA_ROOT"


@dataclass
class EvaluationItem:
    """One scored volume: the EM data and its reference classes.

    Parameters
    ----------
    name : str
        Short name used in reports (``"stack1"``, ``"high_c4"``, ``"crop7"``).
    raw : Volume
        The EM volume to segment.
    reference : Volume
        uint8 class ids ``0 .. C-1`` of the dataset's classes, and
        :data:`~orgaseg.labels.IGNORE_LABEL` where a voxel is not scored.
        Same shape as ``raw``; read lazily.
    """

    name: str
    raw: Volume
    reference: Volume

    @property
    def mask(self) -> Volume:
        """Lazy boolean volume, True where the reference is scored."""
        return self.reference.with_transform(lambda block: block != IGNORE_LABEL, dtype=bool)


@dataclass
class Dataset:
    """A benchmark: training volumes, evaluation items and reference classes.

    Parameters
    ----------
    name : str
        Registry name of the dataset.
    classes : tuple of str
        Reference class names; class id ``i`` is ``classes[i]``.
    background : tuple of str
        The classes that are not organelles (left out of the mean organelle
        Dice).
    voxel_size : tuple of float
        Voxel size in nanometres, ``(z, y, x)``.
    train : list of Volume
        Volumes for self-supervised training.
    evaluation : list of EvaluationItem
        Volumes scored against a reference.
    notes : list of str
        Caveats to print with any result (e.g. an assumed voxel size).
    """

    name: str
    classes: tuple[str, ...]
    background: tuple[str, ...]
    voxel_size: tuple[float, float, float]
    train: list[Volume]
    evaluation: list[EvaluationItem]
    notes: list[str] = field(default_factory=list)

    @property
    def organelles(self) -> tuple[str, ...]:
        """The classes that are not background, in class-id order."""
        return tuple(c for c in self.classes if c not in self.background)


def default_data_root() -> Path:
    """The folder that holds the datasets when none is given.

    ``$ORGASEG_DATA_ROOT`` if set; else ``../shared/data`` relative to the
    current directory if it exists; else ``../shared/data`` next to the
    repository of the installed package (an editable install). When none
    exists the current-directory candidate is returned, so that error
    messages name the conventional place.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    from_cwd = (Path.cwd() / ".." / "shared" / "data").resolve()
    if from_cwd.is_dir():
        return from_cwd
    # base.py -> datasets -> orgaseg -> src -> repository root
    from_package = Path(__file__).resolve().parents[4] / "shared" / "data"
    if from_package.is_dir():
        return from_package
    return from_cwd


def missing(path: Path, what: str) -> OrgasegError:
    """The error for an expected file or folder that is not there."""
    return OrgasegError(
        f"{what} not found: expected {path} (pass " + arg("data_root") + " to point elsewhere)"
    )


def dataset_dir(data_root: Path, name: str, marker: str) -> Path:
    """The folder of dataset ``name``: ``data_root/name``, or ``data_root`` itself.

    ``data_root`` is taken as the dataset folder when it directly contains
    ``marker`` (so ``--data-root`` may name either the folder of all datasets
    or the dataset's own folder).
    """
    data_root = Path(data_root).expanduser()
    if (data_root / marker).exists():
        return data_root
    folder = data_root / name
    if not folder.is_dir():
        if not data_root.is_dir():
            raise missing(data_root, "data root folder")
        raise missing(folder, f"{name} dataset folder")
    return folder


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else the :func:`missing` error."""
    if not path.exists():
        raise missing(path, what)
    return path


def lookup_table(mapping: Mapping[int, int], default: int = IGNORE_LABEL) -> np.ndarray:
    """A 256-entry uint8 table mapping stored 8-bit values to class ids.

    Values not in ``mapping`` map to ``default``.
    """
    table = np.full(256, default, dtype=np.uint8)
    for value, class_id in mapping.items():
        table[value] = class_id
    return table


def map_labels(labels: Volume, table: np.ndarray) -> Volume:
    """Lazy reference volume: 8-bit ``labels`` passed through a lookup ``table``."""
    if labels.dtype != np.uint8:
        raise OrgasegError(f"{labels.path}: expected 8-bit labels, got {labels.dtype}")
    return labels.with_transform(lambda block: table[block], dtype=np.uint8)


class BlockFunctionArray:
    """An array-like whose blocks are computed from the same region of other volumes.

    Used for references built from several masks (BetaSeg, CellMap crops):
    slicing reads the region from every source volume and passes the blocks,
    by name, to ``function``. It has ``shape``, ``dtype`` and slicing, so it
    can back a :class:`~orgaseg.io.volume.Volume`.

    Parameters
    ----------
    sources : mapping of str to Volume
        Named input volumes, all of one shape.
    function : callable
        ``function(**blocks) -> np.ndarray`` of the blocks' shape.
    dtype : numpy dtype
        dtype of the computed blocks.
    """

    def __init__(
        self, sources: Mapping[str, Volume], function: Callable[..., np.ndarray], dtype
    ) -> None:
        shapes = {name: volume.shape for name, volume in sources.items()}
        first_name, first_shape = next(iter(shapes.items()))
        for name, shape in shapes.items():
            if shape != first_shape:
                raise OrgasegError(
                    f"{sources[name].path}: shape {shape} differs from "
                    f"{sources[first_name].path}: {first_shape}"
                )
        self.sources = dict(sources)
        self.function = function
        self.shape = first_shape
        self.dtype = np.dtype(dtype)

    def __getitem__(self, region: Region) -> np.ndarray:
        blocks = {name: volume.read(region) for name, volume in self.sources.items()}
        return self.function(**blocks)


class SubArray:
    """A lazy box of an array-like: ``SubArray(a, box)[r]`` is ``a[box][r]``.

    ``box`` is a tuple of slices with explicit, non-negative start and stop and
    unit step. Requested regions are tuples of slices with positive steps.
    """

    def __init__(self, array, box: tuple[slice, ...]) -> None:
        self.array = array
        self.box = box
        self.shape = tuple(s.stop - s.start for s in box)
        self.dtype = array.dtype

    def __getitem__(self, region) -> np.ndarray:
        if not isinstance(region, tuple):
            region = (region,)
        region = region + (slice(None),) * (len(self.shape) - len(region))
        outer = []
        for inner, b, n in zip(region, self.box, self.shape):
            if not isinstance(inner, slice):
                raise TypeError(f"SubArray takes slices, got {inner!r}")
            start, stop, step = inner.indices(n)
            if step < 0:
                raise TypeError(f"SubArray takes slices with positive steps, got {inner!r}")
            outer.append(slice(b.start + start, b.start + stop, step))
        return np.asarray(self.array[tuple(outer)])
