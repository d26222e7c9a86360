"""What the ViT methods share: training a masked model, loading it, its dense-feature strategies.

A ViT method (MAESTER, HiS4MAE, sdae-recon) is a :class:`ViTMethodSpec`: a
name, training presets, a model factory and a default dense-feature strategy.
:func:`register_vit_method` turns it into a registered
:class:`~orgaseg.methods.registry.Method`. Every ViT method can use every
strategy (``--features cover-stride | stride-only | expand-stride``).

Inputs are standardised by the mean and standard deviation of a sample of
training fields of view (stored in the model config).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from orgaseg.errors import OrgasegError
from orgaseg.io import compute_normalization, open_volume
from orgaseg.io.volume import Volume
from orgaseg.methods.registry import Method, register
from orgaseg.progress import ProgressCallback
from orgaseg.training import TrainConfig

#: Dense-feature strategies of ViT methods (``--features``).
FEATURE_STRATEGIES = ("cover-stride", "stride-only", "expand-stride")

_SPECS: dict[str, "ViTMethodSpec"] = {}


@dataclass(frozen=True)
class ViTMethodSpec:
    """A ViT method.

    Attributes
    ----------
    name : str
        The method name (``--method``); checkpoints record it.
    train_presets : dict of str to TrainConfig
        Optimisation per preset; the model size is
        :data:`orgaseg.models.mae.MODEL_PRESETS` of the same name.
    make_model : callable
        ``make_model(config, preset, saved)`` returns ``(model, record)``:
        the model for an :class:`~orgaseg.models.mae.MAEConfig` and what the
        checkpoint must store to rebuild it besides ``model_config``;
        ``saved`` is that record when rebuilding from a checkpoint, else None.
        The model has ``encode(fovs) -> tokens (B, G, G, D)``.
    default_features : str
        The dense-feature strategy used unless ``features`` is given.
    sample_size : callable, optional
        ``sample_size(n_voxels)``: the default k-means sample (see
        :class:`~orgaseg.methods.registry.Method`); None for the registry's default.
    """

    name: str
    train_presets: Mapping[str, TrainConfig]
    make_model: Callable[..., tuple[Any, dict]]
    default_features: str = "cover-stride"
    sample_size: Callable[[int], int] | None = None


def _volumes(inputs: Sequence, voxel_size=None, key=None) -> list[Volume]:
    volumes = [v if isinstance(v, Volume) else open_volume(v, key=key, voxel_size=voxel_size) for v in inputs]
    if not volumes:
        raise OrgasegError("give at least one training volume")
    return volumes


def train_vit(
    spec: ViTMethodSpec,
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
    snapshots: int = 0,
    model_options: Mapping[str, Any] | None = None,
    voxel_size=None,
    key: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Train a ViT method's model on volumes; write a checkpoint.

    Parameters
    ----------
    spec : ViTMethodSpec
        The method.
    inputs : sequence of path or Volume
        Training volumes.
    output : str or Path
        Checkpoint file.
    preset : str, optional
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
    snapshots : int
        Keep this many checkpoints along the schedule (see :func:`orgaseg.training.run_training`).
    model_options : mapping, optional
        Fields of the preset's :class:`~orgaseg.models.mae.MAEConfig` to replace
        (an ablation, e.g. ``{"norm_pix_loss": False}``); the checkpoint stores
        the resulting config, so loading needs nothing else. Not with ``resume``.
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
    from orgaseg.models.mae import MAEConfig, model_preset
    from orgaseg.sampling import FieldOfViewSampler
    from orgaseg.training import run_training

    output = Path(output)
    volumes = _volumes(inputs, voxel_size, key)
    state: dict = {}
    if resume and model_options:
        raise OrgasegError("model options cannot change on --resume: the checkpoint holds the model's config")
    if resume:
        state = load_checkpoint(output, method=spec.name)
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
        if preset not in spec.train_presets:
            raise OrgasegError(
                f"unknown preset {preset!r} for {spec.name}; choose one of {', '.join(spec.train_presets)}"
            )
        config = model_preset(preset).with_overrides(model_options or {})
        train_config = spec.train_presets[preset]
    normalizations = [compute_normalization(v, seed=seed) for v in volumes]
    sampler = FieldOfViewSampler(volumes, normalizations, fov=config.img_size, seed=seed)
    if not resume:
        # the model's input standardisation, from a sample of training fields of view
        probe = sampler.batch(0, 256)
        config = dataclasses.replace(config, input_mean=float(probe.mean()), input_std=max(float(probe.std()), 1e-3))
    torch.manual_seed(seed)
    model, model_record = spec.make_model(config, preset, state if resume else None)
    if resume:
        model.load_state_dict(state["state_dict"])
    record = {
        "method": spec.name,
        "preset": preset,
        "model_config": config.to_dict(),
        **model_record,
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
        snapshots=snapshots,
    )


def load_vit(spec: ViTMethodSpec, checkpoint: str | Path, device: str = "cpu"):
    """The trained model of a checkpoint, in evaluation mode on ``device``, and the checkpoint record."""
    from orgaseg.models.checkpoint import load_checkpoint
    from orgaseg.models.mae import MAEConfig
    from orgaseg.training import resolve_device

    record = load_checkpoint(checkpoint, method=spec.name)
    model, _ = spec.make_model(MAEConfig.from_dict(record["model_config"]), record["preset"], record)
    model.load_state_dict(record["state_dict"])
    model.to(resolve_device(device)).eval()
    return model, record


def build_vit_features(spec: ViTMethodSpec, volume: Volume, checkpoint, options: dict | None = None,
                       device: str = "auto"):
    """Dense per-pixel tokens of a trained ViT method's encoder.

    Options: ``features`` (``cover-stride``, ``stride-only`` or
    ``expand-stride``; default the method's), ``keep`` (cover-stride: central
    tokens kept per side, default 4), ``stride`` (expand-stride: pixels
    between fields of view, default half the field of view), ``batch_size``.
    """
    from orgaseg.features.cover_stride import CoverStride, StrideOnly
    from orgaseg.features.expand_stride import ExpandStride
    from orgaseg.training import resolve_device

    options = dict(options or {})
    strategy = options.pop("features", None) or spec.default_features
    keep = options.pop("keep", None)
    stride = options.pop("stride", None)
    batch_size = int(options.pop("batch_size", 256))
    if options:
        raise OrgasegError(f"unknown option(s) for {spec.name}: {', '.join(sorted(options))}")
    if strategy not in FEATURE_STRATEGIES:
        raise OrgasegError(f"unknown feature strategy {strategy!r}; use one of {', '.join(FEATURE_STRATEGIES)}")
    if keep is not None and strategy != "cover-stride":
        raise OrgasegError(f"--keep applies to cover-stride features, not {strategy}")
    if stride is not None and strategy != "expand-stride":
        raise OrgasegError(f"--stride applies to expand-stride features, not {strategy}")
    torch_device = resolve_device(device)
    model, _ = load_vit(spec, checkpoint, torch_device.type)
    config = model.config
    common = dict(fov=config.img_size, patch=config.patch_size, n_features=config.embed_dim,
                  batch_size=batch_size, device=torch_device.type)
    if strategy == "cover-stride":
        return CoverStride(model.encode, keep=None if keep is None else int(keep), **common)
    if strategy == "stride-only":
        return StrideOnly(model.encode, **common)
    return ExpandStride(model.encode, stride=None if stride is None else int(stride), **common)


def load_trained(checkpoint: str | Path, device: str = "cpu"):
    """:func:`load_vit` for whichever ViT method the checkpoint was trained for."""
    from orgaseg.methods.registry import get_method
    from orgaseg.models.checkpoint import load_checkpoint

    name = load_checkpoint(checkpoint).get("method")
    get_method(str(name))  # registers the built-in methods; an unknown name is a clear error
    if name not in _SPECS:
        raise OrgasegError(f"{checkpoint} is a checkpoint of {name!r}, which is not a ViT method")
    return load_vit(_SPECS[name], checkpoint, device)


def register_vit_method(spec: ViTMethodSpec, summary: str) -> Method:
    """Register ``spec`` as a method (``orgaseg segment/train/benchmark --method NAME``)."""
    _SPECS[spec.name] = spec
    return register(
        Method(
            name=spec.name,
            summary=summary,
            learns=True,
            build_features=functools.partial(build_vit_features, spec),
            presets=tuple(spec.train_presets),
            train=functools.partial(train_vit, spec),
            **({"sample_size": spec.sample_size} if spec.sample_size is not None else {}),
        )
    )
