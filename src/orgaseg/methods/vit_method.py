"""Training the masked models of the ViT methods (MAESTER, HiS4MAE, sdae-recon).

A method's row in :data:`orgaseg.methods.table.METHODS` gives its training
presets and model factory; :func:`train_vit` trains that model on random
fields of view of the training volumes, optionally resampled to a working
pixel size (:mod:`orgaseg.pipeline.resample`), and writes one checkpoint that
rebuilds the encoder (:func:`orgaseg.models.encoder.load_encoder`).

Inputs are standardised by the mean and standard deviation of a sample of
training fields of view (stored in the model config).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning, arg
from orgaseg.io import compute_normalization
from orgaseg.io.metadata import format_sizes
from orgaseg.io.normalize import Normalization
from orgaseg.io.volume import Volume, absolute_path, read_as, volume_record
from orgaseg.io.writers import check_writable
from orgaseg.progress import ProgressCallback
from orgaseg.train_config import TrainConfig


def _volumes(inputs: Sequence, voxel_size=None, key=None) -> list[Volume]:
    from orgaseg.segmentation import resolve_volume  # paths, volumes and arrays alike

    volumes = [resolve_volume(v, key=key, voxel_size=voxel_size) for v in inputs]
    if not volumes:
        raise OrgasegError("give at least one training volume")
    return volumes


def start_or_resume(spec, output: Path, preset: str | None, volumes: list[Volume], *, resume: bool, overwrite: bool,
                    model_options, seed: int | None = None,
                    pixel_size: float | str | None = None) -> tuple[dict, str, list[Volume]]:
    """The checkpoint state to resume (empty for a new run), the preset and the training volumes, after the checks
    every trainer makes.

    Resuming keeps the checkpoint's preset, seed and working pixel size (another one given is refused, not
    ignored), refuses model options and trains on the volumes the checkpoint was trained on, at their voxel
    sizes (:func:`resumed_volumes`); a new run refuses an existing ``output`` unless ``overwrite`` and an
    unknown preset (default ``cpu``). Both refuse an output that cannot be written.
    """
    from orgaseg.models.checkpoint import load_checkpoint
    from orgaseg.pipeline.stages import resolve_pixel_size

    if resume:
        if model_options:
            raise OrgasegError(f"model options cannot change on {arg('resume')}: the checkpoint holds the model's config")
        state = load_checkpoint(output, method=spec.name)
        if preset is not None and preset != state["preset"]:
            raise OrgasegError(f"{output} was trained with preset {state['preset']!r}, not {preset!r}")
        if seed is not None and seed != state["seed"]:
            raise OrgasegError(f"{output} was trained with seed {state['seed']}, not {seed}: a resume continues the "
                               f"same run; leave {arg('seed')} out")
        trained_nm = state.get("pixel_size_nm")
        asked_nm = None if pixel_size is None else resolve_pixel_size(pixel_size, spec.pixel_size_nm)
        if pixel_size is not None and asked_nm != trained_nm:
            trained, asked = ("the volumes' own pixel size" if nm is None else f"a working pixel size of {nm:g} nm"
                              for nm in (trained_nm, asked_nm))
            raise OrgasegError(f"{output} was trained at {trained}, not {asked}: a resume continues the same run; "
                               f"leave {arg('pixel_size')} out")
        volumes = resumed_volumes(volumes, state.get("training_volumes"), output)
        check_writable(output)  # before the training, not at its first checkpoint
        return state, state["preset"], volumes
    if output.exists() and not overwrite:
        raise OrgasegError(f"{output} exists; pass {arg('resume')} to continue it or {arg('overwrite')} to start afresh")
    preset = checked_preset(spec, preset)
    check_writable(output)  # before the training, not at its first checkpoint
    return {}, preset, volumes


def checked_preset(spec, preset: str | None) -> str:
    """``preset`` (default ``cpu``), refused unless the method row ``spec`` trains with it."""
    preset = preset or "cpu"
    if preset not in spec.train_presets:
        raise OrgasegError(f"unknown preset {preset!r} for {spec.name}; choose one of {', '.join(spec.train_presets)}")
    return preset


def training_pixel_size(spec, pixel_size: float | str | None, volumes: list[Volume]) -> float | None:
    """The working pixel size of a new training run (None: the volumes' own).

    The method's default (``pixel_size`` None) only coarsens, as when segmenting: volumes all at least
    that coarse are trained on as they are.
    """
    from orgaseg.pipeline.stages import resolve_pixel_size

    pixel_size_nm = resolve_pixel_size(pixel_size, spec.pixel_size_nm)
    if pixel_size is None and pixel_size_nm is not None and all(min(v.voxel_size[1:]) >= pixel_size_nm for v in volumes):
        return None
    return pixel_size_nm


def train_model(spec, make_model, config, sampler, state: dict, *, resume: bool, preset: str,
                pixel_size_nm: float | None, normalizations: list[Normalization], volumes: list[Volume],
                extra_record: Mapping[str, Any], train_config: TrainConfig, output: Path, steps: int | None,
                minutes: float | None, device: str, seed: int, workers: int, snapshots: int,
                progress: ProgressCallback | None) -> dict:
    """Build the model (on resume with the checkpoint's weights) and run its training loop; the final record.

    ``make_model(config, preset, saved)`` gives the model and its checkpoint entries; the checkpoint
    record holds them after the model config, then ``extra_record``, the normalisations and volumes.
    """
    import torch

    from orgaseg.training import resumed_schedule, run_training

    torch.manual_seed(seed)
    model, model_record = make_model(config, preset, state if resume else None)
    if resume:
        model.load_state_dict(state["state_dict"])
    record = {
        "method": spec.name,
        "preset": preset,
        "pixel_size_nm": pixel_size_nm,
        "model_config": config.to_dict(),
        **model_record,
        **extra_record,
        "normalizations": [n.to_dict() for n in normalizations],
        "training_volumes": [volume_record(v) for v in volumes],
        "n_parameters": model.n_parameters(),
    }
    total, minutes = resumed_schedule(state, steps, minutes) if resume else (steps, minutes)
    return run_training(model, sampler, config=train_config, output=output, record=record,
                        start_step=state.get("step", 0), total_steps=total, minutes=minutes,
                        losses=state.get("losses"), optimizer_state=state.get("optimizer"),
                        elapsed=state.get("train_seconds", 0.0), device=device, seed=seed, workers=workers,
                        progress=progress, snapshots=snapshots)


def training_normalizations(volumes: list[Volume], state: dict, seed: int) -> list[Normalization]:
    """Each training volume's intensity normalisation: on resume the checkpoint's, else the input volume's.

    The percentiles of each input volume, as segment takes them (:func:`orgaseg.segment`), computed before
    any resampling: those of the resampled volume are narrower (the anti-aliasing smooths the noise), so
    they would stretch the training intensities past what the encoder reads when it segments the same
    volume. A resume keeps the ones the run started with (a checkpoint written before they were taken
    this way continues as it began).
    """
    recorded = state.get("normalizations")
    if recorded:  # a resume trains on the volumes it recorded (resumed_volumes)
        return [Normalization.from_dict(n) for n in recorded]
    return [compute_normalization(v, seed=seed, refuse_constant=True) for v in volumes]


def resumed_volumes(volumes: list[Volume], recorded: list[dict] | None, output: Path) -> list[Volume]:
    """``volumes`` as the checkpoint at ``output`` was trained on them (``recorded``: its ``training_volumes``).

    A volume read without a voxel size (assumed 1 nm) takes the one it was trained at; one read at another
    voxel size, or other volumes, are refused: a resume continues the same run.
    """
    if recorded is None:
        return volumes
    read = [(absolute_path(v.path), v.key, read_as(v)) for v in volumes]
    trained = [(absolute_path(r["path"]), r.get("key"), {n: r[n] for n in ("axes", "channel") if n in r}) for r in recorded]
    if read != trained:
        raise OrgasegError(f"{output} was trained on {_describe(trained)}, this resume reads {_describe(read)}: a resume "
                           "trains on the same volumes, read the same way")
    out = []
    for volume, record in zip(volumes, recorded):
        trained_at = tuple(float(v) for v in record.get("resampled_from", record["voxel_size"]))
        if volume.attrs.get("voxel_size_assumed"):
            attrs = {k: v for k, v in volume.attrs.items() if k != "voxel_size_assumed"}
            volume = dataclasses.replace(volume, voxel_size=trained_at, attrs=attrs)
        elif not np.allclose(volume.voxel_size, trained_at):
            raise OrgasegError(
                f"{output} was trained on {volume.path} at {format_sizes(trained_at)} nm, and this "
                f"resume reads it at {format_sizes(volume.voxel_size)} nm: give the same "
                f"{arg('voxel_size')}, or none (the checkpoint's is used)")
        out.append(volume)
    return out


def _describe(volumes: list[tuple[str, str | None, dict]]) -> str:
    """``path (key K, axes A, channel C)`` for each ``(path, key, read_as)``, as the resume check compares them."""
    def one(path, key, selection):
        details = ([f"key {key}"] if key else []) + [f"{name} {value}" for name, value in selection.items()]
        return str(path) + (f" ({', '.join(details)})" if details else "")

    return ", ".join(one(*volume) for volume in volumes)


def train_vit(
    spec,
    inputs: Sequence,
    output: str | Path,
    *,
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
    """Train a ViT method's model on volumes; write a checkpoint.

    Parameters
    ----------
    spec : Method
        The method's row (:class:`orgaseg.methods.table.Method`): name, training presets, model factory.
    inputs : sequence of path, Volume or array
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
    seed : int, optional
        Seed of initialisation, batches and masks (default 0; on resume, the checkpoint's, and another is refused).
    workers : int
        Data-loader worker processes.
    snapshots : int
        Keep this many checkpoints along the schedule (see :func:`orgaseg.training.run_training`).
    model_options : mapping, optional
        Fields of the preset's :class:`~orgaseg.models.mae.MAEConfig` to replace
        (an ablation, e.g. ``{"norm_pix_loss": False}``); the checkpoint stores
        the resulting config, so loading needs nothing else. Not with ``resume``.
    pixel_size : float, "native" or None
        Working pixel size in nm: fields of view are drawn from the volumes
        resampled to it (in-plane only for anisotropic stacks). None: the
        method's default; ``"native"``: the volumes' own. Recorded in the
        checkpoint; on resume, the checkpoint's.
    voxel_size, key
        How to read the inputs (see :func:`orgaseg.open_volume`).
    progress : callable, optional
        Progress callback.

    Returns
    -------
    dict
        The final checkpoint record.
    """
    from orgaseg.models.mae import MAEConfig, model_preset
    from orgaseg.pipeline.resample import resampled_volume
    from orgaseg.sampling import FieldOfViewSampler

    output = Path(output)
    volumes = _volumes(inputs, voxel_size, key)
    state, preset, volumes = start_or_resume(spec, output, preset, volumes, resume=resume, overwrite=overwrite,
                                             model_options=model_options, seed=seed, pixel_size=pixel_size)
    if resume:
        config = MAEConfig.from_dict(state["model_config"])
        train_config = TrainConfig.from_dict(state["train_config"])
        seed = state["seed"]
        pixel_size_nm = state.get("pixel_size_nm")
    else:
        seed = 0 if seed is None else seed
        config = model_preset(preset).with_overrides(model_options or {})
        train_config = spec.train_presets[preset]
        pixel_size_nm = training_pixel_size(spec, pixel_size, volumes)
    normalizations = training_normalizations(volumes, state, seed)
    volumes = [resampled_volume(v, pixel_size_nm) for v in volumes]
    for volume in volumes:
        if min(volume.shape[1:]) < config.img_size:
            warnings.warn(OrgasegWarning(
                f"{volume.path}: its slices are {volume.shape[1]} x {volume.shape[2]} pixels at the working pixel "
                f"size, smaller than one {config.img_size}-pixel field of view: the encoder learns from them padded "
                "by reflection; train on a larger region"), stacklevel=2)
    sampler = FieldOfViewSampler(volumes, normalizations, fov=config.img_size, seed=seed)
    if not resume:
        # the model's input standardisation, from a sample of training fields of view
        probe = sampler.batch(0, 256)
        config = dataclasses.replace(config, input_mean=float(probe.mean()), input_std=max(float(probe.std()), 1e-3))
    return train_model(spec, spec.make_model, config, sampler, state, resume=resume, preset=preset,
                       pixel_size_nm=pixel_size_nm, normalizations=normalizations, volumes=volumes, extra_record={},
                       train_config=train_config, output=output, steps=steps, minutes=minutes, device=device,
                       seed=seed, workers=workers, snapshots=snapshots, progress=progress)
