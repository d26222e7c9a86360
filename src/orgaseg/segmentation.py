"""``orgaseg.segmentation``: features, clustering and a label volume, in one call."""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from orgaseg.cluster import Clusterer, ClustererSpec, KMeansModel, clusterer_from_dict, get_clusterer
from orgaseg.errors import OrgasegError, OrgasegWarning, arg
from orgaseg.io import compute_normalization, make_provenance, open_volume
from orgaseg.io.metadata import format_sizes, known_voxel_size, placement
from orgaseg.io.partial import digest, refuse_replacing_an_input, same_path
from orgaseg.io.provenance import provenance_path
from orgaseg.io.readers import assumed_voxel_size
from orgaseg.io.volume import Volume, absolute_path, in_memory_volume, read_as
from orgaseg.options import check_whole_number
from orgaseg.pipeline.cost import estimate_cost
from orgaseg.pipeline.executors import Executor, SerialExecutor
from orgaseg.pipeline.outputs import open_outputs
from orgaseg.pipeline.resume import run_key
from orgaseg.pipeline.runner import (check_feature_memory, cluster_volume, kept_feature_bytes, plan_blocks,
                                    resolve_block_shape)
from orgaseg.pipeline.stages import Stages, resolve_stages
from orgaseg.pipeline.tasks import VolumeSource
from orgaseg.progress import ProgressCallback

