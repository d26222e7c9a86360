"""A segmentation's dense features, computed again from its provenance record.

Refining (:mod:`orgaseg.organelles.refine`) trains and applies a classifier on
the features a segmentation clustered. They are not stored, so
:func:`rebuild_segmentation` rebuilds the stages that computed them (method,
encoder, features, options, working pixel size, normalisation, blocks) from
the record written beside the segmentation and binds them to the volume that
was segmented, checking that it is that volume; :func:`features_at` then
computes the features at given voxels block by block, as the segmentation did,
optionally with a superpixel and adjacent-slice context appended.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orgaseg.cluster import Clusterer, clusterer_from_dict
from orgaseg.errors import OrgasegError, OrgasegWarning, arg, with_key_option
from orgaseg.features.context import SliceNeighbours, SuperpixelContext, parse_context
from orgaseg.io.metadata import format_sizes
from orgaseg.io.normalize import Normalization, compute_normalization
from orgaseg.io.partial import digest
from orgaseg.io.provenance import to_jsonable
from orgaseg.io.readers import VoxelSizeWarning
from orgaseg.pipeline.blocks import Block
from orgaseg.pipeline.runner import FEATURE_BYTES, plan_blocks
from orgaseg.pipeline.stages import Stages, resolve_stages
from orgaseg.pipeline.tasks import BlockJob, VolumeSource, sample_block
from orgaseg.progress import ProgressCallback, report


@dataclass
class SegmentationJob:
    """A segmentation's stages rebuilt from its provenance, ready to compute features again.

    Attributes
    ----------
    job : BlockJob
        The volume, normalisation, dense features and working grid the segmentation used.
    clusterer : Clusterer
        The fitted clusterer stored in the provenance.
    block_shape : tuple of int
        The segmentation's blocks (features near block borders depend on them), fewer planes deep where a
        block's features with their context would hold more than
        :data:`~orgaseg.pipeline.runner.FEATURE_BYTES` (:func:`thinner_blocks`).
    stages : Stages
        The resolved stages.
    segmentation_blocks : tuple of int
        The segmentation's own blocks: the unannotated voxels of
        :func:`~orgaseg.organelles.refine.sample_unannotated` are drawn from a seeded choice of them, so that
        they do not depend on how thin :attr:`block_shape` is.
    """

    job: BlockJob
    clusterer: Clusterer
    block_shape: tuple[int, int, int]
    stages: Stages
    segmentation_blocks: tuple[int, int, int]

    @property
    def context(self) -> tuple[int, ...]:
        """Superpixel sizes of the features' context (empty: the segmentation's features alone)."""
        extractor = self.job.extractor
        return tuple(extractor.sizes) if isinstance(extractor, (SuperpixelContext, SliceNeighbours)) else ()

    @property
    def z_context(self) -> bool:
        """Whether the features carry their mean on the adjacent slices (:class:`SliceNeighbours`)."""
        return isinstance(self.job.extractor, SliceNeighbours)

    def config(self) -> dict:
        """What the features are: compared before a classifier is applied to another volume."""
        return to_jsonable({**self.stages.config(), "extractor": self.job.extractor.config()})


def rebuild_segmentation(record: dict, *, raw=None, raw_key: str | None = None, model: str | Path | None = None,
                         device: str = "auto", context=(), z_context: bool = False) -> SegmentationJob:
    """The stages of a segmentation from its provenance record, bound to its input volume.

    Parameters
    ----------
    record : dict
        The provenance record written beside the segmentation.
    raw : str, Path, Volume or ndarray, optional
        The volume that was segmented (default: the input path the record names, read as it was then).
    raw_key : str, optional
        Dataset inside ``raw``'s container.
    model : str or Path, optional
        The encoder's checkpoint (default: the path the record names).
    device : str
        Where a learned encoder runs.
    context : str or sequence of int
        Superpixel sizes (working pixels) whose feature means and spreads are
        appended to the segmentation's features
        (:class:`~orgaseg.features.context.SuperpixelContext`); empty: none.
    z_context : bool
        Append the mean of those features on the adjacent z slices
        (:class:`~orgaseg.features.context.SliceNeighbours`).

    Returns
    -------
    SegmentationJob
    """
    from orgaseg.segmentation import resolve_volume

    context = parse_context(context)

    try:
        config, state, source_info = record["config"], record["clusterer"], record["input"]
        block_shape = tuple(int(b) for b in record["blocks"]["shape"])
        normalization = Normalization.from_dict(record["normalization"])
    except (KeyError, TypeError) as err:
        raise OrgasegError(f"the segmentation's provenance lacks {err}; was it written by 'orgaseg segment'?") from None
    data = raw if raw is not None else source_info.get("path")
    if data is None or (isinstance(data, str) and data.startswith("<")):  # "<array>": no path to reopen
        raise OrgasegError("the segmentation was made from an in-memory array, its provenance names no input: "
                           f"pass {arg('raw')}, the volume that was segmented")
    if isinstance(data, (str, Path)) and not Path(data).exists():
        raise OrgasegError(f"{data}: the segmented volume is not there; pass {arg('raw')} to say where it is")
    # read as it was segmented (a channel, an axis order); a raw given instead (a moved copy, or the selected
    # channel saved on its own) is read that way too where it can be, else as it comes
    layout = {n: source_info[n] for n in ("axes", "channel") if source_info.get(n) is not None}
    key = source_info.get("key") if raw is None else raw_key
    selections = [{"key": key, **layout}] if raw is None or not layout else [{"key": key, **layout}, {"key": key}]
    recorded = source_info.get("voxel_size")
    for attempt, selection in enumerate(selections, 1):
        try:
            with warnings.catch_warnings():
                # the recorded voxel size is the one the segmentation used, whatever the file says (said below)
                warnings.simplefilter("ignore", VoxelSizeWarning)
                warnings.filterwarnings("ignore", message=".*: the voxel size given, .* overrides the file's own")
                volume = resolve_volume(data, voxel_size=recorded, **selection)
                # what a raw given instead says of itself, to say when it differs (the recorded input is trusted)
                own = resolve_volume(data, **selection) if raw is not None and isinstance(data, (str, Path)) \
                    else volume
            break
        except OrgasegError as err:
            if attempt == len(selections):
                raise (err if raw is None else with_key_option(err, "raw_key")) from None
    if list(volume.shape) != list(source_info.get("shape", volume.shape)):
        raise OrgasegError(f"{volume.path or 'the raw volume'} has shape {volume.shape}, but the segmentation was made "
                           f"from a volume of shape {tuple(source_info['shape'])}")
    if raw is not None and recorded is not None and not own.attrs.get("voxel_size_assumed") and \
            not np.allclose(own.voxel_size, recorded, rtol=0.01):
        warnings.warn(OrgasegWarning(
            f"{volume.path or 'the raw volume'}: its voxel size, {format_sizes(own.voxel_size)} nm, is not the "
            f"segmented volume's, {format_sizes(recorded)} nm, which is used: is it the volume that was segmented?"),
            stacklevel=3)
    if raw is not None:
        _check_intensities(volume, normalization, seed=int(config.get("seed", 0)))
    if model is None and record.get("model"):
        model = record["model"].get("path")
    options = {**{f"features.{n}": v for n, v in config.get("feature_options", {}).items()},
               **{f"clusterer.{n}": v for n, v in config.get("clusterer_options", {}).items()}}
    if model is not None and not Path(model).exists():
        raise OrgasegError(f"{model}: the segmentation's checkpoint is not there; pass {arg('model')}")
    recorded_sha256 = (record.get("model") or {}).get("sha256")
    if model is not None and recorded_sha256 is not None:
        from orgaseg.models.checkpoint import file_hash

        if file_hash(model) != recorded_sha256:  # another encoder's features: the clusters and classifier read others
            raise OrgasegError(f"{model} is not the checkpoint the segmentation was made with (SHA-256 "
                               f"{recorded_sha256[:12]}..., recorded with {record['model'].get('path')}): pass "
                               "that one")
    stages = resolve_stages(config["method"], model=model, features=config["features"], clusterer=config["clusterer"],
                            options=options, device=device)
    source = VolumeSource.from_arguments(data, volume, **selection)
    # the working pixel size as the user asked for it is not recorded, only what it gave: find the
    # setting that gives the same working grid and extractor (a method's default, a number, native)
    wanted = digest({"grid": config.get("working_grid"), "extractor": config.get("extractor")})
    for pixel_size_nm, coarsen_only in ((stages.pixel_size_nm, stages.coarsen_only),
                                        (config.get("pixel_size_nm"), False), (None, False)):
        candidate = dataclasses.replace(stages, pixel_size_nm=pixel_size_nm, coarsen_only=coarsen_only)
        job = candidate.job(source, normalization)
        found = {"grid": job.grid.describe() if job.grid is not None else None, "extractor": job.extractor.config()}
        if digest(found) == wanted:
            if context:
                job = dataclasses.replace(job, extractor=SuperpixelContext(job.extractor, context))
            if z_context:
                job = dataclasses.replace(job, extractor=SliceNeighbours(job.extractor))
            return SegmentationJob(job, clusterer_from_dict(state), thinner_blocks(job, block_shape), candidate,
                                   block_shape)
    raise OrgasegError("cannot rebuild the segmentation's features from its provenance: the working grid or the "
                       "features differ (was it made with another version of orgaseg?)")


def _check_intensities(volume, recorded: Normalization, *, seed: int) -> None:
    """Warn when ``volume``'s intensity range is not the one recorded when it was segmented.

    Where no metadata places a volume or gives its voxel size (a TIFF, an array), its intensities are what
    tells another volume of the same shape from the segmented one: the same seeded sample of the same
    voxels gives the same percentiles, so a difference of more than 1% of the recorded range means other
    data (or the same data in other units, which the recorded range would misread alike).
    """
    with warnings.catch_warnings():  # what the sample says of itself (NaN, a constant) was said when segmenting
        warnings.simplefilter("ignore")
        own = compute_normalization(volume, seed=seed, invert=recorded.invert)
    tolerance = 0.01 * max(abs(recorded.high - recorded.low), np.finfo(np.float32).tiny)
    if abs(own.low - recorded.low) > tolerance or abs(own.high - recorded.high) > tolerance:
        warnings.warn(OrgasegWarning(
            f"{volume.path or 'the raw volume'}: its intensities span {own.low:.6g} to {own.high:.6g} (percentiles "
            f"0.5 and 99.5), the segmented volume's {recorded.low:.6g} to {recorded.high:.6g}, which are used: is it "
            "the volume that was segmented?"), stacklevel=4)


def thinner_blocks(job: BlockJob, block_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """``block_shape`` with as many planes as keep a block's features within ``FEATURE_BYTES`` (at least one).

    The segmentation's blocks hold that much of its own features; the context multiplies the channels five
    to ten times. Fewer planes change no feature: the superpixels are cut on each plane's ``(y, x)`` window,
    which stays the block's, and a block reads its halo along z as before (blockwise equals whole).
    """
    plane = float(np.prod(block_shape[1:]))
    if job.grid is not None:  # features are computed, and kept, on the working grid
        plane /= job.grid.factors[1] * job.grid.factors[2]
    planes = max(1, int(FEATURE_BYTES // (4 * job.extractor.n_features * plane)))
    if job.grid is not None and job.grid.factors[0] != 1.0:
        # an isotropic volume's z is resampled too: p input planes interpolate from at most (p - 1) / r + 2 working ones
        planes = max(1, int((planes - 2) * job.grid.factors[0]) + 1)
    return (min(int(block_shape[0]), planes),) + tuple(int(b) for b in block_shape[1:])


def features_at(segmentation: SegmentationJob, coords: np.ndarray,
                progress: ProgressCallback | None = None) -> np.ndarray:
    """The dense features at voxel ``coords`` ``(n, 3)``, computed block by block as the segmentation did
    (``progress``: per block that holds some, ``features of the annotated voxels``)."""
    coords = np.asarray(coords, dtype=np.int64)
    job = segmentation.job
    out = np.zeros((len(coords), job.extractor.n_features), dtype=np.float32)
    holding = blocks_holding(segmentation, coords)
    report(progress, "features of the annotated voxels", 0, len(holding))
    for done, (block, rows) in enumerate(holding, 1):
        out[rows] = sample_block(job, block, coords[rows] - [r.start for r in block.region]).value
        report(progress, "features of the annotated voxels", done, len(holding))
    return out


def blocks_holding(segmentation: SegmentationJob, coords: np.ndarray) -> list[tuple[Block, np.ndarray]]:
    """The blocks of ``segmentation`` (its :attr:`~SegmentationJob.block_shape`) that hold some of voxel
    ``coords`` ``(n, 3)``, each with the rows of those it holds."""
    holding = []
    for block in plan_blocks(segmentation.job, segmentation.block_shape):
        inside = np.all((coords >= [r.start for r in block.region]) & (coords < [r.stop for r in block.region]), axis=1)
        if inside.any():
            holding.append((block, np.flatnonzero(inside)))
    return holding




__all__ = ["SegmentationJob", "blocks_holding", "features_at", "rebuild_segmentation", "thinner_blocks"]
