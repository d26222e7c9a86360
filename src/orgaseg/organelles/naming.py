"""Naming clusters: from cluster ids to organelle names with a handful of annotations.

:func:`name_clusters` reads the cluster id under every annotated voxel (clicked
points or scribbles, :mod:`orgaseg.organelles.annotations`), gives each
cluster the name most of its annotations carry (a majority vote; clusters no
annotation touches are ``unassigned``, clusters voted two names are reported
as conflicts with their counts) and writes a named label volume block by
block: id 0 is ``unassigned``, ids 1.. the names, listed in the OME-Zarr
``image-label`` ``properties`` and in the provenance. The mapping stored in
the provenance names another volume segmented with the same clusterer
(``mapping=``). With ``refine=True`` the same annotations train a classifier
on the segmentation's features (:mod:`orgaseg.organelles.refine`) that
relabels every voxel instead.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning, arg, in_words
from orgaseg.io import create_label_writer, make_provenance, open_volume
from orgaseg.io.metadata import known_voxel_size, placement, warn_if_placed_apart
from orgaseg.io.partial import digest, refuse_replacing_an_input
from orgaseg.io.provenance import provenance_path, read_provenance, to_jsonable
from orgaseg.io.readers import open_on_grid
from orgaseg.io.volume import Volume, absolute_path, as_volume
from orgaseg.labels import smallest_label_dtype
from orgaseg.options import check_whole_number
from orgaseg.organelles.annotations import (
    UNASSIGNED,
    UNITS,
    Annotations,
    read_names_table,
    read_points,
    read_scribbles,
    values_at,
)
from orgaseg.organelles.refine import (
    CLASSIFIERS,
    DEFAULT_CONTEXT_PX,
    MAX_TRAIN_PER_NAME,
    PRIORS,
    RefinedClassifier,
    balanced_subsample,
    default_prior,
    estimate_refine_cost,
    forest_path,
    label_with_classifier,
    load_classifier,
    sample_unannotated,
    save_classifier,
    train_classifier,
)
from orgaseg.organelles.segmentation_features import (
    SegmentationJob,
    features_at,
    rebuild_segmentation,
)
from orgaseg.pipeline.blocks import aligned_chunks, default_block_shape, make_blocks
from orgaseg.pipeline.executors import SerialExecutor
from orgaseg.pipeline.runner import ArraySink, check_feature_memory, kept_feature_bytes
from orgaseg.pipeline.tasks import reusing_features
from orgaseg.progress import ProgressCallback, report

#: Voxels relabelled at a time when naming without refining.
RELABEL_BLOCK_VOXELS = 16 * 1024**2
#: Preferred storage chunks of the named volume (adjusted to tile the blocks).
LABEL_CHUNKS = (64, 256, 256)


@dataclass
class ClusterNaming:
    """Which name each cluster stands for.

    Attributes
    ----------
    names : tuple of str
        Named-volume ids: ``names[0]`` is ``unassigned``, then the annotated names.
    cluster_ids : ndarray of int, shape (K,)
        The named-volume id of each cluster.
    votes : ndarray of int, shape (K, len(names) - 1)
        Annotated voxels per (cluster, name).
    """

    names: tuple[str, ...]
    cluster_ids: np.ndarray
    votes: np.ndarray

    @property
    def k(self) -> int:
        return len(self.cluster_ids)

    def mapping(self) -> dict[int, str]:
        """``{cluster id: name}``."""
        return {c: self.names[i] for c, i in enumerate(self.cluster_ids)}

    def conflicts(self) -> list[dict]:
        """Clusters voted more than one name: the votes per name and the name chosen."""
        out = []
        for cluster, row in enumerate(self.votes):
            if np.count_nonzero(row) > 1:
                voted = {self.names[i + 1]: int(n) for i, n in enumerate(row) if n}
                out.append({"cluster": cluster, "votes": voted, "chosen": self.names[self.cluster_ids[cluster]],
                            "tie": int(np.sum(row == row.max())) > 1})
        return out

    def names_without_cluster(self) -> list[str]:
        """Annotated names that no cluster carries (their clusters went to other names)."""
        return [n for i, n in enumerate(self.names[1:], 1) if i not in set(self.cluster_ids.tolist())]

    def to_dict(self) -> dict:
        return {"names": list(self.names), "mapping": {str(c): n for c, n in self.mapping().items()},
                "votes": self.votes.tolist(), "conflicts": self.conflicts(),
                "names_without_cluster": self.names_without_cluster()}

    @classmethod
    def from_dict(cls, state: dict) -> ClusterNaming:
        try:
            names = tuple(state["names"])
            ids = [names.index(state["mapping"][str(c)]) for c in range(len(state["mapping"]))]
            votes = np.asarray(state["votes"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise OrgasegError(f"the provenance's naming entry is incomplete ({err})") from None
        return cls(names, np.asarray(ids, dtype=np.int64), votes)

    def summary(self, refined: bool = False, votes: bool = True) -> str:
        """``0 -> membrane, 1 -> unassigned, ...``, then (with ``votes``) conflicts and (unless ``refined``) names
        without a cluster; a name holding a comma, semicolon or arrow is quoted."""
        text = ", ".join(f"{c} -> {_quoted(n)}" for c, n in self.mapping().items())
        for conflict in self.conflicts() if votes else ():
            counts = ", ".join(f"{_quoted(n)} {v}" for n, v in conflict["votes"].items())
            text += f"; conflict in cluster {conflict['cluster']}: {counts} (chose {_quoted(conflict['chosen'])}" + (
                ", a tie: the name given first" if conflict["tie"] else "") + ")"
        missing = self.names_without_cluster()
        if missing and not refined:
            text += f"; no cluster carries {', '.join(map(_quoted, missing))} (try refining, or a larger K)"
        return text


def _what_differs(here: dict, there: dict, shown: int = 3) -> str:
    """The first ``shown`` entries of two feature descriptions that differ, as ``name A here, B there`` (the
    innermost entries that differ, named by their path)."""
    def short(value) -> str:
        text = json.dumps(to_jsonable(value), sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."

    def differing(a, b, path: str):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                yield from differing(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif digest(a) != digest(b):
            yield f"{path} {short(a)} here, {short(b)} there"

    found = list(differing(here, there, ""))
    return "; ".join(found[:shown]) + (f"; {len(found) - shown} more" if len(found) > shown else "")


def _quoted(name: str) -> str:
    """``name``, in double quotes where it holds what separates the summary's items."""
    return f'"{name}"' if any(mark in name for mark in (",", ";", "->")) else name


