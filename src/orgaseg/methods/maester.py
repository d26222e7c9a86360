"""MAESTER (Xie et al., CVPR 2023): a ViT masked autoencoder, cover-and-stride tokens, k-means.

Training presets (the model sizes are :data:`orgaseg.models.mae.MODEL_PRESETS`):

- ``paper``: the paper's ViT (192 wide, 14 deep, 1 head) and decoder, as the
  reference code trains it (bowang-lab/MAESTER ``configs/default.yaml``,
  ``pretrain_engine.py``, ``dataset.py``, ``scripts/slurm_run.sh``): AdamW at a
  constant lr 1.5e-4 (no warm-up, no decay), betas (0.9, 0.999), weight decay
  1e-5, batch 128 (32 on each of 4 GPUs), 2,800 epochs of 20,000 fields of
  view: 56 M fields of view, 437,500 steps.
- ``cpu``: encoder 128 wide, 6 deep, 4 heads; decoder 64 wide, 2 deep (0.9 M
  parameters), per-patch normalised pixel loss, AdamW peak lr 1e-3 with a
  200-step warm-up and cosine decay, weight decay 0.05, batch 64, 4,000 steps
  (about 30-40 minutes on 2 CPU cores).
- ``tiny``: 29 k parameters, for tests and the demo (300 steps in about 20 s).
"""

from __future__ import annotations

from orgaseg.train_config import TrainConfig

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(batch_size=128, lr=1.5e-4, min_lr=1.5e-4, weight_decay=1e-5, warmup_steps=0,
                         steps=437_500, betas=(0.9, 0.999), checkpoint_every=5_000),
    "cpu": TrainConfig(batch_size=64, lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_steps=200,
                       steps=4_000, checkpoint_every=250),
    "tiny": TrainConfig(batch_size=32, lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_steps=20,
                        steps=300, checkpoint_every=100),
}


def make_model(config, preset: str, saved: dict | None = None):
    """A :class:`~orgaseg.models.mae.MaskedAutoencoder` for training; it needs nothing besides its config."""
    from orgaseg.models.mae import MaskedAutoencoder

    return MaskedAutoencoder(config), {"encoder": "mae"}