logger = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    labels : ndarray or None
        The label volume (zyx) when no output path was given, else None.
    path : Path or None
        Where the labels were written.
    model : Clusterer
        The fitted (or reused) clusterer; its ``to_dict()`` is in the provenance.
    provenance : dict
        The provenance record written beside the output.
    """

    labels: np.ndarray | None
    path: Path | None
    model: Clusterer
    provenance: dict


def _refuse_file_options(data, **given) -> None:
    """Options that say how to read a file, given with data that is no file (they would be ignored)."""
    if isinstance(data, (str, Path)):
        return
    defaults = {"key": None, "level": 0, "axes": None, "channel": None, "strict_chunks": False}
    named = [name for name, value in given.items() if value != defaults[name]]
    if named:
        several = len(named) > 1
        raise OrgasegError(f"{', '.join(named)} {'say' if several else 'says'} how to read a file, but the data is "
                           f"{'a Volume' if isinstance(data, Volume) else 'an array'}, read as it is: leave "
                           f"{'them' if several else 'it'} out")


def resolve_volume(data, *, key: str | None = None, voxel_size=None, level: int = 0, axes: str | None = None,
                   channel: int | None = None, strict_chunks: bool = False) -> Volume:
    """A :class:`Volume` from a path (read by :func:`~orgaseg.io.open_volume`), a Volume or an array."""
    if isinstance(data, (str, Path)):
        return open_volume(data, key=key, voxel_size=voxel_size, level=level, axes=axes, channel=channel,
                           strict_chunks=strict_chunks)
    volume = in_memory_volume(data, voxel_size)
    if voxel_size is None and not isinstance(data, Volume):  # said, since features are computed in nm
        warnings.warn(assumed_voxel_size("the array", "voxel size unknown, assuming 1 x 1 x 1 nm", volume.shape[0]),
                      stacklevel=3)
    return volume


#: Clusters when neither K nor a clusterer to reuse is given.
DEFAULT_K = 6


def _describe_centers(centers) -> str:
    if isinstance(centers, Segmentation):
        return "the Segmentation given as centers"
    return str(centers) if isinstance(centers, (str, Path)) else "given in Python"


def _read_centers(source, spec: ClustererSpec | None = None) -> tuple[Clusterer, dict | None]:
    """A fitted clusterer to reuse, with the record it was read from (None for a ``.npy`` or a clusterer object).

    ``source`` is the provenance JSON written beside a segmentation (any clusterer), a ``.npy`` of k-means
    centres in the features' original units, shape ``(k, n_features)``, a :class:`Segmentation` (its
    clusterer and its record, as from its provenance) or a clusterer object; ``spec`` reads the state back
    (default: the clusterer its ``kind`` names).
    """
    if isinstance(source, Segmentation):
        return source.model, source.provenance
    if not isinstance(source, (str, Path)):
        if not all(hasattr(source, name) for name in ("predict", "to_dict", "k", "n_features")):
            raise OrgasegError(f"centers: got a {type(source).__name__}; give an earlier segmentation's provenance "
                               "JSON (or a .npy of k-means centres), the Segmentation that segment() returned, or "
                               "its fitted clusterer (its .model)")
        return source, None
    path = Path(source)
    if not path.exists():
        raise OrgasegError(f"centres file not found: {path}")
    if path.suffix == ".npy":
        centers = np.load(path).astype(np.float32)
        if centers.ndim != 2:
            raise OrgasegError(f"{path}: centres must be a 2D array (k, n_features), got shape {centers.shape}")
        n = centers.shape[1]
        return KMeansModel(centers=centers, mean=np.zeros(n, np.float32), scale=np.ones(n, np.float32)), None
    beside = provenance_path(path)
    if beside.is_file():  # the segmentation itself was given
        raise OrgasegError(f"{path} is an output, not its provenance: give {beside}")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OrgasegError(f"{path}: not a readable provenance JSON ({err})") from None
    state = record.get("clusterer") if isinstance(record, dict) else None
    if not state and isinstance(record, dict) and "naming" in record:
        segmentation = provenance_path(record.get("segmentation") or "SEG")
        raise OrgasegError(f"{path} is the provenance of a named output ('orgaseg name'), which holds no clusterer: "
                           f"give its segmentation's, {segmentation}")
    if not state:
        raise OrgasegError(f"{path}: no 'clusterer' entry; give the provenance JSON written beside a segmentation")
    return clusterer_from_dict(state, spec), record


def check_reused_features(centers, record: dict | None, reused: Clusterer, stages: Stages, job,
                          model_sha256: str | None, model_path=None) -> None:
    """Refuse a clusterer reused from a segmentation whose features differ from what this run computes.

    A clusterer's label ids stand for structures only in the features it was fitted on: another
    checkpoint, other dense features or other feature options of the same width would give the same ids to
    other structures, and the runner can only compare the width. ``centers`` that are not a segmentation's
    provenance (a ``.npy``, a clusterer object, a graph clusterer's checkpoint, which sets the features
    itself) are not checked. Another working voxel size with features of the same width is warned about
    (features in nm carry over between voxel sizes, more or less).

    ``record`` is what ``centers`` was read from (:func:`_read_centers`); ``model_path`` is this run's
    checkpoint, named in the refusal.
    """
    config = (record or {}).get("config")
    if not isinstance(config, dict) or "features" not in config:
        return
    about = _describe_centers(centers)
    fitted_model = (record.get("model") or {}).get("sha256")
    mine = stages.config()
    differences = []
    if fitted_model != model_sha256:
        fitted = "no checkpoint" if fitted_model is None else f"the checkpoint {record['model'].get('path')}"
        differences.append(f"the encoder ({fitted}; this run: " + (
            "no checkpoint" if model_sha256 is None else
            f"the checkpoint {model_path or 'given'}, another file (SHA-256 {model_sha256[:12]}...)") + ")")
    if config["features"] != mine["features"] or digest(config.get("feature_options") or {}) != \
            digest(mine["feature_options"]):
        differences.append(f"the dense features ({_features_text(config['features'], config.get('feature_options'))}; "
                           f"this run: {_features_text(mine['features'], mine['feature_options'])})")
    grid = config.get("working_grid")
    fitted_at = _voxel_text(grid["working_voxel_size"] if grid else (record.get("input") or {}).get("voxel_size"))
    here = _voxel_text(job.grid.working_voxel_size if job.grid is not None else job.source.volume.voxel_size)
    if reused.n_features != job.extractor.n_features:
        differences.append(f"{reused.n_features} feature channels at working voxels of {fitted_at} (this run: "
                           f"{job.extractor.n_features} at {here})")
    guessed = job.source.volume.attrs.get("voxel_size_assumed")
    if differences:
        raise OrgasegError(
            f"{about}: its clusterer was fitted on other features than this run computes: "
            f"{' and '.join(differences)}; its label ids would name other structures here. " + (
                f"This volume's voxel size is unknown (taken as 1 nm, its features are computed at that size): "
                f"pass {arg('voxel_size')}" if guessed else
                f"Segment with that run's method ({config['method']}), checkpoint, features, feature options and "
                f"pixel size, or leave out {arg('centers')} to fit a new clusterer"))
    if fitted_at != here:
        warnings.warn(OrgasegWarning(f"{about}: its clusterer was fitted on working voxels of {fitted_at}, this "
                                     f"run computes features on {here}: its clusters may fall on other structures"
                                     + (f"; this volume's voxel size is unknown (taken as 1 nm): pass "
                                        f"{arg('voxel_size')}" if guessed else "")),
                      stacklevel=3)


def _stages_of_reused_run(centers, record: dict | None, *, method: str | None, model, features: str | None,
                          options: dict | None, invert: bool) -> tuple[str, Any, str | None, dict | None, bool,
                                                                       dict | None]:
    """The stage arguments not given, taken from the segmentation whose provenance ``centers`` is.

    A clusterer's ids mean something only on the features it was fitted on, so a volume segmented with it
    needs that run's method, checkpoint, features, feature options and contrast (its pixel size: see
    :func:`segment`). Each one given wins; none is taken with another ``method``, or from centres that
    are no segmentation's provenance. Returns ``method`` (default ``baseline``), ``model``, ``features``,
    ``options``, ``invert`` and what was taken where they differ from the defaults (None when ``centers``
    is no run of this method).

    Raises
    ------
    OrgasegError
        ``invert`` asked for where that run read the intensities as they were (its ids would fall on
        the other structures), or its checkpoint is gone.
    """
    from orgaseg.methods import get_method

    about = _describe_centers(centers)
    inverted = bool(((record or {}).get("normalization") or {}).get("invert", False))
    if invert and record is not None and "normalization" in record and not inverted:
        raise OrgasegError(f"{about}: its clusterer was fitted on the intensities as they were; inverting them "
                           f"here ({arg('invert')}) would give its ids to other structures: leave it out")
    config = (record or {}).get("config")
    if not isinstance(config, dict) or "method" not in config or method not in (None, config["method"]):
        return method or "baseline", model, features, options, invert or inverted, None
    taken: dict = {}
    if inverted and not invert:
        invert = taken["invert"] = True
    if method is None:
        method = config["method"]
        if method != "baseline":  # the default is no news
            taken["method"] = method
    recorded_model = (record.get("model") or {}).get("path")
    if model is None and recorded_model is not None:
        if not Path(recorded_model).is_file():
            raise OrgasegError(f"{about}: its run read the checkpoint {recorded_model}, which is not there: pass "
                               f"{arg('model')} (the same checkpoint; its SHA-256 is in that provenance)")
        model = taken["model"] = recorded_model
    if features is None and config.get("features") not in (None, get_method(method).features):
        features = taken["features"] = config["features"]
    given = {name.removeprefix("features."): value for name, value in (options or {}).items()}
    recorded = {name: value for name, value in (config.get("feature_options") or {}).items() if name not in given}
    if recorded:
        taken["feature_options"] = recorded
        options = {**{f"features.{name}": value for name, value in recorded.items()}, **(options or {})}
    return method, model, features, options, invert, taken


def _taken_text(name: str, value) -> str:
    """One item of what a reused run's provenance gave: ``method his4mae``, ``pixel size 11.8 nm``, ..."""
    if name == "feature_options":
        return "feature options " + ", ".join(f"{k}={v}" for k, v in value.items())
    if name == "invert":
        return "inverted intensities"
    if name == "pixel_size":
        return "pixel size native" if value == "native" else f"pixel size {value:g} nm"
    return f"{'checkpoint' if name == 'model' else name} {value}"


