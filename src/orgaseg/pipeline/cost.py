"""Costs said up front: how many encoder forward passes a run needs, and how long that takes here.

A learned encoder's forward pass is the expensive part of segmentation
(DESIGN.md, "Performance principles"). Before the first block, the runner
counts the passes the dense-feature strategy needs for the run's blocks (a
block encodes the fields of view that serve its own voxels, reading its halo
as context; each voxel's features are computed for the clusterer's sample and
again for its labels, except those the run keeps in memory between the two
passes), and times the strategy on a piece of the run's first block: the
encoder at the batch size the run uses, with what the strategy does around it
(upsampling and blending, plane transposes, resampling from the working
grid), per forward pass. When the expected time is long, it warns, and says
what expand-stride would cost instead. The clustering itself is not priced
(k-means' assignments cost little beside an encoder).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from orgaseg.errors import OrgasegWarning, in_words
from orgaseg.io.metadata import format_sizes
from orgaseg.pipeline.blocks import Block, block_reading_halo

logger = logging.getLogger(__name__)

#: Above this many expected seconds the estimate is a warning, with a faster strategy when there is one.
LONG_S = 600.0

#: Encoder batches the timed piece of a block needs at most. It needs at least one full batch per plane (plane
#: fusion encodes each plane in batches of its own): the batch size changes the rate (on this project's CPU a
#: batch of 256 fields of view of MAESTER's ``cpu`` encoder ran at 0.66x the rate of one of 16, hand-run).
PROBE_BATCHES = 4

#: Beyond that, the timed piece's share of a long run's forward passes.
PROBE_SHARE = 0.02

#: The timed piece's share of a short run's forward passes at most, so that its estimate does not make it much longer.
PROBE_SHARE_MAX = 0.25


def encoding_strategy(extractor):
    """The strategy inside ``extractor`` that runs the encoder: a refine's context (superpixel means, the
    adjacent slices) wraps the segmentation's strategy as its ``extractor``."""
    while not hasattr(extractor, "n_fields_of_view") and hasattr(extractor, "extractor"):
        extractor = extractor.extractor
    return extractor


def forward_passes(extractor, regions) -> int | None:
    """Forward passes ``extractor`` needs to compute ``regions`` (three slices each; None without an encoder).

    Strategies anchored to the volume count the fields of view that serve a
    region, so the sum over a run's blocks includes those that two blocks
    sharing a border both encode. Under a context wrapper the count covers the
    region with the wrapper's halo, more than the wrapped strategy may compute.
    """
    count = getattr(encoding_strategy(extractor), "n_fields_of_view", None)
    if count is None:
        return None
    return sum(int(count(tuple(r.stop - r.start for r in region), tuple(r.start for r in region))) for region in regions)


def probe_block(job, block: Block, passes: int) -> Block:
    """The largest piece of ``block`` from its first corner (every side scaled alike) needing at most ``passes``.

    Never smaller than one voxel a side; the piece reads the same halo as the
    run's blocks (:func:`~orgaseg.pipeline.tasks.block_halo`).
    """
    from orgaseg.pipeline.tasks import block_halo

    shape, halo = job.source.volume.shape, block_halo(job.extractor, job.grid)

    def piece(scale: float) -> Block:
        region = tuple(slice(r.start, r.start + max(1, round((r.stop - r.start) * scale))) for r in block.region)
        return block_reading_halo(block.index, region, shape, halo)

    def needs(candidate: Block) -> int:
        return forward_passes(job.extractor, [job.computed_region(candidate)])

    if needs(block) <= passes:
        return block
    low, high = 0.0, 1.0
    for _ in range(16):  # a scale within 1/65,536 of the largest that fits
        middle = (low + high) / 2
        low, high = (middle, high) if needs(piece(middle)) <= passes else (low, middle)
    return piece(low)


def probe_passes(extractor, once: int) -> int:
    """Forward passes to time for a run that needs ``once`` (see :data:`PROBE_BATCHES`)."""
    extractor = encoding_strategy(extractor)
    batch = int(extractor.batch_size)
    planes = len(getattr(extractor, "planes", ())) or 1
    wanted = min(PROBE_BATCHES * batch, max(planes * batch, round(once * PROBE_SHARE)))
    return max(1, min(wanted, int(once * PROBE_SHARE_MAX)))


def time_features(job, block: Block) -> float:
    """Seconds that ``job``'s features of ``block`` take (once: the first call of a batch shape allocates for it,
    as it does in the run)."""
    started = time.perf_counter()
    job.features(block)
    return time.perf_counter() - started


