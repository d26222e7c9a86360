"""Instances: connected components of each organelle class, blockwise, merged across block faces.

:func:`make_instances` turns a class volume (the named labels of ``orgaseg name``, or any
integer label volume) into an instance volume: every connected component of an instance
class gets its own id, ``1 .. N``, and the class of every instance is recorded.

How it scales. Each block is labelled on its own (:func:`skimage.measure.label`). The
labels on the two sides of every border between neighbouring blocks are compared: two
neighbouring voxels in different blocks with the same class join their components
(union-find over the contacts, solved as the connected components of a sparse graph). A
component cut by block borders therefore gets one id. Ids follow each component's first
voxel in raster order (z, then y, then x), the order in which :func:`scipy.ndimage.label`
and :func:`skimage.measure.label` number them, so the result equals the whole-volume
labelling exactly, for any block shape. Only the boundary planes of blocks whose
neighbours have not all arrived, and a few numbers per block component, are kept between
blocks; a last pass labels every block again (cheap, and deterministic) and writes it with
its global ids.

Connectivity is 6 by default (face neighbours, ``scipy.ndimage.label``'s default): two
objects that touch only along an edge or at a corner are two instances. With 18 (faces
and edges) or 26 (faces, edges and corners) the contacts come from every block that shares
a face, an edge (18, 26) or a corner (26) with another; hole filling always treats the
background as 6-connected (a hole is enclosed through faces, as
:func:`scipy.ndimage.binary_fill_holes` does).

The optional clean-up (:mod:`orgaseg.organelles.cleanup`) runs before: a majority filter
(local, with a halo), small-component removal and hole filling (each one more pass of
the same blockwise components).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components
from skimage.measure import label as label_components

from orgaseg.errors import OrgasegError, OrgasegWarning, arg, in_words
from orgaseg.io import make_provenance
from orgaseg.io.metadata import known_voxel_size, placement
from orgaseg.io.partial import partial_state, refuse_existing, refuse_replacing_an_input
from orgaseg.io.provenance import producing_command
from orgaseg.io.volume import Volume, absolute_path
from orgaseg.labels import check_label_dtype, integer_labels
from orgaseg.organelles.cleanup import Cleanup, majority_filter
from orgaseg.organelles.inputs import open_input
from orgaseg.organelles.label_names import read_label_names
from orgaseg.pipeline.blocks import Block, default_block_shape, make_blocks
from orgaseg.pipeline.executors import Executor, SerialExecutor
from orgaseg.pipeline.outputs import open_outputs
from orgaseg.pipeline.resume import RunState, run_key
from orgaseg.pipeline.tasks import VolumeSource
from orgaseg.progress import ProgressCallback, report

__all__ = ["Instances", "make_instances"]

#: Class names that are not organelles: no instances unless asked for by name. "other" is the rest of the
#: cell in two-class references (CDeep3M's), and what a user names the clusters of no interest.
BACKGROUND_NAMES = ("unassigned", "background", "other")

#: Neighbourhoods a user can ask for (voxels sharing a face; a face or an edge; a face, an edge or a corner),
#: as the number of offsets that may be non-zero (scikit-image's ``connectivity``).
CONNECTIVITIES = {6: 1, 18: 2, 26: 3}
#: Of the background, in hole filling.
BACKGROUND_CONNECTIVITY = 1


# --- codes: which class a voxel has, among the instance classes ------------------


@dataclass(frozen=True)
class _Classes:
    """The instance classes: code ``k`` (1..) stands for class value ``values[k - 1]``; 0 for the rest.

    ``values`` None: every non-zero value is an instance class and is its own code.
    """

    values: tuple[int, ...] | None

    def codes(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block).astype(np.int64, copy=False)
        if self.values is None:
            return block
        values = np.asarray(self.values, np.int64)
        index = np.clip(np.searchsorted(values, block), 0, len(values) - 1)
        return np.where(values[index] == block, index + 1, 0)

    def value(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, np.int64)
        if self.values is None:
            return codes
        return np.asarray(self.values, np.int64)[codes - 1]


def _select_classes(names: dict[int, str] | None, classes: Sequence[str | int] | None) -> _Classes:
    """The instance classes from the volume's names and the user's choice."""
    if classes is None:
        if names is None:
            return _Classes(None)
        chosen = sorted(v for v, n in names.items() if n.lower() not in BACKGROUND_NAMES)
        if not chosen:
            raise OrgasegError(f"every class is background ({', '.join(sorted(set(names.values())))}); "
                               f"name the classes to count with {arg('classes')}")
        return _Classes(tuple(chosen))
    if isinstance(classes, (str, int, np.integer)):  # one class: "12" is class 12, not classes 1 and 2
        classes = [classes]
    chosen = set()
    by_name: dict[str, set[int]] = {}  # every value a name stands for: a label image may name several alike
    for v, n in (names or {}).items():
        by_name.setdefault(n, set()).add(v)
    for item in classes:
        text = str(item)
        if text in by_name:
            chosen |= by_name[text]
        elif text.lstrip("-").isdigit() and (names is None or int(text) in names):
            chosen.add(int(text))
        else:
            known = ", ".join(f"{n} ({v})" for v, n in sorted(names.items())) if names else "none (give class values)"
            raise OrgasegError(f"no class {text!r} in the label volume; its classes: {known}")
    if not chosen:
        raise OrgasegError(f"{arg('classes')} names no class")
    return _Classes(tuple(sorted(chosen)))


# --- the block stages: the class codes of a block after the clean-up steps -----


@dataclass
class _Resolved:
    """A finished components pass: a value for every block component (global label)."""

    offsets: dict[int, int]  # block index -> first global label of that block's components
    values: np.ndarray  # per global label

    def lookup(self, block: Block, labels: np.ndarray, background=0) -> np.ndarray:
        """The value of each voxel's component (``background`` where the label is 0)."""
        start = self.offsets[block.index]
        count = int(labels.max()) if labels.size else 0
        table = np.concatenate([[background], self.values[start:start + count]]).astype(self.values.dtype)
        return table[labels]


