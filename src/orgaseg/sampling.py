"""Training samples: random 2D fields of view from one or more volumes.

A field of view is drawn from a volume chosen with probability proportional
to its size, in a plane chosen at random among z, y and x for (nearly)
isotropic data and in the high-resolution xy plane only when the voxel size
is anisotropic by more than ``anisotropy_ratio``. Augmentation as in MAESTER:
a random square crop of ``crop_range`` pixels resized back to the field of
view by bilinear interpolation, and random flips.

Every batch is drawn from its own random stream, seeded by ``(seed, step)``:
batches do not depend on how many data-loader workers produce them (each
worker takes every n-th step, so no two workers share a stream), and a
resumed training run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume

#: Volumes up to this size (all together) are read into memory once; larger
#: ones are read region by region.
IN_MEMORY_BYTES = 2 * 1024**3


@dataclass
class FieldOfViewSampler:
    """Random normalised fields of view from training volumes.

    Parameters
    ----------
    volumes : sequence of Volume
        Training volumes.
    normalizations : sequence
        One normalisation (``apply(block) -> float32``) per volume.
    fov : int
        Field-of-view side in pixels.
    augment : bool
        Random crop-and-resize and flips.
    crop_range : tuple of int, optional
        Side range of the random square crop (resized back to ``fov``);
        default ``(fov // 2, fov)``, MAESTER's 40-80 px for an 80 px field.
    anisotropy_ratio : float
        Above this z / in-plane voxel-size ratio only xy planes are sampled.
    seed : int
        Base seed of the per-batch streams.
    """

    volumes: Sequence[Volume]
    normalizations: Sequence
    fov: int = 80
    augment: bool = True
    crop_range: tuple[int, int] | None = None
    anisotropy_ratio: float = 2.0
    seed: int = 0
    _cache: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.volumes:
            raise OrgasegError("no training volumes given")
        if len(self.normalizations) != len(self.volumes):
            raise ValueError("need one normalisation per volume")
        if self.crop_range is None:
            self.crop_range = (self.fov // 2, self.fov)
        low, high = self.crop_range
        if not 1 <= low <= high <= self.fov:
            raise OrgasegError(f"crop range must satisfy 1 <= low <= high <= fov ({self.fov}), got {self.crop_range}")
        sizes = np.array([v.size for v in self.volumes], dtype=np.float64)
        self._weights = sizes / sizes.sum()
        in_memory = sum(v.nbytes for v in self.volumes) <= IN_MEMORY_BYTES
        self._cache = [v.read() if in_memory else None for v in self.volumes]

    def planes(self, volume: Volume) -> tuple[int, ...]:
        """Axes normal to the planes sampled from ``volume`` (0 = xy plane)."""
        if volume.is_anisotropic(self.anisotropy_ratio):
            return (0,)
        # zy and zx planes only where the stack is deep enough for a crop; xy always
        deep_enough = volume.shape[0] >= self.crop_range[0]
        return (0, 1, 2) if deep_enough else (0,)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """The batch of training step ``step``: a float32 tensor (batch, 1, fov, fov)."""
        rng = np.random.default_rng([self.seed, step])
        choices = rng.choice(len(self.volumes), size=batch_size, p=self._weights)
        fovs = np.empty((batch_size, self.fov, self.fov), dtype=np.float32)
        for i, index in enumerate(choices):
            fovs[i] = self._field_of_view(index, rng)
        out = torch.from_numpy(fovs)[:, None]
        if self.augment:
            out = self._augment(out, rng)
        return out

    def _field_of_view(self, index: int, rng: np.random.Generator) -> np.ndarray:
        volume = self.volumes[index]
        axis = int(rng.choice(self.planes(volume)))
        region = []
        for a, size in enumerate(volume.shape):
            if a == axis:
                start = int(rng.integers(size))
                region.append(slice(start, start + 1))
            else:
                extent = min(size, self.fov)
                start = int(rng.integers(size - extent + 1))
                region.append(slice(start, start + extent))
        region = tuple(region)
        cached = self._cache[index]
        block = cached[region] if cached is not None else volume.read(region)
        plane = self.normalizations[index].apply(block).reshape([s.stop - s.start for a, s in enumerate(region) if a != axis])
        pad = [(0, self.fov - plane.shape[0]), (0, self.fov - plane.shape[1])]
        if any(p[1] for p in pad):  # smaller than a field of view: reflect (or repeat a single row)
            plane = np.pad(plane, pad, mode="reflect" if min(plane.shape) > 1 else "edge")
        return plane

    def _augment(self, fovs: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        n = fovs.shape[0]
        if self.crop_range is None:
            self.crop_range = (self.fov // 2, self.fov)
        low, high = self.crop_range
        sides = rng.integers(low, high + 1, size=n)
        out = torch.empty_like(fovs)
        for i in range(n):
            side = int(sides[i])
            y0, x0 = (int(v) for v in rng.integers(self.fov - side + 1, size=2))
            crop = fovs[i : i + 1, :, y0 : y0 + side, x0 : x0 + side]
            if side != self.fov:
                crop = F.interpolate(crop, size=(self.fov, self.fov), mode="bilinear", align_corners=False)
            out[i] = crop[0]
        flips = rng.random((n, 2)) < 0.5
        for dim, column in ((2, 0), (3, 1)):
            rows = torch.from_numpy(np.flatnonzero(flips[:, column]))
            if rows.numel():
                out[rows] = out[rows].flip(dim)
        return out


class FieldOfViewBatches(torch.utils.data.IterableDataset):
    """Batches for steps ``start .. stop - 1``; worker ``w`` of ``n`` makes steps ``start + w``, ``start + w + n``, ...

    Use with ``torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=n)``:
    the loader interleaves the workers, so steps arrive in order.
    """

    def __init__(self, sampler: FieldOfViewSampler, batch_size: int, start: int, stop: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.batch_size = batch_size
        self.start = start
        self.stop = stop

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + worker, self.stop, workers):
            yield step, self.sampler.batch(step, self.batch_size)
