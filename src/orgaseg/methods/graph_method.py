"""Training SCCS and CS²C on volumes other than the one they segment (``orgaseg train --method sccs|cs2c``).

By default the graph clusterers fit on the volume they segment, like k-means
(:mod:`orgaseg.cluster.graph_clusterers`). :func:`train_graph_clusterer`
trains them once on training volumes instead and writes a checkpoint that
``orgaseg segment --method sccs --model CKPT`` (or ``--centers CKPT``) uses to
label any new volume without fitting on it.

Regions (:class:`RegionSampler`)
--------------------------------
A training graph comes from one square region of ``region_nm`` (the
clusterer's option; 8960 nm by default) of one plane of a training volume:

- the volume is chosen with probability proportional to its size;
- the plane is xy for anisotropic stacks (z voxel more than twice the
  in-plane one) and xy, xz or yz at random for near-isotropic volumes deep
  enough for half a region, as the ViT sampler (:mod:`orgaseg.sampling`) draws
  its fields of view;
- the position is uniform over the plane; a region is cut to the volume;
- the dense features and normalised intensities of the region are computed
  exactly as a block of ``orgaseg segment`` computes them (the same block job:
  features with their halo, at the working pixel size);
- both are then mirrored at random and turned by a random multiple of 90
  degrees (the 8 symmetries of the square) *before* SLIC, so an augmented
  region is a new superpixel graph, not a permuted copy.

Graphs come from a **seeded pool** of ``graphs`` regions (default
:data:`DEFAULT_GRAPHS`), drawn before training; training takes one graph of
the pool per step (:func:`orgaseg.cluster.spectral_nets.train_spectral`,
through :class:`~orgaseg.cluster.graph_clusterers.GraphFit`, the code the
in-segment fit uses). A pool, not a fresh region per step: computing a
region's features and superpixels costs seconds on a CPU, a training step
milliseconds, so 600 fresh regions would spend almost all of the time on
sampling; 64 regions of 560 x 560 px hold about 200,000 superpixels, more than
the in-segment fit sees on a 50-million-voxel sample.

The checkpoint is a JSON file: the fitted clusterer (its state as
:meth:`GraphClusterer.to_dict`, the networks' weights included), the feature
stage (name, options, encoder path and SHA-256), the working pixel size, the
training volumes, the regions drawn and the seed.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from orgaseg.cluster.graph_clusterers import CS2C_HEADS, PRESET_STEPS
from orgaseg.errors import OrgasegError, OrgasegWarning, arg, in_words
from orgaseg.io.metadata import format_sizes
from orgaseg.io.volume import Volume, volume_record
from orgaseg.io.writers import check_writable, writing
from orgaseg.progress import ProgressCallback, report

#: Steps per preset (SCCS; CS²C trains 5/6 of them), as the in-segment fit.
TRAIN_PRESETS = PRESET_STEPS
#: Size of the seeded pool of augmented region graphs.
DEFAULT_GRAPHS = 64
#: The checkpoint's ``format`` field.
FORMAT = "orgaseg-graph-clusterer"
FORMAT_VERSION = 1
#: Features used with ``encoder=`` when no ``features=`` is given (the issue's: expand-stride on a ViT).
ENCODER_FEATURES = "expand-stride"


@dataclass(frozen=True)
class RegionDraw:
    """Where one training region comes from and how it is augmented.

    Attributes
    ----------
    volume : int
        Index of the training volume.
    axis : int
        Axis normal to the plane: 0 = an xy plane, 1 = xz, 2 = yz.
    region : tuple of slice
        ``(z, y, x)`` input voxels; one voxel thick along ``axis``.
    flip : bool
        Mirror the plane's columns first.
    turns : int
        Then turn it by ``turns`` quarter turns (:func:`numpy.rot90`).
    """

    volume: int
    axis: int
    region: tuple[slice, slice, slice]
    flip: bool
    turns: int

    def to_dict(self) -> dict:
        return {"volume": self.volume, "axis": self.axis, "region": [[s.start, s.stop] for s in self.region],
                "flip": self.flip, "turns": self.turns}


def orient(plane: np.ndarray, flip: bool, turns: int) -> np.ndarray:
    """``plane`` (rows, columns, ...) mirrored along its columns if ``flip``, then turned ``turns`` quarter turns."""
    if flip:
        plane = plane[:, ::-1]
    return np.ascontiguousarray(np.rot90(plane, k=turns, axes=(0, 1)))


class RegionSampler:
    """Random, augmented regions of training volumes, with the features ``orgaseg segment`` would compute.

    Parameters
    ----------
    jobs : sequence of BlockJob
        One block job per training volume (:meth:`orgaseg.pipeline.stages.Stages.job`):
        the volume, its normalisation, the dense features and the working grid.
    region_nm : float
        Side of a region in nm.
    seed : int
        Region ``i`` depends only on ``(seed, i)``.
    anisotropy_ratio : float
        Above this z / in-plane voxel-size ratio only xy planes are drawn.
    """

    def __init__(self, jobs: Sequence, region_nm: float, *, seed: int = 0, anisotropy_ratio: float = 2.0) -> None:
        if not jobs:
            raise OrgasegError("give at least one training volume")
        if not region_nm > 0:
            raise OrgasegError(f"the region side must be a positive number of nm, got {region_nm}")
        self.jobs = list(jobs)
        self.region_nm = float(region_nm)
        self.seed = int(seed)
        self.anisotropy_ratio = anisotropy_ratio
        sizes = np.array([job.source.volume.size for job in self.jobs], dtype=np.float64)
        self._weights = sizes / sizes.sum()

    def extent(self, index: int) -> tuple[int, int, int]:
        """A region's side in input voxels along z, y and x of volume ``index`` (cut to the volume)."""
        volume = self.jobs[index].source.volume
        return tuple(int(min(n, max(1, round(self.region_nm / v)))) for n, v in zip(volume.shape, volume.voxel_size))

    def planes(self, index: int) -> tuple[int, ...]:
        """Axes normal to the planes drawn from volume ``index`` (0 = xy)."""
        volume = self.jobs[index].source.volume
        if volume.is_anisotropic(self.anisotropy_ratio):
            return (0,)
        # xz and yz planes only where the stack is deep enough for half a region
        return (0, 1, 2) if volume.shape[0] * volume.voxel_size[0] >= self.region_nm / 2 else (0,)

    def draw(self, i: int) -> RegionDraw:
        """Region ``i`` of the sequence: volume, plane, position, mirror and turns."""
        rng = np.random.default_rng([self.seed, i])
        index = int(rng.choice(len(self.jobs), p=self._weights))
        axis = int(rng.choice(self.planes(index)))
        shape = self.jobs[index].source.volume.shape
        extent = self.extent(index)
        region = []
        for a, n in enumerate(shape):
            size = 1 if a == axis else extent[a]
            start = int(rng.integers(n - size + 1))
            region.append(slice(start, start + size))
        return RegionDraw(index, axis, tuple(region), bool(rng.random() < 0.5), int(rng.integers(4)))

    def read(self, draw: RegionDraw) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        """The augmented region as a one-slice block of the working grid.

        Returns
        -------
        features : ndarray, shape (1, rows, columns, F)
        raw : ndarray, shape (1, rows, columns)
            Normalised intensities.
        voxel_size : tuple of float
            Working voxel size in nm: ``(normal, rows, columns)``.
        """
        from orgaseg.pipeline.blocks import Block
        from orgaseg.pipeline.tasks import block_halo

        job = self.jobs[draw.volume]
        volume = job.source.volume
        halo = block_halo(job.extractor, job.grid)
        read_region = tuple(slice(max(0, s.start - h), min(n, s.stop + h))
                            for s, h, n in zip(draw.region, halo, volume.shape))
        features, raw, voxel_size, _ = job.working_block(Block(index=draw.volume, region=draw.region,
                                                              read_region=read_region))
        features = orient(np.moveaxis(features, draw.axis, 0)[0], draw.flip, draw.turns)
        raw = orient(np.moveaxis(raw, draw.axis, 0)[0], draw.flip, draw.turns)
        rows, columns = (a for a in range(3) if a != draw.axis)
        if draw.turns % 2:
            rows, columns = columns, rows
        return features[None], raw[None], (voxel_size[draw.axis], voxel_size[rows], voxel_size[columns])


