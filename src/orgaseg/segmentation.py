"""``orgaseg.segmentation``: features, clustering and a label volume, in one call."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from orgaseg.cluster.kmeans import KMeansModel
from orgaseg.errors import OrgasegError
from orgaseg.io import compute_normalization, make_provenance, open_volume
from orgaseg.io.volume import Volume, as_volume
from orgaseg.methods.registry import get_method
from orgaseg.models.checkpoint import file_hash
from orgaseg.pipeline.executors import Executor, SerialExecutor
from orgaseg.pipeline.outputs import open_outputs
from orgaseg.pipeline.resume import run_key
from orgaseg.pipeline.runner import cluster_volume, resolve_block_shape
from orgaseg.pipeline.tasks import VolumeSource
from orgaseg.progress import ProgressCallback


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    labels : ndarray or None
        The label volume (zyx) when no output path was given, else None.
    path : Path or None
        Where the labels were written.
    model : KMeansModel
        The fitted (or reused) clusterer; its ``to_dict()`` is in the provenance.
    provenance : dict
        The provenance record written beside the output.
    """

    labels: np.ndarray | None
    path: Path | None
    model: KMeansModel
    provenance: dict


def resolve_volume(data, *, key: str | None = None, voxel_size=None, level: int = 0, axes: str | None = None) -> Volume:
    """A :class:`Volume` from a path, a Volume or an array."""
    if isinstance(data, (str, Path)):
        return open_volume(data, key=key, voxel_size=voxel_size, level=level, axes=axes)
    if isinstance(data, Volume):
        return data if voxel_size is None else dataclasses.replace(data, voxel_size=tuple(voxel_size))
    return as_volume(data, voxel_size=voxel_size or (1.0, 1.0, 1.0))


def load_centers(source) -> KMeansModel:
    """Cluster centres to reuse: a provenance JSON of an earlier segmentation, or a ``.npy``.

    A ``.npy`` holds centres in the method's original feature units (shape ``(k, n_features)``).
    """
    if isinstance(source, KMeansModel):
        return source
    path = Path(source)
    if not path.exists():
        raise OrgasegError(f"centres file not found: {path}")
    if path.suffix == ".npy":
        centers = np.load(path).astype(np.float32)
        if centers.ndim != 2:
            raise OrgasegError(f"{path}: centres must be a 2D array (k, n_features), got shape {centers.shape}")
        n = centers.shape[1]
        return KMeansModel(centers=centers, mean=np.zeros(n, np.float32), scale=np.ones(n, np.float32))
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise OrgasegError(f"{path}: not a readable provenance JSON ({err})") from None
    state = record.get("clusterer") if isinstance(record, dict) else None
    if not state:
        raise OrgasegError(f"{path}: no 'clusterer' entry; give the provenance JSON written beside a segmentation")
    return KMeansModel.from_dict(state)