def _features_text(name: str, options: dict | None) -> str:
    """``filter-bank``, or ``filter-bank with scales_nm=[20, 40]``."""
    return name + (" with " + ", ".join(f"{k}={v}" for k, v in options.items()) if options else "")


def _voxel_text(voxel_size) -> str:
    return "unknown size" if voxel_size is None else f"{format_sizes(voxel_size)} nm"


def _stages_and_reused_run(centers, *, method: str | None, model, features: str | None,
                           clusterer: str | ClustererSpec | None, options: dict | None,
                           pixel_size: float | str | None, invert: bool,
                           device: str) -> tuple[Stages, Any, Any, bool, Clusterer | None, dict | None, dict | None]:
    """The stages :func:`segment` runs, with what the earlier run it reuses gives of those not given.

    A trained graph clusterer (sccs, cs2c), as ``model`` or as ``centers``, gives the method, features,
    clusterer, options and pixel size it was trained with
    (:func:`~orgaseg.methods.graph_method.segment_arguments`); a segmentation's provenance as ``centers``
    gives its clusterer and that run's stage arguments (:func:`_stages_of_reused_run`), its working pixel
    size too where none is given and it was not the default here. What was taken is said at once.

    Returns
    -------
    stages : Stages
    model : path or None
        The checkpoint, given or taken.
    centers : path, Clusterer or None
        The centres (None where a graph checkpoint given as centres became the model).
    invert : bool
    reused : Clusterer or None
        The clusterer read from ``centers``.
    reused_from : dict or None
        The provenance record it was read from.
    taken : dict or None
        What was taken from that record (``stages_from_centers``); None where it is no run of this method.
    """
    from orgaseg.methods.graph_method import is_graph_checkpoint, segment_arguments

    if model is None and isinstance(centers, (str, Path)) and is_graph_checkpoint(centers):
        # a trained sccs / cs2c given as centres labels as it does given as the model: on the features, encoder
        # and pixel size it was trained with (as centres it read the filter bank at the default pixel size)
        model, centers = centers, None
    if model is not None and is_graph_checkpoint(model):
        arguments = segment_arguments(model, method=method, centers=centers, features=features,
                                      clusterer=clusterer, options=options, pixel_size=pixel_size)
        method, model, centers, features, clusterer, options, pixel_size = (arguments[name] for name in (
            "method", "model", "centers", "features", "clusterer", "options", "pixel_size"))
    reused, reused_from = (_read_centers(centers, get_clusterer(clusterer) if clusterer is not None else None)
                           if centers is not None else (None, None))
    if reused is not None and clusterer is None:
        clusterer = str(reused.to_dict().get("kind", "kmeans"))
    method, model, features, options, invert, taken = _stages_of_reused_run(
        centers, reused_from, method=method, model=model, features=features, options=options, invert=invert)
    stages = resolve_stages(method, model=model, features=features, clusterer=clusterer, options=options,
                            pixel_size=pixel_size, device=device)
    fitted_nm = stages.pixel_size_nm if taken is None else reused_from["config"].get("pixel_size_nm",
                                                                                      stages.pixel_size_nm)
    if pixel_size is None and fitted_nm != stages.pixel_size_nm:  # the reused run's was not the default here
        pixel_size = taken["pixel_size"] = "native" if fitted_nm is None else fitted_nm
        stages = resolve_stages(method, model=model, features=features, clusterer=clusterer, options=options,
                                pixel_size=pixel_size, device=device)
    if taken:  # said before the long part, as the cost is
        about = _describe_centers(centers)
        logger.info(f"as in {about}: " + ", ".join(_taken_text(name, value) for name, value in taken.items()))
    return stages, model, centers, invert, reused, reused_from, taken


