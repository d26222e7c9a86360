"""Costs said up front: how many encoder forward passes a run needs, and how long that takes here.

A learned encoder's forward pass is the expensive part of segmentation
(DESIGN.md, "Performance principles"). Before the first block, the runner
counts the passes the dense-feature strategy needs for the run's blocks (a
block encodes the fields of view that serve its own voxels, reading its halo
as context; each voxel's features are computed for the clusterer's sample and
again for its labels, except those the run keeps in memory between the two
passes),
times one batch of the encoder on this machine, and
reports the expected time; when it is long, it says what expand-stride
would cost instead.
"""

from __future__ import annotations

import logging
import time

import numpy as np

logger = logging.getLogger(__name__)

#: Above this many expected seconds the estimate is a warning, with a faster strategy when there is one.
LONG_S = 600.0

#: Fields of view timed by the probe (after one warm-up batch).
PROBE_BATCH = 16


def forward_passes(extractor, regions) -> int | None:
    """Forward passes ``extractor`` needs to compute ``regions`` (three slices each; None without an encoder).

    Strategies anchored to the volume count the fields of view that serve a
    region, so the sum over a run's blocks includes those that two blocks
    sharing a border both encode.
    """
    count = getattr(extractor, "n_fields_of_view", None)
    if count is None:
        return None
    return sum(int(count(tuple(r.stop - r.start for r in region), tuple(r.start for r in region))) for region in regions)


def seconds_per_pass(extractor) -> float:
    """Seconds per field of view of the extractor's encoder, timed on a small batch of noise.

    The first call of a batch shape allocates and picks its kernels (1.5x
    slower than the next for a tiny MAESTER on CPU), so it is left out; the
    faster of two timed calls is taken (a busy machine slows one more than
    the other).
    """
    import torch

    batch = torch.rand(min(PROBE_BATCH, extractor.batch_size), *extractor.field_of_view_shape,
                       generator=torch.Generator().manual_seed(0)).to(extractor.device)
    elapsed = []
    with torch.inference_mode():
        extractor.encoder(batch)  # warm-up
        for _ in range(2):
            started = time.perf_counter()
            extractor.encoder(batch)
            elapsed.append(time.perf_counter() - started)
    return min(elapsed) / len(batch)


def estimate_cost(stages, job, blocks, *, reuse_bytes: int = 0) -> dict | None:
    """The forward passes and expected seconds of segmenting ``job``'s volume, logged; None without an encoder.

    Parameters
    ----------
    stages : Stages
        The run's stages (to price expand-stride as the alternative).
    job : BlockJob
        The volume's block job.
    blocks : list of Block
        The run's blocks (:func:`~orgaseg.pipeline.runner.plan_blocks`): what
        each one computes (:meth:`~orgaseg.pipeline.tasks.BlockJob.computed_region`)
        is what is counted.
    reuse_bytes : int
        Bytes of features the run keeps from its sampling pass for its
        labelling pass (0 when the labelling pass computes every block again).

    Returns
    -------
    dict or None
        ``forward_passes``, ``seconds_per_pass``, ``expected_s`` and, when
        the run is long and not already expand-stride, ``expand_stride_passes``.
    """
    shape = job.grid.shape if job.grid is not None else job.source.volume.shape
    regions = [job.computed_region(block) for block in blocks]
    once = forward_passes(job.extractor, regions)
    if once is None:
        return None
    kept = min(1.0, reuse_bytes / (4 * job.extractor.n_features * int(np.prod(shape))))
    passes = once + round(once * (1 - kept))  # the labelling pass computes again what was not kept
    per_pass = seconds_per_pass(job.extractor)
    cost = {"forward_passes": passes, "seconds_per_pass": round(per_pass, 6), "expected_s": round(passes * per_pass, 1)}
    message = (f"{stages.features.name} features: about {passes:,} encoder forward passes over "
               f"{int(np.prod(shape)):,} voxels (sampling, then labelling{_reuse(kept)}); at {1 / per_pass:,.0f} per second "
               f"measured here, about {_duration(cost['expected_s'])}")
    if cost["expected_s"] > LONG_S and stages.features.name != "expand-stride" and stages.encoder is not None:
        from orgaseg.features import FEATURES

        voxel_size = job.grid.working_voxel_size if job.grid is not None else job.source.volume.voxel_size
        planes = {k: v for k, v in stages.feature_options.items() if k == "planes"}  # priced on the same planes
        faster = FEATURES["expand-stride"].build(stages.encoder, voxel_size, planes, stages.device)
        cost["expand_stride_passes"] = round(passes / once * forward_passes(faster, regions))
        message += (f"; expand-stride (--features expand-stride) needs about {cost['expand_stride_passes']:,} "
                    f"(about {_duration(cost['expand_stride_passes'] * per_pass)})")
    if cost["expected_s"] > LONG_S:
        message += "; a coarser --pixel-size also divides the work"
        logger.warning(message)
    else:
        logger.info(message)
    return cost


def _reuse(kept: float) -> str:
    if kept >= 1:
        return ", which reuses the features kept in memory"
    return f", which reuses the {kept:.0%} of the features kept in memory" if kept >= 0.01 else ""


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
