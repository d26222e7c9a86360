"""Han et al. (CVPRW 2022): training a patch VAE with multi-similarity metric learning (3D and 2D variants).

The model is :class:`orgaseg.models.vae3d.PatchVAE`; this module draws its
training batches and trains it with the shared loop
(:func:`orgaseg.training.run_training`, so checkpoints, resume, snapshots and
progress are those of the other learned methods).

Sampling (:class:`PatchPairSampler`), all geometry in nanometres
----------------------------------------------------------------
The patch grid is defined in physical units so that anisotropic stacks are
sampled correctly: the unit ``u`` is the working in-plane pixel size. An
anchor is a random centre and a half-extent ``r ~ U[2, 6]`` units; its patch
holds ``16`` samples per axis at offsets ``linspace(-r u, r u, 16)`` nm,
read from the normalised volume by (tri)linear interpolation. Each anchor
gets 4 positives: the same grid rotated by a random rotation (uniform on
SO(3) in 3D, a random angle in 2D), bent by a smooth random displacement
field (elastic jitter: a 4-point-per-axis grid of Gaussian displacements of
``elastic`` units, interpolated) and shifted by a uniform point of a ball
of radius 2 units. Every patch is then flipped at random along each axis,
standardised to zero mean and unit variance, scaled by ``2^U(-1, 1)``,
shifted by ``U(-0.25, 0.25)`` and given Gaussian noise.

On vnc at 16 nm working pixels (50 nm sections) a 3D patch at ``r = 4``
spans 128 nm in every direction: about 2.6 sections, so its 16 samples along
z interpolate between 3-4 sections. The 2D variant samples one section
(``16^2`` patches rotated in plane).

Presets (:data:`TRAIN_PRESETS`; model sizes :data:`orgaseg.models.vae3d.MODEL_PRESETS`)
--------------------------------------------------------------------------------------
- ``paper``: the paper's network, Adam lr 1e-4 constant (no warm-up, no
  decay), batch 128 anchors (640 patches), 46,875 steps: one epoch of
  2,000,000 anchors from each of the three training cells, as the reference
  code trains it (hanhongqing/pvae ``pvae/main_BetaSeg.py``: ``batch_size_train``
  128; ``experiments/config.txt`` and ``experiments/test/run_segmentation.sh``:
  ``N_TRAIN_TEST``, ``--n_epoch 1``). Adam with amsgrad, as the paper
  (AdamW at weight decay 0); the ``cpu`` and ``tiny`` presets use plain Adam, as
  their committed results were trained.
- ``cpu``: channels 16-32-64, hidden 128 (1/8 of the paper's widths),
  batch 16 anchors (80 patches), peak lr 5e-4 with a 100-step warm-up and
  cosine decay, 1,600 steps: about 30 minutes on one CPU thread in 3D
  (1.1 s a step, 0.16 s of it sampling), 3 minutes in 2D.
- ``tiny``: channels 4-8-8, 16-D latent, batch 8 anchors, 100 steps (seconds in 2D, half a minute in 3D).

The method table imports this module for its presets, so torch and scipy are imported where they are used.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.progress import ProgressCallback
from orgaseg.train_config import TrainConfig

#: Adam (AdamW at weight decay 0), no gradient clipping.
_ADAM = dict(weight_decay=0.0, betas=(0.9, 0.999), grad_clip=0.0)

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(batch_size=128, lr=1e-4, min_lr=1e-4, warmup_steps=0, steps=46_875,
                         checkpoint_every=5_000, amsgrad=True, **_ADAM),
    "cpu": TrainConfig(batch_size=16, lr=5e-4, min_lr=1e-5, warmup_steps=100, steps=1_600,
                       checkpoint_every=250, **_ADAM),
    "tiny": TrainConfig(batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=10, steps=100,
                        checkpoint_every=50, **_ADAM),
}

#: The checkpoint's encoder row per dimensionality.
ENCODER_NAMES = {3: "patch-vae-3d", 2: "patch-vae-2d"}


@dataclass(frozen=True)
class PatchSampling:
    """How anchors and positives are drawn (lengths in working in-plane pixels).

    Attributes
    ----------
    radius_range : tuple of float
        Range of the patch half-extent ``r`` (uniform).
    positives : int
        Transformed copies per anchor.
    jitter : float
        Radius of the ball the positives' centres are shifted within.
    elastic : float
        Standard deviation of the elastic displacement at the control points.
    noise : float
        Standard deviation of the Gaussian noise added to standardised patches.
    inference_radius : float
        The half-extent used at inference (the middle of ``radius_range``).
    """

    radius_range: tuple[float, float] = (2.0, 6.0)
    positives: int = 4
    jitter: float = 2.0
    elastic: float = 0.5
    noise: float = 0.1
    inference_radius: float = 4.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PatchSampling:
        values = dict(values)
        values["radius_range"] = tuple(values.get("radius_range", (2.0, 6.0)))
        return cls(**values)


def random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A rotation matrix drawn uniformly from SO(ndim) (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def patch_offsets(radius_nm: float, patch: int, ndim: int) -> np.ndarray:
    """The sample offsets of a patch in nm, ``(patch^ndim, ndim)``: ``linspace(-radius, radius, patch)`` per axis."""
    axis = np.linspace(-radius_nm, radius_nm, patch)
    return np.stack(np.meshgrid(*(axis,) * ndim, indexing="ij"), axis=-1).reshape(-1, ndim)


class PatchPairSampler:
    """Training batches of anchors and positives from normalised volumes.

    Parameters
    ----------
    volumes : sequence of Volume
        Training volumes at the working pixel size.
    normalizations : sequence
        One normalisation (``apply(block) -> float32``) per volume.
    ndim : int
        3: cubes; 2: squares in xy sections.
    patch : int
        Samples per axis.
    sampling : PatchSampling
        Radii, positives, jitter, noise.
    seed : int
        Base seed of the per-step streams (batch ``step`` depends only on ``(seed, step)``).
    """

    def __init__(self, volumes: Sequence, normalizations: Sequence, *, ndim: int = 3, patch: int = 16,
                 sampling: PatchSampling = PatchSampling(), seed: int = 0) -> None:
        from orgaseg.sampling import IN_MEMORY_BYTES

        if not volumes:
            raise OrgasegError("no training volumes given")
        self.volumes, self.normalizations = list(volumes), list(normalizations)
        self.ndim, self.patch, self.sampling, self.seed = int(ndim), int(patch), sampling, int(seed)
        sizes = np.array([v.size for v in self.volumes], dtype=np.float64)
        self._weights = sizes / sizes.sum()
        in_memory = sum(v.nbytes for v in self.volumes) <= IN_MEMORY_BYTES
        self._cache = [n.apply(v.read()) if in_memory else None for v, n in zip(self.volumes, self.normalizations)]

    def batch(self, step: int, batch_size: int):
        """The batch of step ``step``: a float32 tensor ``(batch_size, 1 + positives, 1, patch, ...)``."""
        import torch

        from orgaseg.models.vae3d import standardize_patches

        rng = np.random.default_rng([self.seed, step])
        group = 1 + self.sampling.positives
        rows = [self._row(int(rng.choice(len(self.volumes), p=self._weights)), rng) for _ in range(batch_size)]
        patches = torch.from_numpy(np.stack(rows).astype(np.float32))  # (B, group, p, ...)
        patches = patches.flatten(0, 1)
        flips = torch.from_numpy(rng.random((len(patches), self.ndim)) < 0.5)
        for axis in range(self.ndim):
            chosen = flips[:, axis].nonzero().flatten()
            if chosen.numel():
                patches[chosen] = patches[chosen].flip(axis + 1)
        patches = standardize_patches(patches)
        n = len(patches)
        shape = (n,) + (1,) * self.ndim
        scale = torch.from_numpy(2.0 ** rng.uniform(-1.0, 1.0, n)).float().view(shape)
        shift = torch.from_numpy(rng.uniform(-0.25, 0.25, n)).float().view(shape)
        noise = torch.from_numpy(rng.standard_normal(patches.shape)).float() * self.sampling.noise
        patches = patches * scale + shift + noise
        return patches.view(batch_size, group, 1, *(self.patch,) * self.ndim)

    def _row(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """An anchor and its positives from volume ``index``: ``(1 + positives, patch, ...)``."""
        volume = self.volumes[index]
        spacing = np.asarray(volume.voxel_size[-self.ndim:], dtype=np.float64)
        unit = float(min(volume.voxel_size[1:]))
        s = self.sampling
        radius = rng.uniform(*s.radius_range) * unit
        reach = radius * np.sqrt(self.ndim) + (s.jitter + 3 * s.elastic) * unit
        extent = np.asarray(volume.shape[-self.ndim:]) * spacing
        low = np.where(extent > 2 * reach, reach, 0.0)
        centre = rng.uniform(low, extent - low)
        section = int(rng.integers(volume.shape[0])) if self.ndim == 2 else None
        return self.patch_group(index, centre, radius, rng, section=section)

    def patch_group(self, index: int, centre: np.ndarray, radius: float, rng: np.random.Generator, *,
                    section: int | None = None) -> np.ndarray:
        """An anchor at ``centre`` and its positives, before flips and intensity augmentation.

        Parameters
        ----------
        index : int
            The volume.
        centre : ndarray
            Position in nm of the anchor's centre along the patch axes (z, y, x in 3D; y, x in 2D),
            voxel ``i`` covering ``[i v, (i + 1) v)``.
        radius : float
            Half-extent in nm.
        rng : numpy Generator
            Source of the rotations, elastic fields and shifts.
        section : int, optional
            The z section (2D patches only).

        Returns
        -------
        ndarray, shape (1 + positives, patch, ...)
        """
        volume = self.volumes[index]
        spacing = np.asarray(volume.voxel_size[-self.ndim:], dtype=np.float64)
        unit = float(min(volume.voxel_size[1:]))
        s = self.sampling
        offsets = patch_offsets(radius, self.patch, self.ndim)
        grids = [offsets]
        for _ in range(s.positives):
            rotated = offsets @ random_rotation(rng, self.ndim).T
            shift = rng.standard_normal(self.ndim)
            shift *= s.jitter * unit * rng.uniform() ** (1.0 / self.ndim) / np.linalg.norm(shift)
            grids.append(rotated + self._elastic_field(rng, unit) + shift)
        points = (centre + np.stack(grids)) / spacing - 0.5  # continuous voxel indices
        return self._interpolate(index, points, section).reshape(len(grids), *(self.patch,) * self.ndim)

    def _elastic_field(self, rng: np.random.Generator, unit: float) -> np.ndarray:
        """A smooth displacement in nm per sample ``(patch^ndim, ndim)``: 4 control points per axis, interpolated."""
        import torch
        import torch.nn.functional as F

        control = rng.standard_normal((1, self.ndim) + (4,) * self.ndim) * self.sampling.elastic * unit
        mode = "trilinear" if self.ndim == 3 else "bilinear"
        field = F.interpolate(torch.from_numpy(control), size=(self.patch,) * self.ndim, mode=mode, align_corners=True)
        return field[0].reshape(self.ndim, -1).T.numpy()

    def _interpolate(self, index: int, points: np.ndarray, section: int | None) -> np.ndarray:
        """Linear interpolation of the normalised volume at ``points``, reflected about the volume's edge voxels
        beyond them, as segmentation pads a block (``reflected_span``: numpy's ``reflect``, scipy's ``mirror``)."""
        from scipy import ndimage as ndi

        volume = self.volumes[index]
        flat = points.reshape(-1, self.ndim)
        shape = np.asarray(volume.shape[-self.ndim:])
        start = np.clip(np.floor(flat.min(0)).astype(int) - 1, 0, shape - 1)
        stop = np.clip(np.ceil(flat.max(0)).astype(int) + 2, start + 1, shape)
        region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        if section is not None:
            region = (slice(section, section + 1),) + region
        cached = self._cache[index]
        block = cached[region] if cached is not None else self.normalizations[index].apply(volume.read(region))
        if section is not None:
            block = block[0]
        # the crop reaches past every point but where the volume ends, so the mode acts at the volume's edges
        return ndi.map_coordinates(block, (flat - start).T, order=1, mode="mirror")


def make_model(config, preset: str, saved: dict | None = None):
    """A :class:`~orgaseg.models.vae3d.PatchVAE` for training and its checkpoint entries."""
    from orgaseg.models.vae3d import PatchVAE

    return PatchVAE(config), {"encoder": ENCODER_NAMES[config.ndim]}


def train_han_vae(
    spec,
    inputs: Sequence,
    output: str | Path,
    *,
    ndim: int = 3,
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
    """Train Han et al.'s patch VAE on volumes; write a checkpoint.

    Parameters as :func:`orgaseg.methods.vit_method.train_vit` (``preset``,
    ``steps``, ``minutes``, ``resume``, ``overwrite``, ``device``, ``seed``,
    ``workers``, ``snapshots``, ``pixel_size``, ``voxel_size``, ``key``,
    ``progress``), plus:

    ndim : int
        3 (``han-vae``) or 2 (``han-vae-2d``); fixed by the method row.
    model_options : mapping, optional
        Fields of :class:`~orgaseg.models.vae3d.VAEConfig` to replace (e.g.
        ``{"metric_weight": 0}`` for the ablation without metric learning).

    Returns
    -------
    dict
        The final checkpoint record.
    """
    from orgaseg.methods.vit_method import (
        _volumes,
        start_or_resume,
        train_model,
        training_normalizations,
        training_pixel_size,
    )
    from orgaseg.models.vae3d import VAEConfig, model_preset
    from orgaseg.pipeline.resample import resampled_volume

    output = Path(output)
    volumes = _volumes(inputs, voxel_size, key)
    state, preset, volumes = start_or_resume(spec, output, preset, volumes, resume=resume, overwrite=overwrite,
                                             model_options=model_options, seed=seed, pixel_size=pixel_size)
    if resume:
        config = VAEConfig.from_dict(state["model_config"])
        train_config = TrainConfig.from_dict(state["train_config"])
        sampling = PatchSampling.from_dict(state["sampling"])
        seed = state["seed"]
        pixel_size_nm = state.get("pixel_size_nm")
    else:
        seed = 0 if seed is None else seed
        base = model_preset(preset, ndim)
        try:
            config = dataclasses.replace(base, **dict(model_options or {}))
        except TypeError as err:
            raise OrgasegError(f"unknown patch-VAE model option: {err}") from None
        if config.ndim != ndim:
            raise OrgasegError(f"method {spec.name!r} trains a {ndim}D model; ndim cannot be overridden")
        train_config = spec.train_presets[preset]
        sampling = PatchSampling()
        pixel_size_nm = training_pixel_size(spec, pixel_size, volumes)
    normalizations = training_normalizations(volumes, state, seed)
    volumes = [resampled_volume(v, pixel_size_nm) for v in volumes]
    for volume in volumes:
        thin = ndim == 3 and volume.shape[0] < config.patch
        if thin or min(volume.shape[1:]) < config.patch:
            warnings.warn(OrgasegWarning(
                f"{volume.path}: {' x '.join(map(str, volume.shape))} voxels at the working pixel size, smaller than "
                f"one {config.patch}-voxel patch{' along z' if thin else ''}: the VAE learns from padded patches"
                + ("; han-vae-2d is the variant for single sections" if thin else "")), stacklevel=2)
    sampler = PatchPairSampler(volumes, normalizations, ndim=ndim, patch=config.patch, sampling=sampling, seed=seed)
    return train_model(spec, make_model, config, sampler, state, resume=resume, preset=preset,
                       pixel_size_nm=pixel_size_nm, normalizations=normalizations, volumes=volumes,
                       extra_record={"sampling": sampling.to_dict()}, train_config=train_config, output=output,
                       steps=steps, minutes=minutes, device=device, seed=seed, workers=workers,
                       snapshots=snapshots, progress=progress)


#: The trainers of the method rows.
train_3d = functools.partial(train_han_vae, ndim=3)
train_2d = functools.partial(train_han_vae, ndim=2)
