"""MAESTER (Xie et al., CVPR 2023): a ViT masked autoencoder, cover-and-stride tokens, k-means.

Training presets (the model sizes are :data:`orgaseg.models.mae.MODEL_PRESETS`):

- ``paper``: the paper's ViT (192 wide, 14 deep, 1 head) and decoder, AdamW
  lr 1.5e-4, weight decay 1e-5, batch 128. The paper does not give its step
  count; 400,000 steps is our reading of its budget.
- ``cpu``: encoder 128 wide, 6 deep, 4 heads; decoder 64 wide, 2 deep (0.9 M
  parameters), per-patch normalised pixel loss, AdamW peak lr 1e-3 with a
  200-step warm-up and cosine decay, weight decay 0.05, batch 64, 4,000 steps
  (about 30-40 minutes on 2 CPU cores).
- ``tiny``: 29 k parameters, for tests and the demo (300 steps in about 20 s).

Inputs are standardised by the mean and standard deviation of a sample of
training fields of view (stored in the model config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from orgaseg.errors import OrgasegError
from orgaseg.io import compute_normalization, open_volume
from orgaseg.io.volume import Volume
from orgaseg.methods.registry import Method, register
from orgaseg.progress import ProgressCallback
from orgaseg.training import TrainConfig

METHOD = "maester"

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(batch_size=128, lr=1.5e-4, min_lr=1e-6, weight_decay=1e-5, warmup_steps=2_000,
                         steps=400_000, checkpoint_every=5_000),
    "cpu": TrainConfig(batch_size=64, lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_steps=200,
                       steps=4_000, checkpoint_every=250),
    "tiny": TrainConfig(batch_size=32, lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_steps=20,
                        steps=300, checkpoint_every=100),
}


def _volumes(inputs: Sequence, voxel_size=None, key=None) -> list[Volume]:
    volumes = [v if isinstance(v, Volume) else open_volume(v, key=key, voxel_size=voxel_size) for v in inputs]
    if not volumes:
        raise OrgasegError("give at least one training volume")
    return volumes


def train_maester(
    inputs: Sequence,
    output: str | Path,
    *,
    preset: str | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    seed: int = 0,
    workers: int = 0,
    voxel_size=None,
    key: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Train a MAESTER masked autoencoder on volumes; write a checkpoint.

    Parameters
    ----------
    inputs : sequence of path or Volume
        Training volumes.
    output : str or Path
        Checkpoint file.
    preset : {"paper", "cpu", "tiny"}, optional
        Model and optimisation preset (default ``cpu``; on resume, the checkpoint's).
    steps : int, optional
        Schedule length (default: the preset's, or what fits in ``minutes``).
    minutes : float, optional
        Wall-clock budget.
    resume : bool
        Continue the checkpoint at ``output`` exactly where it stopped.
    overwrite : bool
        Start afresh even if ``output`` exists.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    seed : int
        Seed of initialisation, batches and masks.
    workers : int
        Data-loader worker processes.
    voxel_size, key
        How to read the inputs (see :func:`orgaseg.open_volume`).
    progress : callable, optional
        Progress callback.

    Returns
    -------
    dict
        The final checkpoint record.
    """
    import torch

    from orgaseg.models.checkpoint import load_checkpoint
    from orgaseg.models.mae import MAEConfig, MaskedAutoencoder, model_preset
    from orgaseg.sampling import FieldOfViewSampler
    from orgaseg.training import run_training

    output = Path(output)
    volumes = _volumes(inputs, voxel_size, key)
    state = {}
    if resume:
        state = load_checkpoint(output, method=METHOD)
        if preset is not None and preset != state["preset"]:
            raise OrgasegError(f"{output} was trained with preset {state['preset']!r}, not {preset!r}")
        preset = state["preset"]
        config = MAEConfig.from_dict(state["model_config"])
        train_config = TrainConfig.from_dict(state["train_config"])
        seed = state["seed"]
    else:
        if output.exists() and not overwrite:
            raise OrgasegError(f"{output} exists; pass --resume to continue it or --overwrite to start afresh")
        preset = preset or "cpu"
        if preset not in TRAIN_PRESETS:
            raise OrgasegError(f"unknown preset {preset!r} for {METHOD}; choose one of {', '.join(TRAIN_PRESETS)}")
        config = model_preset(preset)
        train_config = TRAIN_PRESETS[preset]
    normalizations = [compute_normalization(v, seed=seed) for v in volumes]
    sampler = FieldOfViewSampler(volumes, normalizations, fov=config.img_size, seed=seed)
    if not resume:
        # the model's input standardisation, from a sample of training fields of view
        probe = sampler.batch(0, 256)
        config = dataclasses.replace(config, input_mean=float(probe.mean()), input_std=max(float(probe.std()), 1e-3))
    torch.manual_seed(seed)
    model = MaskedAutoencoder(config)
    if resume:
        model.load_state_dict(state["state_dict"])
    record = {
        "method": METHOD,
        "preset": preset,
        "model_config": config.to_dict(),
        "normalizations": [n.to_dict() for n in normalizations],
        "training_volumes": [{"path": v.path, "key": v.key, "shape": list(v.shape), "voxel_size": list(v.voxel_size)}
                             for v in volumes],
        "n_parameters": model.n_parameters(),
    }
    total = steps if steps is not None else (state.get("total_steps") if resume else None)
    return run_training(
        model,
        sampler,
        config=train_config,
        output=output,
        record=record,
        start_step=state.get("step", 0),
        total_steps=total,
        minutes=minutes,
        losses=state.get("losses"),
        optimizer_state=state.get("optimizer"),
        elapsed=state.get("train_seconds", 0.0),
        device=device,
        seed=seed,
        workers=workers,
        progress=progress,
    )


