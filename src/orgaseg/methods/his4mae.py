"""HiS4MAE and its ``sdae-recon`` ablation: a self-distilled masked autoencoder, expand-stride inference.

The model is :class:`orgaseg.models.distill.DistilledMAE`: MAESTER's masked
autoencoder as the student, an EMA teacher encoder, and (HiS4MAE only) a
codebook of 512 codes with isolated-code revival. Inference uses the teacher's
tokens with expand-stride features (stride 40 for an 80 px field of view).

Training presets (model sizes as MAESTER's, :data:`orgaseg.models.mae.MODEL_PRESETS`):

- ``paper``: MAESTER's encoder and decoder; AdamW lr 5e-4, minimum lr 8e-7,
  cosine schedule after a warm-up, batch 256, an epoch of 20,000 fields of
  view (79 steps). The paper claims MAESTER's quality in a quarter of its
  training; our reading of the budget is 54,688 steps (14 M fields of view,
  a quarter of the ``maester`` paper preset's 56 M: 2,800 epochs of 20,000).
- ``cpu``: the ``cpu`` model, batch 64, lr 1e-3 to 1e-5 as MAESTER's ``cpu``
  preset, an epoch of 20,000 fields of view (313 steps), 4,000 steps.
- ``tiny``: the ``tiny`` model, batch 32, epochs of 20 steps, 300 steps.

Fixed cluster centres: unless told otherwise, k-means++ (seeded, so the same
volume always gives the same segmentation) is fitted on a thousandth of the
voxels, at least 20,000 and at most 1,000,000; the centres are stored in the
provenance and reusable on another volume with ``--centers``.
"""

from __future__ import annotations

import math

from orgaseg.train_config import TrainConfig

#: Fields of view per epoch (isolated codes are revived after each epoch).
EPOCH_SAMPLES = 20_000

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(batch_size=256, lr=5e-4, min_lr=8e-7, weight_decay=0.05, warmup_steps=2_000,
                         steps=54_688, checkpoint_every=2_500),
    "cpu": TrainConfig(batch_size=64, lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_steps=200,
                       steps=4_000, checkpoint_every=250),
    "tiny": TrainConfig(batch_size=32, lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_steps=20,
                        steps=300, checkpoint_every=100),
}


#: Optimiser steps per epoch (isolated codes are revived after each): an epoch of
#: ``EPOCH_SAMPLES`` fields of view, and 20 steps for ``tiny`` so that a short
#: run revives codes several times.
EPOCH_STEPS = {"paper": math.ceil(EPOCH_SAMPLES / 256), "cpu": math.ceil(EPOCH_SAMPLES / 64), "tiny": 20}


def make_model(config, preset: str, saved: dict | None = None, *, codebook_size: int):
    """A :class:`~orgaseg.models.distill.DistilledMAE` for training (``codebook_size`` 0: sdae-recon)."""
    from orgaseg.models.distill import DistillConfig, DistilledMAE

    if saved is not None:
        distill = DistillConfig.from_dict(saved["distill_config"])
    else:
        distill = DistillConfig(codebook_size=codebook_size, epoch_steps=EPOCH_STEPS[preset])
    return DistilledMAE(config, distill), {"encoder": "distilled-mae", "distill_config": distill.to_dict()}