def vote(clusters: np.ndarray, annotations: Annotations, k: int) -> ClusterNaming:
    """Majority vote: each cluster takes the name most of its annotated voxels carry.

    Parameters
    ----------
    clusters : ndarray of int, shape (n,)
        The cluster id under each annotated voxel.
    annotations : Annotations
        The annotated voxels and their names.
    k : int
        Number of clusters.

    Returns
    -------
    ClusterNaming
        A tie goes to the name given first; a cluster without votes is ``unassigned``.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    if clusters.size and (clusters.min() < 0 or clusters.max() >= k):
        raise OrgasegError(f"the segmentation holds cluster id {int(clusters.max())} but its provenance says K = {k}")
    votes = np.zeros((k, len(annotations.names)), dtype=np.int64)
    np.add.at(votes, (clusters, annotations.labels), 1)
    ids = np.where(votes.sum(axis=1) > 0, np.argmax(votes, axis=1) + 1, 0)
    return ClusterNaming((UNASSIGNED, *annotations.names), ids.astype(np.int64), votes)


@dataclass
class NamedSegmentation:
    """The result of :func:`name_clusters`.

    Attributes
    ----------
    labels : ndarray or None
        The named label volume when no output path was given.
    path : Path or None
        Where it was written.
    naming : ClusterNaming
        The cluster -> name mapping (the vote, or the reused one).
    classifier : RefinedClassifier or None
        The refining classifier, when one labelled the volume.
    provenance : dict
        The provenance record.
    """

    labels: np.ndarray | None
    path: Path | None
    naming: ClusterNaming
    classifier: RefinedClassifier | None
    provenance: dict

    @property
    def names(self) -> tuple[str, ...]:
        return self.naming.names


def name_clusters(
    segmentation,
    *,
    points: str | Path | None = None,
    scribbles=None,
    scribbles_key: str | None = None,
    names: str | Path | dict | None = None,
    annotations: Annotations | None = None,
    mapping: str | Path | None = None,
    output: str | Path | None = None,
    units: str = "voxels",
    refine: bool = False,
    classifier: str | None = None,
    prior: str | None = None,
    context=None,
    z_context: bool = False,
    raw=None,
    raw_key: str | None = None,
    model: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    executor=None,
    feature_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> NamedSegmentation:
    """Name the clusters of a segmentation from a few annotations (or a stored mapping).

    Parameters
    ----------
    segmentation : str, Path or Segmentation
        A label volume written by :func:`orgaseg.segment` (its provenance is
        read beside it), or the :class:`~orgaseg.segmentation.Segmentation` it returned.
    points : str or Path, optional
        CSV of clicks ``z,y,x,name`` or a napari points layer saved as CSV
        (:func:`~orgaseg.organelles.annotations.read_points`).
    scribbles : str, Path, Volume or ndarray, optional
        Sparse label volume of the segmentation's shape, 0 = not annotated.
    scribbles_key : str, optional
        Dataset inside the scribbles' container.
    names : str, Path or dict, optional
        The scribbles' names: a CSV ``value,name`` or ``{value: name}`` (default: the values).
    annotations : Annotations, optional
        Annotations already read (e.g. from a napari points layer).
    mapping : str or Path, optional
        Provenance of an earlier named output: reuse its mapping (and its
        classifier, if it was refined) on this segmentation, which must come
        from the same clusterer (``orgaseg segment --centers``).
    output : str or Path, optional
        Named label volume (``.ome.zarr`` or ``.tif``); None keeps it in memory.
    units : {"voxels", "nm"}
        Units of the points' coordinates (nm: from the volume's corner); only with ``points``.
    refine : bool
        Train a classifier on the annotated voxels' features and cluster
        assignment, and label every voxel with it.
    classifier : {"logistic", "mlp", "forest"}, optional
        The refining classifier: logistic regression (default), a network with one hidden
        layer (:func:`~orgaseg.organelles.refine.train_classifier`), or a random forest.
        This and ``prior``, ``context``, ``z_context``, ``raw`` and ``model`` are
        refused without ``refine``; all but ``raw`` and ``model`` with ``mapping``,
        whose classifier brings its own.
    prior : {"estimated", "clicks"}, optional
        Class frequencies the refining classifier predicts under: estimated on
        unannotated voxels of this volume (a seeded sample of a few blocks), or
        those of the annotations. Default: ``estimated`` for logistic regression
        and the network, ``clicks`` for a forest (its vote fractions are not calibrated
        probabilities, and the estimate built on them can drive a class to zero).
    context : str or sequence of int, optional
        Superpixel sizes (working pixels) whose feature means and spreads the
        refining classifier reads beside each voxel's features
        (:class:`~orgaseg.features.context.SuperpixelContext`; default
        ``(100, 400)``; ``"none"``: the voxel's features alone). A reused
        classifier (``mapping``) brings its own.
    z_context : bool
        The refining classifier also reads the mean of those features on the
        adjacent z slices (:class:`~orgaseg.features.context.SliceNeighbours`;
        organelles run on through several sections). A reused classifier brings its own.
    raw : str, Path, Volume or ndarray, optional
        The volume that was segmented, when refining and its provenance path
        is gone (or it was an in-memory array).
    raw_key : str, optional
        Dataset inside ``raw``'s container.
    model : str or Path, optional
        The segmentation's checkpoint, when its provenance path is gone.
    device : {"auto", "cpu", "cuda"}, optional
        With ``refine``: where a learned encoder runs (default ``auto``).
    seed : int
        Seed of the training subsample, the network and the forest.
    overwrite : bool
        Replace an existing output.
    executor : Executor, optional
        With ``refine``: where the refined blocks run (default: serially here).
    feature_memory : int, optional
        With ``refine``: bytes of the training pass's features kept in memory
        for the labelling pass (default
        :data:`orgaseg.pipeline.runner.FEATURE_CACHE_BYTES`; 0 keeps none).
    progress : callable, optional
        Progress callback.

    Returns
    -------
    NamedSegmentation
        ``labels`` (one id per name, 0 ``unassigned``) or ``path``; ``naming`` (each
        cluster's name and the votes), ``classifier`` (with ``refine``), ``provenance``.

    Raises
    ------
    OrgasegError
        Not exactly one of ``points``, ``scribbles``, ``annotations`` and ``mapping``; ``points``
        that is no path or ``annotations`` no :class:`Annotations` (e.g. a list of clicks); a
        segmentation that is no path or Segmentation or has no provenance; annotations
        that do not fit it; refine options without ``refine``; a bad ``units``, ``seed``
        or ``classifier``; an existing ``output`` without ``overwrite``.

    Examples
    --------
    >>> import numpy as np
    >>> import orgaseg
    >>> from orgaseg import synthetic
    >>> from orgaseg.organelles import name_clusters, points_from_arrays
    >>> cell = synthetic.make_cell((8, 64, 64), voxel_size=(10, 10, 10), seed=0)
    >>> seg = orgaseg.segment(cell.raw, voxel_size=cell.voxel_size, k=4, output="cell_labels.ome.zarr")
    >>> nucleus = np.argwhere(cell.labels == cell.class_names.index("nucleus"))[:3]  # three clicks
    >>> cytoplasm = np.argwhere(cell.labels == cell.class_names.index("cytoplasm"))[:3]
    >>> clicks = points_from_arrays(np.concatenate([nucleus, cytoplasm]), ["nucleus"] * 3 + ["cytoplasm"] * 3,
    ...                             shape=cell.raw.shape)
    >>> named = name_clusters("cell_labels.ome.zarr", annotations=clicks)
    >>> named.naming.names  # in the order the annotations first give them
    ('unassigned', 'nucleus', 'cytoplasm')
    """
    started = time.time()
    seed = check_whole_number(seed, "seed")  # numpy's refusal, deep in the refining classifier, named neither
    if feature_memory is not None:
        feature_memory = check_feature_memory(feature_memory)
    given = [n for n, v in (("points", points), ("scribbles", scribbles), ("annotations", annotations),
                            ("mapping", mapping)) if v is not None]
    if len(given) != 1:
        # the command line's arguments take one of points, scribbles and mapping: this is said to Python callers
        raise OrgasegError("give exactly one of points (a CSV of clicks), scribbles (a label volume), annotations "
                           "(points_from_arrays of clicks in Python) and mapping (an earlier naming's provenance)"
                           + (f"; got {', '.join(given)}" if given else ""))
    # Python only (the command line reads a CSV into annotations itself): say how clicks in Python go in
    if points is not None and not isinstance(points, (str, Path)):
        raise OrgasegError(f"points: got a {type(points).__name__}, but points is the path of a CSV of clicks; "
                           "clicks in Python (their z, y, x and names) go in as "
                           "annotations=points_from_arrays(coords, names, shape=...) (orgaseg.organelles)")
    if annotations is not None and not isinstance(annotations, Annotations):
        raise OrgasegError(f"annotations: got a {type(annotations).__name__}; make them with "
                           "orgaseg.organelles.points_from_arrays(coords, names, shape=...) from clicks, or "
                           "read_points or read_scribbles")
    for input_name, value, key in (("scribbles", scribbles, scribbles_key), ("raw", raw, raw_key)):
        if key is not None and value is None:
            raise OrgasegError(f"{arg(input_name + '_key')} names a dataset inside the container of "
                               f"{arg(input_name)}: give that too")
    if units not in UNITS:
        raise OrgasegError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
    if units != "voxels" and points is None:  # it would be ignored: only a points CSV is read in units
        raise OrgasegError(f"{arg('units')} is the unit of a points CSV's coordinates and takes effect only with "
                           f"points, not with {given[0]}")
    # a refined mapping's classifier computes features as --refine does, and takes the same options for it
    _refuse_unused_refine_options(refine or mapping_holds_classifier(mapping), mapping, classifier=classifier,
                                  prior=prior, context=context, z_context=z_context, raw=raw, model=model,
                                  device=device, executor=executor, feature_memory=feature_memory)
    device = "auto" if device is None else device
    classifier = "logistic" if classifier is None else classifier
    context = DEFAULT_CONTEXT_PX if context is None else context
    volume, record, seg_name = _open_segmentation(segmentation)
    if z_context and volume.shape[0] == 1:
        warnings.warn(OrgasegWarning(
            f"{seg_name} is a single image: it has no adjacent slices, so {arg('z_context')} appends a copy of every "
            "voxel's own features (the classifier gains nothing from it, and the features double)"), stacklevel=2)
    k = _record_field(record, "k", seg_name)
    clusterer_state = _record_field(record, "clusterer", seg_name)
    fitted_classifier: RefinedClassifier | None = None
    segmentation_job = None
    described: dict
    if mapping is not None:
        naming, fitted_classifier, described = _reuse_mapping(mapping, clusterer_state, int(k), refine)
        if fitted_classifier is not None:
            segmentation_job = _features_for_reused_classifier(
                record, fitted_classifier, described["features"], seg_name=seg_name, mapping=mapping, raw=raw,
                raw_key=raw_key, model=model, device=device)
    else:
        if annotations is None:
            annotations = _read_annotations(points, scribbles, scribbles_key, names, volume, units)
        annotations.check_fits(volume.shape, seg_name)
        clusters = values_at(volume, annotations.coords)
        naming = vote(clusters, annotations, int(k))
        described = {"annotations": annotations.describe()}
        if refine:
            prior = _check_refine_choices(classifier, prior, annotations)
            segmentation_job = rebuild_segmentation(record, raw=raw, raw_key=raw_key, model=model, device=device,
                                                    context=context, z_context=z_context)
            described["features"] = segmentation_job.config()
    if raw is not None and segmentation_job is not None:  # a volume of the right shape cut from another place
        given = segmentation_job.job.source.volume
        warn_if_placed_apart(volume, given, ("the segmentation's", f"{given.path or 'the raw volume'}'s"),
                             "the features would be computed from another place than the clusters were")
    block_shape = (segmentation_job.block_shape if segmentation_job is not None
                   else default_block_shape(tuple(volume.shape), volume.chunks, voxels=RELABEL_BLOCK_VOXELS))
    n_labels = len(naming.names)
    # created before the long part, so an existing output is refused at once
    forest = (classifier if refine and mapping is None else getattr(fitted_classifier, "kind", None)) == "forest"
    sink = _named_sink(output, volume, record, naming.names, block_shape=block_shape, forest=forest,
                       scribbles=scribbles, raw=raw, mapping=mapping,
                       raw_read=segmentation_job.job.source.volume if segmentation_job is not None else None,
                       overwrite=overwrite)
    cost = None
    try:
        if segmentation_job is not None:  # a classifier is trained here (the clicks) or reused (a mapping)
            training = fitted_classifier is None
            # the training pass's features are kept for the labelling pass (blocks holding clicks are not featurised twice)
            kept = kept_feature_bytes(executor or SerialExecutor(), training, feature_memory)
            voxels = _training_voxels(segmentation_job, annotations, prior, seed) if training else None
            cost = estimate_refine_cost(segmentation_job, reuse_bytes=kept,
                                        training=np.concatenate(voxels[1:]) if training else None)
            with reusing_features([segmentation_job.job], kept):
                if training:
                    fitted_classifier, described["trained_on"] = _train(
                        segmentation_job, annotations, voxels, clusters, volume, n_labels, kind=classifier,
                        seed=seed, progress=progress)
                label_with_classifier(segmentation_job, fitted_classifier, sink, executor=executor, progress=progress)
        else:
            relabel(volume, naming.cluster_ids, sink, block_shape=block_shape, progress=progress)
        classifier_state = None
        if fitted_classifier is not None:
            classifier_state = (save_classifier(fitted_classifier, output, overwrite=overwrite) if output is not None
                                else fitted_classifier.to_dict())
        provenance = make_provenance(
            segmentation=absolute_path(seg_name) if Path(seg_name).exists() else seg_name,
            segmentation_method=record.get("method"),
            k=int(k),
            clusterer_sha256=digest(clusterer_state),
            names=list(naming.names),
            naming={**naming.to_dict(), **described},
            refined=fitted_classifier is not None,
            classifier=classifier_state,
            # the encoder whose features the classifier read (checked against the segmentation's by SHA-256)
            model=({"path": absolute_path(segmentation_job.stages.checkpoint),
                    "sha256": (record.get("model") or {}).get("sha256")}
                   if segmentation_job is not None and segmentation_job.stages.checkpoint else None),
            mapping_from=absolute_path(mapping),
            cost_estimate=cost,
            wall_time_s=round(time.time() - started, 3),
        )
        path = sink.finalize(provenance, progress) if output is not None else None
    except BaseException:
        if output is not None:
            sink.abort()
        raise
    labels = sink.array if output is None else None
    return NamedSegmentation(labels, path, naming, fitted_classifier, provenance)


def _features_for_reused_classifier(record: dict, classifier: RefinedClassifier, trained_on: dict, *, seg_name: str,
                                    mapping, raw, raw_key: str | None, model, device: str) -> SegmentationJob:
    """The segmentation's features as the classifier of ``mapping`` reads them (its context), refused where
    they are not the features it was ``trained_on`` (another method, options or checkpoint)."""
    segmentation_job = rebuild_segmentation(record, raw=raw, raw_key=raw_key, model=model, device=device,
                                            context=classifier.context, z_context=classifier.z_context)
    if digest(segmentation_job.config()) != digest(trained_on):
        raise OrgasegError(f"{seg_name} was segmented with other features than the classifier of {mapping} "
                           f"was trained on ({_what_differs(segmentation_job.config(), trained_on)}"
                           "): segment it with the same method, options and checkpoint")
    return segmentation_job


def _check_refine_choices(classifier: str, prior: str | None, annotations: Annotations) -> str:
    """The prior a refining ``classifier`` predicts under (``prior``, else its default), once the classifier, the
    prior and the annotations (two names at least) are checked."""
    prior = default_prior(classifier) if prior is None else prior
    if classifier not in CLASSIFIERS:
        raise OrgasegError(f"unknown classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")
    if prior not in PRIORS:
        raise OrgasegError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
    if len(annotations.names) < 2:
        raise OrgasegError(f"{annotations.source}: refining needs annotations of at least two names, got "
                           f"only {annotations.names[0]!r}")
    return prior


def _named_sink(output, volume: Volume, record: dict, names: Sequence[str], *, block_shape: tuple[int, int, int],
                forest: bool, scribbles, raw, mapping, raw_read: Volume | None, overwrite: bool):
    """Where the named labels go: an array of ``volume``'s shape, or the label writer of ``output``.

    ``output`` is refused where it would replace an input: the segmentation ``volume``, ``scribbles``,
    ``raw``, ``mapping``, the volume the features are read from (``raw_read``) or the segmented volume that
    ``record`` names (a later refine of this segmentation reads it); a ``forest``'s file beside it is
    replaced only with ``overwrite``.
    """
    if output is None:
        return ArraySink(tuple(volume.shape), smallest_label_dtype(len(names)))
    segmented = record["input"].get("path") if isinstance(record.get("input"), dict) else None
    refuse_replacing_an_input(output, volume, scribbles, raw, segmented, mapping, raw_read)
    if forest and forest_path(output).exists() and not overwrite:
        raise OrgasegError(f"{forest_path(output)} exists; pass {arg('overwrite')} to replace it")
    return create_label_writer(output, volume.shape, len(names), voxel_size=known_voxel_size(volume),
                               origin=placement(volume), overwrite=overwrite,
                               chunks=aligned_chunks(block_shape, LABEL_CHUNKS), label_names=names)


def relabel(volume: Volume, lookup: np.ndarray, sink, *, block_shape: tuple[int, int, int],
            progress: ProgressCallback | None = None) -> None:
    """Write ``lookup[cluster id]`` for every voxel of ``volume`` into ``sink``, block by block."""
    lookup = np.asarray(lookup)
    blocks = make_blocks(tuple(volume.shape), block_shape)
    for done, block in enumerate(blocks, 1):
        ids = np.asarray(volume.read(block.region))
        if ids.size and ids.max() >= len(lookup):
            raise OrgasegError(f"{volume.path or 'the segmentation'} holds cluster id {int(ids.max())}, but its "
                               f"provenance says K = {len(lookup)}")
        sink.write(block.region, lookup[ids])
        report(progress, "naming blocks", done, len(blocks))


def _training_voxels(segmentation_job, annotations: Annotations, prior: str,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The annotations the classifier trains on (their indices and coordinates) and (``prior="estimated"``) the
    unannotated voxels the class frequencies are estimated on."""
    keep = balanced_subsample(annotations.labels, MAX_TRAIN_PER_NAME, seed)
    coords = annotations.coords[keep]
    sampled = sample_unannotated(segmentation_job, seed=seed) if prior == "estimated" else coords[:0]
    return keep, coords, sampled


def _train(segmentation_job, annotations: Annotations, voxels, clusters: np.ndarray, volume: Volume, n_labels: int, *,
           kind: str, seed: int, progress) -> tuple[RefinedClassifier, int]:
    """The refining classifier and the number of annotated voxels it trained on.

    The features of the annotated voxels and of the unannotated ones (``voxels``, :func:`_training_voxels`)
    are computed in one pass over the blocks that hold them.
    """
    keep, coords, sampled = voxels
    features = features_at(segmentation_job, np.concatenate([coords, sampled]), progress)
    unannotated = (features[len(coords):], values_at(volume, sampled)) if len(sampled) else None
    fitted = train_classifier(features[:len(coords)], clusters[keep], annotations.labels[keep] + 1,
                              clusterer=segmentation_job.clusterer, n_labels=n_labels, kind=kind,
                              unannotated=unannotated, context=segmentation_job.context,
                              z_context=segmentation_job.z_context, seed=seed)
    return fitted, int(keep.size)


def _open_segmentation(segmentation) -> tuple[Volume, dict, str]:
    """The segmentation's labels, its provenance record and a name for messages."""
    from orgaseg.segmentation import Segmentation

    if isinstance(segmentation, Segmentation):
        record = segmentation.provenance
        if segmentation.labels is not None:
            voxel_size = record.get("input", {}).get("voxel_size") or (1.0, 1.0, 1.0)
            return as_volume(segmentation.labels, voxel_size=voxel_size), record, "the segmentation"
        segmentation = segmentation.path
    if not isinstance(segmentation, (str, os.PathLike)):  # a bare label array has no clusterer to name
        raise OrgasegError(f"name_clusters names the output of orgaseg.segment: give its path or the Segmentation it "
                           f"returned, got {type(segmentation).__name__}")
    path = Path(segmentation)
    if not path.exists():
        raise OrgasegError(f"{path}: no such segmentation")
    if not provenance_path(path).is_file():
        raise OrgasegError(f"{path}: no provenance record beside it ({provenance_path(path).name}); name the output "
                           "of 'orgaseg segment'")
    record = read_provenance(path)
    if record.get("command") == "crop":
        segment_first = in_words("orgaseg.segment", "'orgaseg segment'")
        raise OrgasegError(f"{path} is a crop of an image ('orgaseg crop'), not a segmentation: segment it first "
                           f"({segment_first}) and name the segmentation's clusters")
    volume = open_volume(path)
    if not np.issubdtype(volume.dtype, np.integer):
        raise OrgasegError(f"{path}: a segmentation holds integer cluster ids, got {volume.dtype}")
    return volume, record, str(path)


def _record_field(record: dict, name: str, where: str):
    if name not in record or record[name] is None:
        raise OrgasegError(f"{where}: its provenance has no {name!r}; name the output of 'orgaseg segment'")
    return record[name]


def _read_annotations(points, scribbles, scribbles_key, names, volume: Volume, units: str) -> Annotations:
    if points is not None:
        if names is not None:
            raise OrgasegError("a names table goes with scribbles; points carry their names in the 'name' column")
        if units == "nm" and volume.attrs.get("voxel_size_assumed"):  # nm over an assumed 1 nm: voxels misread
            raise OrgasegError(f"{volume.path or 'the segmentation'}: its voxel size is unknown (it stores none, as "
                               "the volume segmented had none), so points in nm cannot be placed: give them in "
                               f"voxels, or segment again with {arg('voxel_size')}")
        # the volume's origin, zero where nothing places it (a TIFF): placement() is None there, which is for writing
        return read_points(points, shape=volume.shape, voxel_size=volume.voxel_size, units=units,
                           origin=volume.origin)
    table = names if isinstance(names, dict) or names is None else read_names_table(names)
    if isinstance(scribbles, (str, Path)):
        if not Path(scribbles).exists():
            raise OrgasegError(f"{scribbles}: no such scribble volume")
        scribbles = open_on_grid(scribbles, "the scribble volume", "the segmentation's", volume.shape,
                                 key=scribbles_key, key_option="scribbles_key", voxel_size=volume.voxel_size)
    elif not isinstance(scribbles, Volume):
        scribbles = as_volume(np.asarray(scribbles), voxel_size=volume.voxel_size)
    return read_scribbles(scribbles, shape=volume.shape, names=table)


def _refuse_unused_refine_options(refine: bool, mapping, **given) -> None:
    """Options that would otherwise be ignored without a word: the refine's without ``refine``, its training
    options with a reused ``mapping`` (whose classifier brings its own)."""
    used = [name for name, value in given.items() if value is not None and value is not False]
    training = [name for name in used if name not in ("raw", "model", "device", "executor", "feature_memory")]

    def listed(names):
        return " and ".join(arg(name) for name in names)

    if used and not refine:
        verb = "takes" if len(used) == 1 else "take"
        raise OrgasegError(f"{listed(used)} {verb} effect only with {arg('refine')} (naming alone reads the labels only)")
    if training and mapping is not None:
        raise OrgasegError(f"{listed(training)} cannot apply to {arg('mapping')}: the reused classifier brings its "
                           "own settings (see its provenance)")


def mapping_holds_classifier(mapping) -> bool:
    """Whether ``mapping`` (a named output's provenance, or None) holds a refined classifier; False where it
    cannot be read (:func:`_reuse_mapping` says why)."""
    try:
        return mapping is not None and bool(read_provenance(mapping).get("classifier"))
    except (OSError, ValueError, AttributeError, OrgasegError):
        return False


def _reuse_mapping(mapping, clusterer_state: dict, k: int,
                   refine: bool) -> tuple[ClusterNaming, RefinedClassifier | None, dict]:
    """The naming (and classifier) of an earlier named output, checked against this segmentation's clusterer."""
    path = Path(mapping)
    if provenance_path(path).is_file():  # the named output itself was given
        raise OrgasegError(f"{path} is an output, not its provenance: give {provenance_path(path)}")
    if not path.is_file():
        raise OrgasegError(f"{path}: no such provenance file; give the .provenance.json beside a named output")
    if not path.name.endswith(".provenance.json"):
        raise OrgasegError(f"{path} is not a provenance record: give the OUT.provenance.json written beside an "
                           "earlier 'orgaseg name' output")
    record = read_provenance(path)
    if "naming" not in record or "clusterer_sha256" not in record:
        raise OrgasegError(f"{path}: not the provenance of a named output ('orgaseg name'): it holds no mapping")
    if record["clusterer_sha256"] != digest(clusterer_state):
        source = Path(str(record.get("segmentation")))
        centers = provenance_path(source) if provenance_path(source).is_file() else "SEG.provenance.json"
        again = in_words(f"orgaseg.segment(volume, centers={str(centers)!r})",
                         f"orgaseg segment VOLUME --centers {centers}")
        fitted = (f"K = {record['k']} clusters, this segmentation {k}" if record.get("k") not in (None, k) else
                  f"another fit of K = {k}")
        raise OrgasegError(f"{path}: its mapping names the clusters of another clusterer ({fitted}); segment this "
                           f"volume with the same clusterer: {again} (it brings "
                           "that segmentation's method, checkpoint, options and pixel size)")
    naming = ClusterNaming.from_dict(record["naming"])
    classifier = None
    if record.get("classifier"):
        classifier = load_classifier(record["classifier"], folder=path.parent)
    elif refine:
        raise OrgasegError(f"{path}: this mapping was not refined, so it holds no classifier to reuse; refine with "
                           "annotations of this volume instead")
    described = {"mapping_from": str(path), "features": record["naming"].get("features")}
    return naming, classifier, described

