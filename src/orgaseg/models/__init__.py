"""Neural encoders: ViT building blocks and the MAESTER masked autoencoder."""

from __future__ import annotations

from orgaseg.models.mae import MODEL_PRESETS, MAEConfig, MaskedAutoencoder, model_preset
from orgaseg.models.vit import (
    Attention,
    Block,
    Mlp,
    PatchEmbed,
    ViTEncoder,
    init_weights,
    sincos_pos_embed_2d,
)

__all__ = [
    "MODEL_PRESETS",
    "Attention",
    "Block",
    "MAEConfig",
    "MaskedAutoencoder",
    "Mlp",
    "PatchEmbed",
    "ViTEncoder",
    "init_weights",
    "model_preset",
    "sincos_pos_embed_2d",
]