@dataclass(frozen=True)
class _Stage:
    """How a worker computes the instance-class codes of a block, clean-up steps included.

    Frozen: an executor sends each shared object to its workers once (dask scatters it), so a stage
    changed in place after a pass would reach them stale; each pass takes a new one (:meth:`with_step`).
    """

    source: VolumeSource
    classes: _Classes
    majority: tuple[int, int, int] | None = None
    rank: int = 1  # the objects' connectivity (1, 2, 3: 6-, 18-, 26-neighbours)
    steps: tuple[tuple[str, _Resolved], ...] = ()  # ("remove" | "fill", resolved pass)

    def with_step(self, kind: str, resolved: _Resolved) -> _Stage:
        """This stage with one more clean-up step (``"remove"`` or ``"fill"``)."""
        return dataclasses.replace(self, steps=(*self.steps, (kind, resolved)))

    def codes(self, block: Block) -> np.ndarray:
        volume = self.source.volume
        name = volume.path or "the label volume"
        if self.majority is None:
            codes = self.classes.codes(integer_labels(volume.read(block.region), name, non_negative=True))
        else:
            read = _grow(block.region, self.majority, volume.shape)
            raw = majority_filter(integer_labels(volume.read(read), name, non_negative=True), self.majority)
            inner = tuple(slice(r.start - g.start, r.stop - g.start) for r, g in zip(block.region, read))
            codes = self.classes.codes(raw[inner])
        for kind, resolved in self.steps:
            if kind == "remove":
                keep = resolved.lookup(block, _label(codes, self.rank), background=True)
                codes = np.where(keep, codes, 0)
            else:  # fill: a background component's code when it is a hole, else 0
                background = codes == 0
                fill = resolved.lookup(block, _label(background, BACKGROUND_CONNECTIVITY))
                codes = np.where(background, fill, codes)
        return codes


def _grow(region, radius, shape):
    return tuple(slice(max(0, r.start - h), min(s, r.stop + h)) for r, h, s in zip(region, radius, shape))


def _label(codes: np.ndarray, rank: int) -> np.ndarray:
    """Components of equal non-zero codes within a block (int32, 1..n in raster order of first voxels)."""
    return label_components(codes, background=0, connectivity=rank).astype(np.int32, copy=False)


def _rank(kind: str, stage: _Stage) -> int:
    return stage.rank if kind == "objects" else BACKGROUND_CONNECTIVITY


# --- one components pass ---------------------------------------------------------


def _minus(step: tuple) -> tuple:
    return tuple(-x for x in step)


def _facing(low: list, high: list, step: tuple) -> np.ndarray:
    """A block's voxels next to its neighbour at grid offset ``step``, from its boundary planes.

    Along each axis where ``step`` is +1 its last plane, -1 its first, 0 the whole extent: a plane
    for a face, a line for an edge, one voxel for a corner (axes kept in order).
    """
    axes = [a for a in range(3) if step[a]]
    plane = (high if step[axes[0]] > 0 else low)[axes[0]]
    index = tuple(slice(None) if step[a] == 0 else (-1 if step[a] > 0 else 0) for a in range(3) if a != axes[0])
    return plane[index]