def load_maester(checkpoint: str | Path, device: str = "cpu"):
    """The trained masked autoencoder of a checkpoint, in evaluation mode, and its record."""
    from orgaseg.models.checkpoint import load_checkpoint
    from orgaseg.models.mae import MAEConfig, MaskedAutoencoder
    from orgaseg.training import resolve_device

    record = load_checkpoint(checkpoint, method=METHOD)
    model = MaskedAutoencoder(MAEConfig.from_dict(record["model_config"]))
    model.load_state_dict(record["state_dict"])
    model.to(resolve_device(device)).eval()
    return model, record


def build_maester_features(volume: Volume, checkpoint, options: dict | None = None, device: str = "auto"):
    """Cover-and-stride (default) or stride-only tokens of a trained MAESTER encoder.

    Options: ``features`` (``cover-stride`` or ``stride-only``), ``keep``
    (central tokens kept per side, default 4), ``batch_size``.
    """
    from orgaseg.features.cover_stride import CoverStride, StrideOnly
    from orgaseg.training import resolve_device

    options = dict(options or {})
    strategy = options.pop("features", "cover-stride")
    keep = int(options.pop("keep", 4))
    batch_size = int(options.pop("batch_size", 256))
    if options:
        raise OrgasegError(f"unknown option(s) for {METHOD}: {', '.join(sorted(options))}")
    torch_device = resolve_device(device)
    model, record = load_maester(checkpoint, torch_device.type)
    config = model.config
    common = dict(fov=config.img_size, patch=config.patch_size, n_features=config.embed_dim,
                  batch_size=batch_size, device=torch_device.type)
    if strategy == "cover-stride":
        return CoverStride(model.encode, keep=keep, **common)
    if strategy == "stride-only":
        return StrideOnly(model.encode, **common)
    raise OrgasegError(f"unknown feature strategy {strategy!r} for {METHOD}; use cover-stride or stride-only")


MAESTER = register(
    Method(
        name=METHOD,
        summary="ViT masked autoencoder on 5 px patches in 80 px fields of view; cover-and-stride tokens + k-means",
        learns=True,
        build_features=build_maester_features,
        presets=tuple(TRAIN_PRESETS),
        train=train_maester,
    )
)