def estimate_cost(stages, job, blocks, *, reuse_bytes: int = 0, sampling: bool = True, training=None,
                  done: int = 0) -> dict | None:
    """The forward passes and expected seconds of segmenting ``job``'s volume, logged; None without an encoder.

    Parameters
    ----------
    stages : Stages
        The run's stages (to price expand-stride as the alternative).
    job : BlockJob
        The volume's block job.
    blocks : list of Block
        The blocks the run labels (:func:`~orgaseg.pipeline.runner.plan_blocks`,
        less those a resumed run finds done): what each one computes
        (:meth:`~orgaseg.pipeline.tasks.BlockJob.computed_region`) is what is
        counted; a piece of the first is timed. None left: nothing to estimate.
    reuse_bytes : int
        Bytes of features the run keeps from its sampling pass for its
        labelling pass (0 when the labelling pass computes every block again).
    sampling : bool
        Whether the run samples the blocks to fit its clusterer first (not with
        a reused clusterer, nor on resuming one an earlier run fitted).
    training : list of Block, optional
        Instead of sampling, the blocks whose features train a classifier
        first (``orgaseg name --refine``: those holding annotated voxels).
    done : int
        Blocks an earlier run finished (said in the message).

    Returns
    -------
    dict or None
        ``forward_passes``, ``seconds_per_pass`` (the strategy's time per
        forward pass, the encoder's and the rest's), ``expected_s`` and, when
        the run is long and not already expand-stride, ``expand_stride_passes``.
    """
    shape = job.grid.shape if job.grid is not None else job.source.volume.shape
    regions = [job.computed_region(block) for block in blocks]
    once = forward_passes(job.extractor, regions)
    if once is None or not blocks:
        return None
    first = blocks if sampling and training is None else training or []
    share = sum(b.size for b in first) / sum(b.size for b in blocks)  # of the volume's features
    kept = min(1.0, reuse_bytes / (4 * job.extractor.n_features * int(np.prod(shape)) * share)) if first else 0.0
    first_once = once if first is blocks else forward_passes(job.extractor, [job.computed_region(b) for b in first])
    repeats = 1 + (1 - kept) * first_once / once  # the labelling pass computes again what was not kept
    passes = round(once * repeats)
    piece = probe_block(job, blocks[0], probe_passes(job.extractor, once))
    per_pass = time_features(job, piece) / max(1, forward_passes(job.extractor, [job.computed_region(piece)]))
    expected = passes * per_pass
    cost = {"forward_passes": passes, "seconds_per_pass": round(per_pass, 6), "expected_s": round(expected, 1)}
    voxels = (f"{int(np.prod(shape)):,} voxels" if job.grid is None else
              f"{int(np.prod(shape)):,} working voxels of {format_sizes(job.grid.working_voxel_size)} nm")
    passes_over = (f"training on {len(first)} block{'s' * (len(first) != 1)}, then labelling{_reuse(kept)}"
                   if training else
                   f"sampling, then labelling{_reuse(kept)}" if first else
                   f"labelling the {len(blocks)} blocks not done, {done} done before" if done else "labelling")
    message = (f"{stages.features.name} features: about {passes:,} encoder forward passes over "
               f"{voxels} ({passes_over}); at {_rate(per_pass)} per second with the rest of the strategy, "
               f"timed on a piece of the volume here: {_duration(expected)}")
    # the alternatives are the segmentation's to choose: a refine computes the features its segmentation did
    alternatives = training is None
    if expected > LONG_S and alternatives and stages.features.name != "expand-stride" and stages.encoder is not None:
        from orgaseg.features import FEATURES

        voxel_size = job.grid.working_voxel_size if job.grid is not None else job.source.volume.voxel_size
        planes = {k: v for k, v in stages.feature_options.items() if k == "planes"}  # priced on the same planes
        faster = FEATURES["expand-stride"].build(stages.encoder, voxel_size, planes, stages.device)
        cost["expand_stride_passes"] = round(repeats * forward_passes(faster, regions))
        named = in_words("features='expand-stride'", "--features expand-stride")
        message += (f"; expand-stride ({named}) needs about {cost['expand_stride_passes']:,} "
                    f"({_duration(cost['expand_stride_passes'] * per_pass)} at this rate)")
    if expected > LONG_S:  # a warning, said as the others are (the command line prefixes 'warning:')
        pixel_size = in_words("pixel_size=", "--pixel-size")
        message += f"; a coarser {pixel_size} also divides the work" if alternatives else ""
        warnings.warn(OrgasegWarning(message), stacklevel=3)
    else:
        logger.info(message)
    return cost


def _rate(seconds_per_pass: float) -> str:
    return f"{1 / seconds_per_pass:,.0f}" if seconds_per_pass > 0 else "too many to time"


def _reuse(kept: float) -> str:
    if kept >= 1:
        return ", which reuses the features kept in memory"
    return f", which reuses the {kept:.0%} of the features kept in memory" if kept >= 0.01 else ""


def _duration(seconds: float) -> str:
    """``about 5 min``, or ``under 1 s``."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