def train_graph_clusterer(
    spec,
    inputs: Sequence,
    output: str | Path,
    *,
    default_k: int,
    k: int | None = None,
    encoder: str | Path | None = None,
    features: str | None = None,
    graphs: int = DEFAULT_GRAPHS,
    preset: str | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    seed: int | None = None,
    workers: int = 0,
    snapshots: int = 0,
    model_options: Mapping[str, Any] | None = None,
    pixel_size: float | str | None = None,
    voxel_size=None,
    key: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Train an SCCS or CS²C clusterer on augmented regions of training volumes; write a JSON checkpoint.

    Parameters
    ----------
    spec : Method
        The method's row (``sccs`` or ``cs2c``; its clusterer is the kind trained).
    inputs : sequence of path, Volume or ndarray
        Training volumes (never the volumes you score on).
    output : str or Path
        The checkpoint (JSON; ``.json`` is the natural suffix).
    default_k : int
        K when ``k`` is None (set by the method row: the papers' 8 for SCCS, 14 for CS²C).
    k : int, optional
        Clusters.
    encoder : str or Path, optional
        A trained encoder checkpoint (``orgaseg train --method his4mae``, ...) whose frozen
        features the graphs are built on; default: the filter bank.
    features : str, optional
        Dense features (default: the method's filter bank; with ``encoder``, ``expand-stride``).
    graphs : int
        Size of the seeded pool of augmented region graphs.
    preset : str, optional
        ``paper`` (6000 steps), ``cpu`` (600, default) or ``tiny`` (300); CS²C trains 5/6 of them.
    steps : int, optional
        Training steps (one graph each), instead of the preset's.
    model_options : mapping, optional
        Options of the feature stage and of the clusterer (``region_nm``, ``superpixel_px``,
        ``adjacency``, ``trace_weight``, ``scales_nm``, ``stride``, ...), as ``--option`` of ``segment``.
    pixel_size : float, "native" or None
        Working pixel size in nm (None: the encoder's, else the method's default, which only coarsens).
    seed : int, optional
        Seeds the regions, their augmentation and the networks (default 0).
    overwrite : bool
        Replace an existing checkpoint.
    device : str
        Where the encoder computes features: ``auto``, ``cpu`` or ``cuda`` (the graph networks of a few
        thousand nodes train on the CPU).
    voxel_size, key
        How to read the inputs (see :func:`orgaseg.open_volume`).
    progress : callable, optional
        Reports each region graph drawn and the training steps.
    minutes, resume, workers, snapshots
        Options of the other trainers this one refuses (see the README).

    Returns
    -------
    dict
        The checkpoint record.
    """
    from orgaseg.features import get_features
    from orgaseg.io import compute_normalization
    from orgaseg.io.partial import write_atomic
    from orgaseg.methods.vit_method import _volumes, checked_preset
    from orgaseg.pipeline.stages import resolve_stages
    from orgaseg.pipeline.tasks import VolumeSource

    started = time.perf_counter()
    _refuse_unsupported(spec.name, resume=resume, minutes=minutes, workers=workers, snapshots=snapshots)
    seed = 0 if seed is None else seed
    output = Path(output)
    if output.exists() and not overwrite:
        raise OrgasegError(f"{output} exists; pass {arg('overwrite')} to replace it")
    check_writable(output)  # before the training, not after it
    preset = checked_preset(spec, preset)
    k = default_k if k is None else int(k)
    if k < 2:
        raise OrgasegError(f"{spec.name} needs K >= 2, got {k}")
    if int(graphs) < 1:
        raise OrgasegError(f"the pool of region graphs must hold at least one graph, got {graphs}")
    if steps is not None and int(steps) < 2:
        raise OrgasegError(f"{spec.name} needs at least 2 training steps, got {steps}")
    options = dict(model_options or {})
    if "preset" in options or "steps" in options:
        own = in_words("preset=, steps=", "--preset, --steps; preset=, steps=")
        raise OrgasegError(f"the preset and the steps have arguments of their own ({own}), not model options")
    volumes = _volumes(inputs, voxel_size, key)
    _refuse_evaluation_volumes(volumes)
    features = features or (ENCODER_FEATURES if encoder is not None else spec.features)
    needs = get_features(features).needs
    if needs is not None and encoder is None:
        raise OrgasegError(f"{features} features need a trained encoder: give its checkpoint as the encoder "
                           f"({in_words('encoder=CKPT', 'orgaseg train --encoder CKPT')})")
    if needs is None and encoder is not None:
        raise OrgasegError(f"{features} features use no encoder; drop the encoder or choose features that use one, "
                           f"e.g. {ENCODER_FEATURES}")
    stages = resolve_stages(spec, model=encoder, features=features, options=options, pixel_size=pixel_size,
                            device=device, unlisted_options=("preset", "steps"))
    clusterer_options = {**stages.clusterer_options, "preset": preset, **({"steps": int(steps)} if steps else {})}
    fit = stages.clusterer.start_fit(k, seed=seed, **clusterer_options)
    jobs = [stages.job(VolumeSource(v), compute_normalization(v, seed=seed, refuse_constant=True)) for v in volumes]
    _refuse_mixed_features(volumes, jobs)
    sampler = RegionSampler(jobs, fit.graph_options.region_nm, seed=seed)
    draws = [sampler.draw(i) for i in range(int(graphs))]
    for i, draw in enumerate(draws, 1):
        fit.add(*sampler.read(draw))
        report(progress, "sampling region graphs", i, len(draws))
    sampled = time.perf_counter()
    clusterer = fit.finish(progress)
    state = clusterer.to_dict()
    own_grids = stages.coarsen_only and all(job.grid is None for job in jobs)  # the default left them alone
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _version(),
        "method": spec.name,
        "preset": preset,
        "k": k,
        "clusterer": state,
        "features": {"name": stages.features.name, "options": _plain(stages.feature_options),
                     "extractor": jobs[0].extractor.config()},
        "encoder": None if encoder is None else {"path": str(Path(encoder).resolve()),
                                                 "sha256": _file_hash(encoder), **stages.encoder.describe()},
        "pixel_size_nm": None if own_grids else stages.pixel_size_nm,
        # the method's default: finer volumes were resampled to it, coarser ones kept theirs (segment does the same)
        "coarsen_only": bool(stages.coarsen_only),
        "training_volumes": [{**volume_record(v), "working_voxel_size": list(
                                  job.grid.working_voxel_size if job.grid is not None else v.voxel_size)}
                             for v, job in zip(volumes, jobs)],
        "normalizations": [job.normalization.to_dict() for job in jobs],
        "sampling": {"graphs": len(draws), "region_nm": sampler.region_nm, "augmentation": "mirror + quarter turns",
                     "nodes": int(sum(r.n for r in fit.regions)), "regions": [d.to_dict() for d in draws]},
        "seed": int(seed),
        "step": int(state["state"]["config"]["steps"]),
        "total_steps": int(state["state"]["config"]["steps"]),
        "final_loss": float(state["state"]["final_loss"]),
        "losses": list(state["state"]["losses"]),
        "sampling_seconds": round(sampled - started, 2),
        "train_seconds": round(time.perf_counter() - started, 2),
        "device": "cpu",
        "encoder_device": stages.device if encoder is not None else None,
    }
    with writing(output):
        write_atomic(output, json.dumps(record))
    return record


def is_graph_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint written by :func:`train_graph_clusterer` (reads its first bytes only)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and f'"format": "{FORMAT}"'.encode() in head


def load_graph_checkpoint(path: str | Path) -> dict:
    """The record of a checkpoint written by :func:`train_graph_clusterer`, checked."""
    path = Path(path)
    if not path.is_file():
        raise OrgasegError(f"checkpoint not found: {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OrgasegError(f"{path}: not a readable graph-clusterer checkpoint ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "clusterer" not in record:
        raise OrgasegError(f"{path}: not a graph-clusterer checkpoint (orgaseg train --method sccs|cs2c)")
    from orgaseg.models.checkpoint import check_format_version

    check_format_version(path, record, FORMAT_VERSION)
    return record


def segment_arguments(checkpoint: str | Path, *, method: str | None, centers=None, features: str | None = None,
                      clusterer: str | None = None, options: Mapping[str, Any] | None = None,
                      pixel_size: float | str | None = None, model=None) -> dict:
    """The stage arguments of :func:`orgaseg.segment` that label a volume with a trained graph clusterer.

    :func:`orgaseg.segment` calls this when its ``model`` is such a checkpoint
    (``orgaseg.segment(volume, method="sccs", model=CKPT)``, ``orgaseg segment --model CKPT``). The
    clusterer is reused as it was trained (``centers=CKPT``: no fitting on the new volume), on the
    checkpoint's features, encoder and working pixel size.

    Parameters
    ----------
    checkpoint : str or Path
        Written by :func:`train_graph_clusterer`.
    method : str or None
        The checkpoint's method, or None (then it is taken).
    centers, features, clusterer
        What the caller asked for besides the checkpoint: ``centers`` is refused, ``features`` and
        ``clusterer`` must be the checkpoint's if given.
    options : mapping, optional
        Stage options over the checkpoint's feature options (e.g. a faster ``stride``).
    pixel_size : float, "native" or None
        Default: the checkpoint's (trained at the method's default, which coarsens only finer volumes: the
        same rule, so a volume as coarse as a training volume left at its own pixel size is too); another
        one works with a warning, as for encoder checkpoints.
    model
        Ignored (the caller's ``model``, i.e. ``checkpoint`` itself).

    Returns
    -------
    dict
        ``method``, ``model`` (the encoder checkpoint or None), ``centers``, ``features``, ``clusterer``,
        ``options`` and ``pixel_size`` for :func:`orgaseg.segment`.
    """
    from orgaseg.methods import METHODS
    from orgaseg.pipeline.stages import resolve_pixel_size

    record = load_graph_checkpoint(checkpoint)
    trained = record["method"]
    kind = record["clusterer"].get("kind")
    if method not in (None, trained):
        raise OrgasegError(f"{checkpoint} is a checkpoint of method {trained!r}, not {method!r}: "
                           f"pass {arg('method', trained)}")
    if centers is not None:
        raise OrgasegError(f"{checkpoint} holds its trained clusterer: give it or a provenance to reuse, not both")
    if features is not None and features != record["features"]["name"]:
        raise OrgasegError(f"{checkpoint} was trained on {record['features']['name']} features, not {features}")
    if clusterer is not None and clusterer != kind and {clusterer, kind} != CS2C_HEADS:
        raise OrgasegError(f"{checkpoint} holds a {kind} clusterer, not {clusterer}")
    encoder = record.get("encoder")
    if encoder is not None:
        path = Path(encoder["path"])
        if not path.is_file():
            raise OrgasegError(f"{checkpoint} was trained on the features of the encoder {path}, which is not there "
                               "any more: put it back (its SHA-256 is in the checkpoint)")
        if _file_hash(path) != encoder["sha256"]:
            raise OrgasegError(f"{path} has changed since {checkpoint} was trained on its features "
                               f"(SHA-256 {encoder['sha256'][:12]}...): retrain the clusterer on the new encoder")
    trained_nm = record.get("pixel_size_nm")
    # trained under the method default's rule (finer volumes coarsened, coarser ones kept): None keeps it
    by_default_rule = record.get("coarsen_only") and trained_nm in (None, METHODS[trained].pixel_size_nm)
    if pixel_size is None and not by_default_rule:
        pixel_size = "native" if trained_nm is None else trained_nm
    elif pixel_size is not None and resolve_pixel_size(pixel_size, None) != trained_nm:
        at = "the training volumes' own pixel size" if trained_nm is None else f"{trained_nm:g} nm"
        warnings.warn(OrgasegWarning(f"{checkpoint} was trained at {at}; segmenting at {pixel_size} shows it "
                                     "other structures than it learned"), stacklevel=2)
    return {"method": trained, "model": None if encoder is None else encoder["path"], "centers": str(checkpoint),
            "features": record["features"]["name"], "clusterer": clusterer or kind,
            "options": {**record["features"]["options"], **dict(options or {})} or None, "pixel_size": pixel_size}


def _refuse_mixed_features(volumes: Sequence[Volume], jobs: Sequence) -> None:
    """Refuse training volumes whose features differ: one clusterer reads one feature set.

    The filter bank is in-plane on serial sections and 3D on near-isotropic grids, and drops scales
    finer than a grid's pixel, so volumes of other voxel sizes can give other channels.
    """
    def described(volume, job) -> str:
        grid = job.grid.working_voxel_size if job.grid is not None else volume.voxel_size
        return f"{volume.path or 'an array'} ({job.extractor.n_features} channels at {format_sizes(grid)} nm)"

    first = jobs[0].extractor.config().get("features", jobs[0].extractor.n_features)
    for volume, job in zip(volumes[1:], jobs[1:]):
        if job.extractor.config().get("features", job.extractor.n_features) != first:
            raise OrgasegError(
                f"the training volumes give different features: {described(volumes[0], jobs[0])} and "
                f"{described(volume, job)}; one clusterer reads one feature set: train on volumes of like voxel "
                f"size and anisotropy, or put them on one grid with {arg('pixel_size')}")


def _refuse_unsupported(name: str, *, resume: bool, minutes, workers: int, snapshots: int) -> None:
    """The options of the encoder trainers that this one does not have, each with the reason."""
    if resume:
        raise OrgasegError(f"{name} training cannot resume: the graph networks train in minutes from a pool drawn "
                           f"at the start and keep no optimiser state; start afresh with {arg('overwrite')}")
    if minutes is not None:
        raise OrgasegError(f"{name} trains a fixed number of steps: give {arg('steps')} or a preset, not minutes")
    if snapshots:
        raise OrgasegError(f"{name} writes one checkpoint at the end; snapshots are for the encoder trainers")
    if workers:
        raise OrgasegError(f"{name} draws its region graphs in this process; {arg('workers')} is for the encoder "
                           "trainers")


def _refuse_evaluation_volumes(volumes: Sequence) -> None:
    """A clear error for a training input that is an evaluation volume of a dataset under the data root."""
    from orgaseg.datasets import DATASETS, default_data_root, load_dataset

    given = {}
    for volume in volumes:
        if volume.path and not str(volume.path).startswith("<") and Path(volume.path).exists():
            given[Path(volume.path).resolve()] = volume.path
            source = volume.path
            for _ in range(8):  # a crop of an evaluation volume is one too, and a crop of that crop
                source = _cropped_from(source)
                if source is None:
                    break
                given[Path(source).resolve()] = f"{volume.path} (a crop of {source})"
    root = default_data_root()
    if not given or not root.is_dir():
        return
    for name in DATASETS:
        if not (root / name).exists():  # only datasets that are there (the phantom has no files)
            continue
        try:
            dataset = load_dataset(name, root)
        except (OrgasegError, OSError, ValueError):
            continue
        for item in dataset.evaluation:
            scored = Path(item.raw.path).resolve()
            for path, shown in given.items():
                if path == scored or scored in path.parents:
                    train = ", ".join(str(v.path) for v in dataset.train)
                    raise OrgasegError(f"{shown} is an evaluation volume of the {name} dataset ({item.name}); "
                                       f"train on its training volumes instead: {train}")


def _cropped_from(path) -> str | None:
    """The volume ``orgaseg crop`` cut ``path`` from, by its provenance record; None for anything else."""
    from orgaseg.io.provenance import read_provenance

    try:
        record = read_provenance(path)
    except (OrgasegError, OSError, ValueError):
        return None
    source = record.get("source") if isinstance(record, dict) and record.get("command") == "crop" else None
    return source if isinstance(source, str) and Path(source).exists() else None


def _plain(options: Mapping[str, Any]) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _file_hash(path: str | Path) -> str:
    from orgaseg.models.checkpoint import file_hash

    return file_hash(path)


def _version() -> str:
    from orgaseg import __version__

    return __version__