def _number_of_clusters(k, reused: Clusterer | None, centers) -> int:
    """The K to fit (``k``, default :data:`DEFAULT_K`), or the reused clusterer's, which a different ``k``
    contradicts."""
    if k is not None:
        try:
            k = operator.index(k)  # an int or a numpy integer, not 2.5 or "3"
        except TypeError:
            raise OrgasegError(f"K must be a whole number, got {k!r}") from None
        if k < 1:
            raise OrgasegError(f"K must be at least 1, got {k}")
    if reused is None:
        return DEFAULT_K if k is None else k
    if k is not None and k != reused.k:
        raise OrgasegError(f"K = {k} was asked for, but the reused clusterer ({_describe_centers(centers)}) has "
                           f"K = {reused.k}: leave K out (the clusterer fixes it)")
    return reused.k


def _settings_without_effect(reused: Clusterer | None, centers, stages: Stages, *,
                             sample_size: int | None) -> list[str]:
    """What only a fit reads, given where the clusterer is reused and not fitted again: said in a warning to
    :func:`segment`'s caller, and returned to be recorded as such beside the configuration that lists it."""
    ignored = [] if reused is None else (["sample_size"] if sample_size is not None else []) + [
        f"clusterer option {name}" for name in stages.clusterer_options]
    if ignored:
        said = [arg(name) if name == "sample_size" else f"the {name}" for name in ignored]
        verb = "takes" if len(ignored) == 1 else "take"
        warnings.warn(OrgasegWarning(f"{' and '.join(said)} {verb} no effect: the reused clusterer "
                                     f"({_describe_centers(centers)}) is not fitted again"), stacklevel=3)
    return ignored