def segment(
    data,
    *,
    method: str = "baseline",
    k: int = 6,
    output: str | Path | None = None,
    model: str | Path | None = None,
    centers=None,
    voxel_size: Sequence[float] | None = None,
    key: str | None = None,
    level: int = 0,
    axes: str | None = None,
    seed: int = 0,
    sample_size: int | None = None,
    block_shape: tuple[int, int, int] | None = None,
    device: str = "auto",
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    executor: Executor | None = None,
    save_features: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> Segmentation:
    """Segment a volume into ``k`` clusters with a named method.

    Parameters
    ----------
    data : str, Path, Volume or ndarray
        The volume (any format :func:`orgaseg.open_volume` reads) or an array.
    method : str
        A registered method (``orgaseg.methods.registry.method_names()``).
    k : int
        Number of clusters (ignored when ``centers`` is given).
    output : str or Path, optional
        Where to write the labels (``.ome.zarr``/``.zarr`` or ``.tif``); when
        None the labels are returned in memory.
    model : str or Path, optional
        Checkpoint of a method that learns.
    centers : path or KMeansModel, optional
        Reuse the clusterer of an earlier segmentation (its provenance JSON),
        so a second volume gets the same label ids.
    voxel_size : sequence of float, optional
        ``(z, y, x)`` in nanometres; overrides the file's metadata.
    key : str, optional
        Dataset key inside a container (HDF5, zarr, N5).
    level : int
        OME-Zarr resolution level (0 = full resolution).
    axes : str, optional
        Stored axis order when the metadata does not say (e.g. ``"xyz"``).
    seed : int
        Seed of the voxel sample and the clustering.
    sample_size : int, optional
        Voxels sampled to fit the clusterer (default: the method's; 200,000
        for most, a thousandth of the voxels for his4mae and sdae-recon).
    block_shape : tuple of int, optional
        Blocks processed at a time (bounds memory).
    device : {"auto", "cpu", "cuda"}
        Where learned encoders run.
    options : dict, optional
        Method-specific options (for the baseline: ``scales_nm``, ``in_plane``).
    overwrite : bool
        Replace an existing output, and start afresh instead of resuming.
    executor : Executor, optional
        Where blocks run (:func:`orgaseg.pipeline.executors.make_executor`);
        default serially in this process.
    save_features : str or Path, optional
        Also write every voxel's features to this chunked float16 Zarr array
        ``(z, y, x, F)``; by default no feature array exists, in memory or on disk.
    progress : callable, optional
        Progress callback ``(description, done, total, **figures)``.

    Returns
    -------
    Segmentation

    Notes
    -----
    With an ``output``, the labels are built in ``<output>.partial/``. If a
    run is interrupted (an error, Ctrl-C, even SIGKILL), rerunning the same
    call resumes it: the stored clusterer is reused and only unfinished blocks
    are computed; any change to the input, checkpoint, method, options, K,
    seed, sample size or block shape starts afresh, as does ``overwrite``.
    """
    started = time.time()
    spec = get_method(method)
    volume = resolve_volume(data, key=key, voxel_size=voxel_size, level=level, axes=axes)
    if spec.learns and model is None:
        raise OrgasegError(f"method {method!r} needs a trained model: train one with 'orgaseg train' and pass --model")
    reused = load_centers(centers) if centers is not None else None
    n_labels = reused.k if reused is not None else int(k)
    if reused is None and n_labels < 1:
        raise OrgasegError(f"K must be at least 1, got {k}")
    if sample_size is None:
        sample_size = spec.sample_size(volume.size)
    extractor = spec.build_features(volume, model, options, device)
    normalization = compute_normalization(volume, seed=seed)
    block_shape = resolve_block_shape(volume, extractor, block_shape)
    model_hash = file_hash(model) if model is not None else None
    executor = executor or SerialExecutor()
    source = VolumeSource.from_arguments(data, volume, key=key, level=level, axes=axes)
    resume_key = None
    if output is not None:  # what the labels depend on: a rerun with the same key resumes
        resume_key = run_key(volume, method=method, features=extractor.config(), options=options or {},
                             model_sha256=model_hash, k=n_labels, centers=reused.to_dict() if reused else None,
                             seed=seed, sample_size=sample_size, normalization=normalization.to_dict(),
                             block_shape=block_shape, save_features=str(save_features) if save_features else None)
    # created before any work, so an existing output is refused at once
    outputs = open_outputs(output, volume.shape, n_labels, voxel_size=volume.voxel_size, block_shape=block_shape,
                           overwrite=overwrite, resume_key=resume_key, save_features=save_features,
                           n_features=extractor.n_features)
    stats: dict = {}
    try:
        (fitted,) = cluster_volume(
            source,
            normalization,
            extractor,
            [outputs.sink],
            ks=None if reused is not None else [n_labels],
            models=[reused] if reused is not None else None,
            seed=seed,
            sample_size=sample_size,
            block_shape=block_shape,
            executor=executor,
            state=outputs.state,
            features_out=outputs.features,
            stats=stats,
            progress=progress,
        )
    except BaseException:
        outputs.interrupted()
        raise
    record = make_provenance(
        method=method,
        config={"features": extractor.config(), "options": options or {}, "seed": seed, "sample_size": sample_size},
        k=fitted.k,
        clusterer=fitted.to_dict(),
        normalization=normalization.to_dict(),
        input={"path": volume.path, "key": volume.key, "shape": list(volume.shape), "voxel_size": list(volume.voxel_size)},
        model={"path": str(model), "sha256": model_hash} if model is not None else None,
        centers_from=str(centers) if isinstance(centers, (str, Path)) else None,
        blocks={"shape": list(block_shape), **{n: stats[n] for n in ("blocks", "computed", "skipped") if n in stats}},
        executor=executor.describe(),
        timings={n: v for n, v in stats.items() if n.endswith("_s")},
        features_saved=str(save_features) if save_features is not None else None,
        wall_time_s=round(time.time() - started, 3),
    )
    path = outputs.finalize(record, {"axes": "zyxc", "voxel_size": list(volume.voxel_size), "method": method,
                                     "features": extractor.config(), "input": volume.path})
    labels = outputs.sink.array if path is None else None
    return Segmentation(labels=labels, path=path, model=fitted, provenance=record)