def _shifted(a: np.ndarray, b: np.ndarray, shift: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``a[x]`` and ``b[x + shift]`` for every ``x`` where both exist."""
    a_index = tuple(slice(max(0, -x), n - max(0, x)) for x, n in zip(shift, a.shape))
    b_index = tuple(slice(max(0, x), n - max(0, -x)) for x, n in zip(shift, b.shape))
    return a[a_index], b[b_index]


@dataclass
class _BlockComponents:
    """What one block tells the driver about its components."""

    count: int
    first: np.ndarray  # global raster index of each component's first voxel
    size: np.ndarray
    code: np.ndarray  # the component's code (objects), or 0 (background)
    low: list  # per axis: local labels on the block's first plane
    high: list  # per axis: local labels on the block's last plane
    low_codes: list | None = None  # background pass: the codes on those planes
    high_codes: list | None = None
    border: np.ndarray | None = None  # background pass: touches the volume's border
    neighbour_min: np.ndarray | None = None  # background pass: smallest / largest adjacent code
    neighbour_max: np.ndarray | None = None


def _components_of_block(stage: _Stage, kind: str, shape, block: Block) -> _BlockComponents:
    codes = stage.codes(block)
    labels = _label(codes if kind == "objects" else codes == 0, _rank(kind, stage))
    count = int(labels.max())
    flat = labels.ravel()
    present, first_local = np.unique(flat, return_index=True)
    keep = present > 0
    first_local = first_local[keep]
    local = np.unravel_index(first_local, labels.shape)
    first = np.ravel_multi_index(tuple(c + r.start for c, r in zip(local, block.region)), shape)
    size = np.bincount(flat, minlength=count + 1)[1:]
    code = codes.ravel()[first_local] if kind == "objects" else np.zeros(count, np.int64)
    low = [np.take(labels, 0, axis=a) for a in range(3)]
    high = [np.take(labels, -1, axis=a) for a in range(3)]
    result = _BlockComponents(count, first.astype(np.int64), size.astype(np.int64), code.astype(np.int64), low, high)
    if kind == "background":
        result.low_codes = [np.take(codes, 0, axis=a) for a in range(3)]
        result.high_codes = [np.take(codes, -1, axis=a) for a in range(3)]
        result.border = np.zeros(count + 1, bool)
        for a in range(3):
            if shape[a] == 1:  # a single image's two sides are no edge: a pocket enclosed in its plane is a hole
                continue
            if block.region[a].start == 0:
                result.border[result.low[a]] = True
            if block.region[a].stop == shape[a]:
                result.border[result.high[a]] = True
        result.border = result.border[1:]
        lo = np.full(count + 1, np.iinfo(np.int64).max)
        hi = np.zeros(count + 1, np.int64)
        for a in range(3):
            n = labels.shape[a]
            for here, there in ((slice(0, n - 1), slice(1, n)), (slice(1, n), slice(0, n - 1))):
                index_here = [slice(None)] * 3
                index_there = [slice(None)] * 3
                index_here[a], index_there[a] = here, there
                l_here, c_there = labels[tuple(index_here)], codes[tuple(index_there)]
                touch = (l_here > 0) & (c_there > 0)
                np.minimum.at(lo, l_here[touch], c_there[touch])
                np.maximum.at(hi, l_here[touch], c_there[touch])
        result.neighbour_min, result.neighbour_max = lo[1:], hi[1:]
    return result


class _Merger:
    """Collects block components and the contacts across block borders; solves the union-find.

    A block meets every block whose grid position differs by an offset ``d`` in {-1, 0, 1}^3 with
    at most ``rank`` non-zero entries (faces; edges for rank 2; corners for rank 3). Its boundary
    planes are dropped once all those neighbours have arrived.
    """

    def __init__(self, blocks: list[Block], block_shape, kind: str, rank: int) -> None:
        self.kind, self.rank = kind, rank
        self.grid = {b.index: tuple(r.start // s for r, s in zip(b.region, block_shape)) for b in blocks}
        extent = tuple(max(g[a] for g in self.grid.values()) + 1 for a in range(3))
        self.steps = [step for step in itertools.product((-1, 0, 1), repeat=3) if 0 < np.count_nonzero(step) <= rank]
        self.waiting = {}  # block index -> neighbours not yet arrived
        for index, where in self.grid.items():
            self.waiting[index] = sum(all(0 <= g + x < n for g, x, n in zip(where, d, extent)) for d in self.steps)
        self.by_grid: dict[tuple, tuple[int, _BlockComponents]] = {}  # grid position -> (block index, result)
        self.offsets: dict[int, int] = {}
        self.total = 0
        self.parts: list[_BlockComponents] = []
        self.edges: list[np.ndarray] = []
        self.touch: list[np.ndarray] = []  # background pass: (global label, adjacent code) pairs across faces

    def add(self, block: Block, result: _BlockComponents) -> None:
        self.offsets[block.index] = self.total
        self.total += result.count
        self.parts.append(result)
        where = self.grid[block.index]
        self.by_grid[where] = (block.index, result)
        for step in self.steps:
            there = tuple(g + x for g, x in zip(where, step))
            if there in self.by_grid:
                other = self.by_grid[there]
                self._contact((block.index, result), other, step)
                for index, part in ((block.index, result), other):
                    self.waiting[index] -= 1
                    if self.waiting[index] == 0:  # every neighbour met: its planes are not needed again
                        part.low = part.high = part.low_codes = part.high_codes = None
        if self.waiting[block.index] == 0:
            result.low = result.high = result.low_codes = result.high_codes = None

    def _contact(self, here, there, step) -> None:
        """Join the components of two neighbouring blocks, ``there`` lying at grid offset ``step`` from ``here``."""
        (i_here, a_part), (i_there, b_part) = here, there
        a_labels, b_labels = _facing(a_part.low, a_part.high, step), _facing(b_part.low, b_part.high, _minus(step))
        moved = 3 - a_labels.ndim  # offsets already spent on crossing the border
        pairs = []
        for shift in itertools.product((-1, 0, 1), repeat=a_labels.ndim):  # neighbours along the border
            if moved + np.count_nonzero(shift) > self.rank:
                continue
            a, b = _shifted(a_labels, b_labels, shift)
            both = (a > 0) & (b > 0)
            pairs.append((a[both].astype(np.int64) << 32) | b[both].astype(np.int64))
        pairs = np.unique(np.concatenate(pairs))
        la, lb = (pairs >> 32).astype(np.int64), (pairs & 0xFFFFFFFF).astype(np.int64)
        if self.kind == "objects":  # codes may differ across the border: only equal classes join
            same = a_part.code[la - 1] == b_part.code[lb - 1]
            la, lb = la[same], lb[same]
        self.edges.append(np.stack([self.offsets[i_here] + la - 1, self.offsets[i_there] + lb - 1]))
        if self.kind == "background":  # rank 1: a face; which object codes each side's components touch
            a_codes = _facing(a_part.low_codes, a_part.high_codes, step)
            b_codes = _facing(b_part.low_codes, b_part.high_codes, _minus(step))
            for labels, codes, offset in ((a_labels, b_codes, self.offsets[i_here]),
                                          (b_labels, a_codes, self.offsets[i_there])):
                touch = (labels > 0) & (codes > 0)
                self.touch.append(np.stack([offset + labels[touch].astype(np.int64) - 1, codes[touch]]))

    def solve(self) -> dict:
        """Per global label: its component; per component: first voxel, size, code, and (background) hole facts."""
        n = self.total
        edges = np.concatenate(self.edges, axis=1) if self.edges else np.zeros((2, 0), np.int64)
        graph = scipy.sparse.coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(n, n))
        n_components, component = connected_components(graph, directed=False)
        cat = (lambda name: np.concatenate([getattr(p, name) for p in self.parts])) if self.parts else (
            lambda name: np.zeros(0, np.int64))
        first = np.full(n_components, np.iinfo(np.int64).max)
        np.minimum.at(first, component, cat("first"))
        size = np.bincount(component, weights=cat("size"), minlength=n_components).astype(np.int64)
        code = np.zeros(n_components, np.int64)
        code[component] = cat("code")
        facts = {"component": component, "first": first, "size": size, "code": code}
        if self.kind == "background":
            border = np.zeros(n_components, bool)
            np.logical_or.at(border, component, cat("border"))
            lo = np.full(n_components, np.iinfo(np.int64).max)
            hi = np.zeros(n_components, np.int64)
            np.minimum.at(lo, component, cat("neighbour_min"))
            np.maximum.at(hi, component, cat("neighbour_max"))
            if self.touch:
                touch = np.concatenate(self.touch, axis=1)
                np.minimum.at(lo, component[touch[0]], touch[1])
                np.maximum.at(hi, component[touch[0]], touch[1])
            facts.update(border=border, neighbour_min=lo, neighbour_max=hi)
        return facts


def _components_pass(stage: _Stage, kind: str, blocks, block_shape, executor: Executor, progress,
                     description: str) -> tuple[dict, dict[int, int]]:
    shape = stage.source.volume.shape
    merger = _Merger(blocks, block_shape, kind, _rank(kind, stage))
    done, started, voxels = 0, time.perf_counter(), 0
    items = ((block, (block,)) for block in blocks)
    for block, result in executor.map(_components_of_block, (stage, kind, shape), items):
        merger.add(block, result)
        done, voxels = done + 1, voxels + block.size
        report(progress, description, done, len(blocks),
               voxels_per_s=round(voxels / max(time.perf_counter() - started, 1e-9)))
    return merger.solve(), merger.offsets


# --- the whole road ------------------------------------------------------------------


@dataclass
class Instances:
    """The result of :func:`make_instances`.

    Attributes
    ----------
    path : Path or None
        The instance volume written (None: kept in ``labels``).
    labels : ndarray or None
        The instance ids, when no output path was given.
    classes : list of str
        Class of every instance: ``classes[i - 1]`` for id ``i``.
    counts : dict
        Instances per class name.
    provenance : dict
        The record written beside the output.
    """

    path: Path | None
    labels: np.ndarray | None
    classes: list[str]
    counts: dict[str, int]
    provenance: dict


def _class_name(names: dict[int, str] | None, value) -> str:
    """The name of class ``value``: the volume's name for it, else the number."""
    return names.get(int(value), str(int(value))) if names else str(int(value))


def _instances_per_class(values: np.ndarray, chosen: tuple[int, ...] | None,
                         names: dict[int, str] | None) -> dict[str, int]:
    """Instances per class name, from each instance's class value ``values``.

    In the order of the class values; a ``chosen`` class without voxels counts 0, and the values of a name
    that several carry are summed under it.
    """
    counts: dict[str, int] = {}
    for value in np.unique(np.concatenate([values, chosen or ()]).astype(np.int64)):
        name = _class_name(names, value)
        counts[name] = counts.get(name, 0) + int(np.count_nonzero(values == value))
    return counts


def _warn_of_unnamed_input(volume, classes) -> None:
    """Warn :func:`make_instances`'s caller where ``volume`` holds no classes to number: objects (an
    ``instances`` output), or clusters with no ``classes`` chosen (a ``segment`` output)."""
    command = producing_command(volume.path)
    if command == "instances":
        warnings.warn(OrgasegWarning(
            f"{volume.path} is already the output of orgaseg instances: its ids are objects, so each becomes a "
            f"class here; give the named labels ({in_words('name_clusters', 'orgaseg name')}) or the segmentation "
            "instead"), stacklevel=3)
    elif command == "segment" and classes is None:
        # a segmentation has no names, so every non-zero value is a class: its cluster 0 would go unsaid
        warnings.warn(OrgasegWarning(
            f"{volume.path} is the output of orgaseg segment: its ids are clusters, and cluster 0, a cluster like "
            f"the others, is taken for background and not numbered; name the clusters first with "
            f"{in_words('orgaseg.organelles.name_clusters', repr('orgaseg name'))}, "
            f"or choose the clusters to number with {arg('classes')} (0 included)"), stacklevel=3)


def make_instances(
    named,
    output: str | Path | None = None,
    *,
    classes: Sequence[str | int] | None = None,
    min_size_nm3: float | None = None,
    fill_holes: bool = False,
    majority_nm: float | None = None,
    connectivity: int = 6,
    min_size_nm2: float | None = None,
    voxel_size: Sequence[float] | None = None,
    key: str | None = None,
    block_shape: Sequence[int] | None = None,
    executor: Executor | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Instances:
    """Connected components of each instance class, blockwise, with optional clean-up.

    Parameters
    ----------
    named : str, Path, Volume or ndarray
        Class volume: the output of ``orgaseg name`` or any integer label volume
        :func:`orgaseg.open_volume` reads (class names are read when it carries them).
    output : str or Path, optional
        Instance volume to write (``.ome.zarr`` with a pyramid, or ``.tif``); the class of
        each instance goes to the OME-Zarr ``image-label`` ``properties`` (``name``) and to
        the provenance record (``label_names``, index = id). None keeps the ids in
        memory (``Instances.labels``).
    classes : str, int, or sequence of them, optional
        Classes to count, by name or value (one, or several). Default: every named class except
        ``unassigned`` and ``background``; for a volume without names every non-zero value.
    min_size_nm3 : float, optional
        Components of an instance class smaller than this volume in nm^3 become background.
    min_size_nm2 : float, optional
        For a single image (one z plane): components smaller than this area in nm^2 become
        background (whatever thickness the voxel size gives it). Not with ``min_size_nm3``.
    fill_holes : bool
        Fill background pockets enclosed by one instance class.
    majority_nm : float, optional
        Half-width in nm of the majority filter's box, run first. The three clean-up
        steps: :mod:`orgaseg.organelles.cleanup`.
    connectivity : {6, 18, 26}
        Which voxels of a class are neighbours: sharing a face (6, default), a face or an edge (18),
        or a face, an edge or a corner (26). Also what small-component removal counts as one object.
    voxel_size : sequence of 3 float, optional
        ``(z, y, x)`` in nm; overrides the metadata or a Volume's own (needed for the nm clean-up options when
        the volume has none).
    key : str, optional
        Dataset inside a container.
    block_shape : sequence of 3 int, optional
        Blocks in voxels (default about 4 million voxels, aligned to the storage chunks).
    executor : Executor, optional
        Where blocks run (default: serially here).
    overwrite : bool
        Replace an existing output.
    progress : callable, optional
        ``progress(description, done, total, **figures)`` per block.

    Returns
    -------
    Instances
        ``labels`` (instance ids ``1 .. n``, 0 elsewhere, on the input grid) or ``path``;
        ``classes`` (the class of each id), ``counts`` (instances per class), ``provenance``.

    Raises
    ------
    OrgasegError
        A volume that cannot be read or holds no integer labels, an unknown class, a negative
        or non-finite clean-up size, a size in nm without a voxel size, ``connectivity`` not
        6, 18 or 26, a ``block_shape`` that is not 3 positive sizes, an existing ``output``
        without ``overwrite``.

    Examples
    --------
    Two boxes of class 1 beside a bar of class 2, each class counted on its own:

    >>> import numpy as np
    >>> from orgaseg.organelles import make_instances
    >>> named = np.zeros((8, 32, 32), np.uint8)
    >>> named[2:6, 4:12, 4:12] = named[2:6, 20:28, 20:28] = 1
    >>> named[1:7, 14:18, 2:30] = 2
    >>> instances = make_instances(named, voxel_size=(10, 10, 10))
    >>> instances.counts, int(instances.labels.max())
    ({'1': 2, '2': 1}, 3)
    """
    cleanup = Cleanup(min_size_nm3=min_size_nm3, fill_holes=bool(fill_holes), majority_nm=majority_nm)
    if min_size_nm2 is not None:
        if not math.isfinite(float(min_size_nm2)) or float(min_size_nm2) < 0:
            raise OrgasegError(f"min_size_nm2 must be a non-negative number (nm^2), got {min_size_nm2!r}")
        if min_size_nm3 is not None:
            raise OrgasegError(f"give one smallest size: {arg('min_size_nm2')} (a single image's areas) or "
                               f"{arg('min_size_nm3')} (volumes)")
    if connectivity not in CONNECTIVITIES:
        raise OrgasegError(f"connectivity must be 6, 18 or 26 (neighbours of a voxel), got {connectivity!r}")
    volume, source, names = _open_named(named, voxel_size, key)
    if min_size_nm2 is not None:
        if volume.shape[0] != 1:
            raise OrgasegError(f"{volume.path or 'the volume'}: {arg('min_size_nm2')} is an area, for a single image; "
                               f"this volume has {volume.shape[0]} sections: give {arg('min_size_nm3')}")
        # on one plane a component's volume is its area times the plane's thickness, whatever that is
        cleanup = dataclasses.replace(cleanup, min_size_nm3=float(min_size_nm2) * float(volume.voxel_size[0]))
    if output is not None:
        output = Path(output).expanduser()
        refuse_replacing_an_input(output, volume)
        refuse_existing(output, overwrite=overwrite)
    if (cleanup.min_size_nm3 or cleanup.majority_nm) and volume.attrs.get("voxel_size_assumed"):
        raise OrgasegError(f"{volume.path or 'the volume'}: no voxel size in its metadata, so sizes in nm mean "
                           f"nothing; pass {arg('voxel_size')}")
    selected = _select_classes(names, classes)
    _warn_of_unnamed_input(volume, classes)  # after the refusals: a refused run says only why
    shape = volume.shape
    if block_shape is None:
        block_shape = default_block_shape(shape, volume.chunks)
    elif len(block_shape) != 3 or min(block_shape) < 1:
        raise OrgasegError(f"block shape must be three positive sizes (z, y, x), got {tuple(block_shape)}")
    block_shape = tuple(min(int(b), s) for b, s in zip(block_shape, shape))
    blocks = make_blocks(shape, block_shape)
    executor = executor or SerialExecutor()
    started = time.perf_counter()
    radius = cleanup.majority_radius(volume.voxel_size)
    if radius is not None and all(r >= n for r, n in zip(radius[1:], shape[1:])):
        warnings.warn(OrgasegWarning(
            f"the majority box ({cleanup.majority_nm:g} nm each side) is wider than the volume in y and x "
            f"({' x '.join(f'{n * v:g}' for n, v in zip(shape[1:], volume.voxel_size[1:]))} nm), so each slab of "
            f"voxels takes its most frequent class; {arg('majority_nm')} is the box's half-width in nm"), stacklevel=2)
    stage = _Stage(source, selected, radius, rank=CONNECTIVITIES[connectivity])
    min_voxels = cleanup.min_voxels(volume.voxel_size)
    resume_key = None
    if output is not None:  # what the ids depend on: a rerun with the same key resumes
        resume_key = run_key(volume, command="instances", classes=selected.values, cleanup=cleanup.describe(),
                             connectivity=connectivity, block_shape=block_shape)
    try:
        plan = _stored_plan(output, resume_key, overwrite)
        if plan is None:
            plan = _plan(stage, cleanup, min_voxels, blocks, block_shape, executor, progress)
        stage = dataclasses.replace(stage, steps=tuple(plan.steps))
        class_names = [_class_name(names, v) for v in plan.values]
        counts = _instances_per_class(plan.values, selected.values, names)
        after = ' after the clean-up' if cleanup.min_size_nm3 or cleanup.majority_nm else ''
        if empty := [name for name, count in counts.items() if not count]:
            warnings.warn(OrgasegWarning(
                f"no instance of {', '.join(empty)}: no voxel of {volume.path or 'the labels'} carries "
                f"{'that class' if len(empty) == 1 else 'those classes'}{after}"), stacklevel=2)
        elif not counts:  # every class by default, and none found: every voxel is 0
            warnings.warn(OrgasegWarning(
                f"no instance: every voxel of {volume.path or 'the labels'} is 0 (background){after}"), stacklevel=2)
        record = make_provenance(
            command="instances", input=absolute_path(volume.path or "<array>"), key=volume.key,
            voxel_size=volume.voxel_size,
            classes=[_class_name(names, v) for v in selected.values] if selected.values else
            "every non-zero value",
            connectivity=connectivity, cleanup=cleanup.describe(), min_voxels=min_voxels,
            instances=len(plan.values), counts=counts, block_shape=block_shape, blocks=len(blocks),
            passes=plan.passes + 1, executor=executor.describe(),
        )
        labels, path = _write(stage, plan, blocks, executor, output, volume, block_shape,
                              class_names, record, overwrite, resume_key, progress)
    finally:
        executor.forget()
    record["seconds"] = round(time.perf_counter() - started, 3)
    return Instances(path=path, labels=labels, classes=class_names, counts=counts, provenance=record)


@dataclass
class _Plan:
    """What the components passes found: the clean-up steps' tables and every block component's final id."""

    steps: list[tuple[str, _Resolved]]
    final: _Resolved
    values: np.ndarray  # class value of each instance, by id - 1
    passes: int  # components passes run

    def arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The plan as arrays and a JSON-able record (for the resume state)."""
        arrays = {"values": self.values}
        for i, (_, resolved) in enumerate([*self.steps, ("final", self.final)]):
            blocks = sorted(resolved.offsets)
            arrays[f"blocks_{i}"] = np.array(blocks, np.int64)
            arrays[f"offsets_{i}"] = np.array([resolved.offsets[b] for b in blocks], np.int64)
            arrays[f"table_{i}"] = resolved.values
        return arrays, {"steps": [kind for kind, _ in self.steps], "passes": self.passes}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], info: dict) -> _Plan:
        resolved = [
            _Resolved(dict(zip(arrays[f"blocks_{i}"].tolist(), arrays[f"offsets_{i}"].tolist())), arrays[f"table_{i}"])
            for i in range(len(info["steps"]) + 1)
        ]
        return cls(list(zip(info["steps"], resolved[:-1])), resolved[-1], arrays["values"], info["passes"])


def _plan(stage: _Stage, cleanup: Cleanup, min_voxels: int, blocks, block_shape, executor, progress) -> _Plan:
    """Run the components passes: the clean-up's (small objects, holes), then the instances'."""
    passes = 0
    if cleanup.fill_holes:
        if min_voxels > 1:
            facts, offsets = _components_pass(stage, "objects", blocks, block_shape, executor, progress,
                                              "instances: small objects")
            keep = facts["size"] >= min_voxels
            stage = stage.with_step("remove", _Resolved(offsets, keep[facts["component"]]))
            passes += 1
        facts, offsets = _components_pass(stage, "background", blocks, block_shape, executor, progress,
                                          "instances: holes")
        hole = ~facts["border"] & (facts["neighbour_min"] == facts["neighbour_max"])
        fill = np.where(hole, facts["neighbour_min"], 0)
        stage = stage.with_step("fill", _Resolved(offsets, fill[facts["component"]]))
        passes += 1
    facts, offsets = _components_pass(stage, "objects", blocks, block_shape, executor, progress,
                                      "instances: components")
    passes += 1
    kept = np.flatnonzero(facts["size"] >= min_voxels)
    kept = kept[np.argsort(facts["first"][kept], kind="stable")]
    ids = np.zeros(len(facts["size"]), np.int64)
    ids[kept] = np.arange(1, len(kept) + 1)
    values = stage.classes.value(facts["code"][kept])
    return _Plan(list(stage.steps), _Resolved(offsets, ids[facts["component"]]), values, passes)


def _stored_plan(output: Path | None, resume_key: str | None, overwrite: bool) -> _Plan | None:
    """The plan an interrupted run with the same key stored beside its partial output, or None."""
    if output is None or overwrite:
        return None
    folder = partial_state(output)
    stored = None if folder is None else RunState(folder, resume_key).load_arrays(_PLAN)
    return None if stored is None else _Plan.from_arrays(*stored[:2])


#: Name of the stored plan in the resume state.
_PLAN = "instances-plan"


def _open_named(named, voxel_size, key) -> tuple[Volume, VolumeSource, dict[int, str] | None]:
    volume, source = open_input(named, "label", key=key, voxel_size=voxel_size)
    check_label_dtype(volume.dtype, volume.path or "the label volume")
    return volume, source, read_label_names(volume)


def _instance_block(stage: _Stage, final: _Resolved, dtype, block: Block) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    ids = final.lookup(block, _label(stage.codes(block), stage.rank)).astype(dtype, copy=False)
    return ids, time.perf_counter() - started


def _write(stage, plan: _Plan, blocks, executor, output, grid: Volume, block_shape, class_names, record,
           overwrite, resume_key, progress):
    """The last pass: label every block again and write it with its final ids (resumable with an output).

    The instances lie on ``grid``'s voxels (the named volume's shape, voxel size and origin).
    """
    count = len(plan.values)
    outputs = open_outputs(output, grid.shape, count + 1, voxel_size=known_voxel_size(grid), origin=placement(grid),
                           block_shape=block_shape, overwrite=overwrite, resume_key=resume_key, name="instances",
                           label_names=["background", *class_names])
    state = outputs.state
    try:
        todo = blocks
        if state is not None:
            state.use_digest(state.save_arrays(_PLAN, *plan.arrays()))
            todo = [block for block in blocks if not state.is_done(block)]
            state.skipped = len(blocks) - len(todo)
        items = ((block, (block,)) for block in todo)
        done = len(blocks) - len(todo)
        for block, (ids, seconds) in executor.map(_instance_block, (stage, plan.final, _dtype(count)), items):
            outputs.sink.write(block.region, ids)
            if state is not None:
                outputs.sink.flush()  # the ids are durable before the block is marked done
                state.mark_done(block, seconds)
            done += 1
            report(progress, "instances: writing", done, len(blocks))
    except BaseException:
        outputs.interrupted()
        raise
    if state is not None:
        record["blocks_resumed"] = state.counts()
    if output is None:
        return outputs.sink.array, None
    return None, outputs.finalize(record, {}, progress)


def _dtype(count: int) -> np.dtype:
    from orgaseg.labels import smallest_label_dtype

    return smallest_label_dtype(count + 1)