def segment(
    data,
    *,
    method: str | None = None,
    k: int | None = None,
    output: str | Path | None = None,
    model: str | Path | None = None,
    centers=None,
    features: str | None = None,
    clusterer: str | ClustererSpec | None = None,
    options: dict[str, Any] | None = None,
    pixel_size: float | str | None = None,
    invert: bool = False,
    voxel_size: Sequence[float] | None = None,
    key: str | None = None,
    level: int = 0,
    axes: str | None = None,
    channel: int | None = None,
    strict_chunks: bool = False,
    seed: int = 0,
    sample_size: int | None = None,
    block_shape: tuple[int, int, int] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    executor: Executor | None = None,
    save_features: str | Path | None = None,
    feature_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> Segmentation:
    """Segment a volume into ``k`` clusters with a named method.

    Parameters
    ----------
    data : str, Path, Volume or ndarray
        The volume (any format :func:`orgaseg.open_volume` reads) or an array (2D: one section).
        ``key``, ``level``, ``axes``, ``channel`` and ``strict_chunks`` say how to read a path;
        with a Volume or an array they are refused.
    method : str, optional
        A row of the method table (``orgaseg methods``; :data:`orgaseg.methods.METHODS`); default
        ``baseline``, or with ``centers`` the method of the run they come from.
    k : int, optional
        Number of clusters (default 6). With ``centers`` the reused clusterer
        fixes it: a different ``k`` is refused.
    output : str or Path, optional
        Where to write the labels (``.ome.zarr``/``.zarr`` or ``.tif``); when
        None the labels are returned in memory.
    model : str or Path, optional
        Checkpoint of the method's encoder (``orgaseg train``), or of a trained
        graph clusterer (sccs, cs2c): its clusterer labels the volume as it was
        trained, on its features, encoder and pixel size
        (:func:`~orgaseg.methods.graph_method.segment_arguments`).
    centers : str, Path, Segmentation or Clusterer, optional
        Reuse the clusterer of an earlier segmentation (its provenance JSON, the
        :class:`Segmentation` it returned, its ``.model``, or a ``.npy`` of k-means
        centres), so a second volume gets the same label ids.
        From a provenance (or a Segmentation), what is not given of ``method``, ``model``, ``features``,
        the feature ``options`` and ``pixel_size`` is that run's (recorded under
        ``stages_from_centers``); what is given must give the same features.
    features : str, optional
        Dense features instead of the method's (:data:`orgaseg.features.FEATURES`).
    clusterer : str or ClustererSpec, optional
        Clusterer instead of the method's (:data:`orgaseg.cluster.CLUSTERERS`, or a spec of your own).
    options : dict, optional
        Stage options ``{name: value}`` (e.g. ``{"stride": 20}``, ``{"scales_nm": [10, 20]}``,
        ``{"clusterer.n_init": 5}``); a name goes to the stage that declares it.
    pixel_size : float, "native" or None
        Working pixel size in nm: features are computed on the volume resampled
        to it (in-plane only for anisotropic stacks) and mapped back; labels are
        always on the input grid. None: the checkpoint's training pixel size,
        or the method's default.
    invert : bool
        Invert the intensities (bright membranes, dark background).
    voxel_size : float or sequence of 3 float, optional
        ``(z, y, x)`` in nanometres (one number: isotropic); overrides the file's metadata. Features
        are computed in nm: an array without it, or a file without metadata, is taken at 1 nm with a
        ``VoxelSizeWarning``.
    key : str, optional
        Dataset key inside a container (HDF5, zarr, N5).
    level : int
        OME-Zarr resolution level (0 = full resolution).
    axes : str, optional
        Stored axis order (e.g. ``"xyz"``); default from metadata, which a given order replaces.
    channel : int, optional
        The channel to read from multichannel data.
    strict_chunks : bool
        Refuse a Zarr/N5 input whose store lacks chunks (by default a warning:
        a missing chunk reads as the fill value).
    seed : int
        Seed of the sample and the clustering.
    sample_size : int, optional
        Voxels sampled to fit the clusterer (default: the method's rule, else
        the clusterer's: 200,000 for k-means).
    block_shape : tuple of int, optional
        Blocks processed at a time (bounds memory).
    device : {"auto", "cpu", "cuda"}
        Where learned encoders run.
    overwrite : bool
        Replace an existing output once the new one is complete (an interrupted run resumes either way).
    executor : Executor, optional
        Where blocks run (:func:`orgaseg.pipeline.executors.make_executor`);
        default serially in this process.
    save_features : str or Path, optional
        Also write every voxel's features to this chunked float16 Zarr array
        ``(z, y, x, F)``; by default no feature array is written.
    feature_memory : int, optional
        Bytes of features kept in memory from the sampling pass for the
        labelling pass, which then does not compute them again (default
        :data:`orgaseg.pipeline.runner.FEATURE_CACHE_BYTES`, 1 GiB; 0 keeps
        none, for a machine short of memory: every block is then computed
        twice). Dask workers keep none whatever the budget.
    progress : callable, optional
        Progress callback ``(description, done, total, **figures)``; none by default (the command line
        passes one that draws bars: ``orgaseg.progress.TqdmProgress()`` does that from Python too).

    Returns
    -------
    Segmentation
        ``labels``: the cluster ids ``0 .. k-1`` on the input grid ``(z, y, x)`` (a 2D
        array gives ``(1, y, x)``), the smallest unsigned integer type that holds them
        (uint8 up to K = 256), or None when written to ``output`` (``path``); ``model``,
        the fitted clusterer; ``provenance``, the record written beside the output.

    Raises
    ------
    OrgasegError
        Input that cannot be read or is no 2D/3D array of numbers, a voxel size that is
        not 3 positive numbers in nm, K, ``seed``, ``sample_size``, ``block_shape`` or
        ``feature_memory`` out of range, K above the voxels or the sample, an unknown
        method, features, clusterer or option, a learned method without ``model``, a
        reused clusterer that does not fit, an existing ``output`` without ``overwrite``.

    Notes
    -----
    With an ``output``, the labels are built in ``<output>.partial/``. If a
    run is interrupted (an error, Ctrl-C, even SIGKILL), rerunning the same
    call resumes it: the stored clusterer is reused and only unfinished blocks
    are computed; any change to the input, checkpoint, stages, options, pixel
    size, K, seed, sample size or block shape starts afresh (``overwrite`` does not).

    Examples
    --------
    >>> import orgaseg
    >>> from orgaseg import synthetic
    >>> cell = synthetic.make_cell((8, 64, 64), voxel_size=(10, 10, 10), seed=0)
    >>> result = orgaseg.segment(cell.raw, voxel_size=cell.voxel_size, k=4)
    >>> result.labels.shape, int(result.labels.max())
    ((8, 64, 64), 3)

    Written blockwise to a file instead (with its provenance record beside it):

    >>> orgaseg.segment(cell.raw, voxel_size=cell.voxel_size, k=4, output="cell_labels.ome.zarr").path.name
    'cell_labels.ome.zarr'
    """
    started = time.time()
    seed = check_whole_number(seed, "seed")
    if sample_size is not None:
        sample_size = check_whole_number(sample_size, "sample_size", 1)
    if feature_memory is not None:
        feature_memory = check_feature_memory(feature_memory)
    _refuse_file_options(data, key=key, level=level, axes=axes, channel=channel, strict_chunks=strict_chunks)
    volume = resolve_volume(data, key=key, voxel_size=voxel_size, level=level, axes=axes, channel=channel,
                            strict_chunks=strict_chunks)
    stages, model, centers, invert, reused, reused_from, taken = _stages_and_reused_run(
        centers, method=method, model=model, features=features, clusterer=clusterer, options=options,
        pixel_size=pixel_size, invert=invert, device=device)
    n_labels = _number_of_clusters(k, reused, centers)
    ignored = _settings_without_effect(reused, centers, stages, sample_size=sample_size)
    if sample_size is None:
        sample_size = stages.sample_size(volume.size)
    normalization = compute_normalization(volume, seed=seed, invert=invert, refuse_constant=True)
    source = VolumeSource.from_arguments(data, volume, key=key, level=level, axes=axes, channel=channel)
    job = stages.job(source, normalization)
    if getattr(reused, "plane_tile_nm", None) is not None:  # the regions it was fitted with, not the options'
        job = dataclasses.replace(job, plane_tile_nm=reused.plane_tile_nm)
    block_shape = resolve_block_shape(job, block_shape)
    model_hash = _file_hash(model) if model is not None else None
    check_reused_features(centers, reused_from, reused, stages, job, model_hash, model)
    executor = executor or SerialExecutor()
    config = {**stages.config(), "extractor": job.extractor.config(),
              "working_grid": job.grid.describe() if job.grid is not None else None,
              "seed": seed, "sample_size": sample_size}
    resume_key = None
    if output is not None:  # what the labels depend on: a rerun with the same key resumes
        resume_key = run_key(volume, config=config, model_sha256=model_hash, k=n_labels,
                             centers=reused.to_dict() if reused is not None else None,
                             normalization=normalization.to_dict(), block_shape=block_shape,
                             save_features=str(save_features) if save_features else None)
    refuse_replacing_an_input(output, volume, centers)
    refuse_replacing_an_input(save_features, volume, centers)
    if output is not None and save_features is not None and same_path(output, save_features):
        raise OrgasegError(f"{save_features}: the features need a path of their own, not the labels' output")
    # created before any work, so an existing output is refused at once
    outputs = open_outputs(output, volume.shape, n_labels, voxel_size=known_voxel_size(volume), origin=placement(volume),
                           block_shape=block_shape,
                           overwrite=overwrite, resume_key=resume_key, save_features=save_features,
                           n_features=job.extractor.n_features)
    job.features_out = outputs.features
    try:
        # said before the long part starts
        # a resumed run labels the blocks not done with the clusterer it stored: no sampling pass
        stored = outputs.state.load_models(stages.clusterer) if outputs.state is not None and reused is None else None
        fitted_before = [reused] if reused is not None else stored
        kept = kept_feature_bytes(executor, fitted_before is None, feature_memory)
        cost = None
        if stages.encoder is not None:  # only an encoder's passes are priced (the done blocks are read for it alone)
            planned = blocks = plan_blocks(job, block_shape)
            if stored is not None:
                outputs.state.use_models(stored)
                blocks = [block for block in planned if not outputs.state.is_done(block)]
            cost = estimate_cost(stages, job, blocks, reuse_bytes=kept, sampling=fitted_before is None,
                                 done=len(planned) - len(blocks))
    except BaseException:
        outputs.interrupted()
        raise
    stats: dict = {}
    try:
        (fitted,) = cluster_volume(
            job,
            stages.clusterer,
            [outputs.sink],
            ks=None if fitted_before is not None else [n_labels],
            clusterers=fitted_before,
            options=stages.clusterer_options,
            seed=seed,
            sample_size=sample_size,
            block_shape=block_shape,
            executor=executor,
            state=outputs.state,
            stats=stats,
            feature_memory=feature_memory,
            progress=progress,
        )
    except BaseException:
        outputs.interrupted()
        raise
    label_voxels = _voxels_per_cluster(stats.get("label_voxels"), fitted.k)
    record = make_provenance(
        method=stages.method.name,
        config=config,
        k=fitted.k,
        label_voxels=label_voxels,
        clusterer=fitted.to_dict(),
        normalization=normalization.to_dict(),
        input={"path": absolute_path(volume.path), "key": volume.key, **read_as(volume), "shape": list(volume.shape),
               "voxel_size": list(volume.voxel_size), "origin": list(volume.origin)},
        model={"path": absolute_path(model), "sha256": model_hash} if model is not None else None,
        centers_from=absolute_path(centers) if isinstance(centers, (str, Path)) else None,
        stages_from_centers=taken or None,
        given_without_effect=ignored or None,
        blocks={"shape": list(block_shape), **{n: stats[n] for n in ("blocks", "computed", "skipped") if n in stats}},
        executor=executor.describe(),
        feature_memory_bytes=kept,
        cost_estimate=cost,
        timings={n: v for n, v in stats.items() if n.endswith("_s")},
        features_saved=str(save_features) if save_features is not None else None,
        wall_time_s=round(time.time() - started, 3),
    )
    path = outputs.finalize(record, {"axes": "zyxc", "voxel_size": list(volume.voxel_size), "method": stages.method.name,
                                     "features": job.extractor.config(), "input": absolute_path(volume.path)},
                            progress)
    labels = outputs.sink.array if path is None else None
    return Segmentation(labels=labels, path=path, model=fitted, provenance=record)


def _voxels_per_cluster(label_voxels: list[np.ndarray] | None, k: int) -> list[int] | None:
    """How many voxels each cluster labels (None where a resumed run's earlier blocks did not count them);
    warns about clusters that label none, as they leave fewer clusters than K."""
    if label_voxels is None:
        return None
    counts = np.zeros(k, np.int64)
    counts[:label_voxels[0].size] = label_voxels[0]
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        listed = ", ".join(map(str, empty))
        warnings.warn(OrgasegWarning(
            f"cluster{'s' if len(empty) > 1 else ''} {listed} of K = {k} label{'' if len(empty) > 1 else 's'} no "
            f"voxel of this volume: it holds {k - len(empty)} clusters"), stacklevel=3)
    return counts.tolist()


def _file_hash(path: str | Path) -> str:
    from orgaseg.models.checkpoint import file_hash  # torch only when a checkpoint is used

    return file_hash(path)


def compute_features(
    data,
    region=None,
    *,
    method: str = "baseline",
    model: str | Path | None = None,
    features: str | None = None,
    options: dict[str, Any] | None = None,
    pixel_size: float | str | None = None,
    invert: bool = False,
    voxel_size: Sequence[float] | None = None,
    key: str | None = None,
    seed: int = 0,
    device: str = "auto",
) -> np.ndarray:
    """The dense features :func:`segment` would cluster, for one region of a volume.

    Computed exactly as a block of a segmentation (with its context, at the
    working pixel size, mapped back to the input grid), so analyses such as a
    linear probe see the features the clusterer sees.

    Parameters
    ----------
    data : str, Path, Volume or ndarray
        The volume.
    region : tuple of slice, optional
        ``(z, y, x)`` slices (default: the whole volume; keep it small: the
        result holds ``F`` float32 values per voxel).
    method : str
        A row of the method table (default ``baseline``).
    model : str or Path, optional
        Checkpoint of the method's encoder, as for :func:`segment`.
    features : str, optional
        Dense features instead of the method's.
    options : dict, optional
        Stage options ``{name: value}``, as for :func:`segment`.
    pixel_size : float, "native" or None
        Working pixel size in nm (None: the checkpoint's or the method's default).
    invert : bool
        Invert the intensities.
    voxel_size : float or sequence of 3 float, optional
        ``(z, y, x)`` in nm; overrides the file's metadata.
    key : str, optional
        Dataset key inside a container (a path's; refused with an array or a Volume).
    seed : int
        Seed of the intensity-normalisation sample.
    device : {"auto", "cpu", "cuda"}
        Where a learned encoder runs.

    Returns
    -------
    ndarray, float32, shape ``region + (F,)``
        ``F`` features per voxel of the region (its shape in voxels, then ``F``).

    Raises
    ------
    OrgasegError
        A region that is not three non-empty, unstrided slices, and the input and stage
        errors of :func:`segment`.
    """
    from orgaseg.pipeline.blocks import Block
    from orgaseg.pipeline.tasks import block_halo

    seed = check_whole_number(seed, "seed")
    _refuse_file_options(data, key=key)
    volume = resolve_volume(data, key=key, voxel_size=voxel_size)
    stages = resolve_stages(method, model=model, features=features, options=options, pixel_size=pixel_size,
                            device=device)
    job = stages.job(VolumeSource(volume), compute_normalization(volume, seed=seed, invert=invert))
    if region is None:
        region = tuple(slice(0, s) for s in volume.shape)
    if not isinstance(region, (tuple, list)) or len(region) != 3 or not all(isinstance(s, slice) for s in region):
        raise OrgasegError(f"give the region as three slices (z, y, x), got {region!r}")
    bounds = []
    for axis, (s, n) in enumerate(zip(region, volume.shape)):
        start, stop, step = s.indices(n)
        if step != 1 or stop <= start:
            raise OrgasegError(f"region axis {'zyx'[axis]}: {s} is empty or strided in a volume of {n}")
        bounds.append(slice(start, stop))
    halo = block_halo(job.extractor, job.grid)
    read = tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(bounds, halo, volume.shape))
    return job.features(Block(index=0, region=tuple(bounds), read_region=read))
