"""Multiscale pyramids of label volumes: mode downsampling, level planning.

A label pyramid must not invent ids (averaging labels 2 and 4 gives 3, a
cluster that is not there), so each coarser voxel takes the most frequent
label of the voxels it covers, ties going to the smallest id. y and x halve
at every level; z halves too once the data is isotropic enough (its voxel is
finer than twice the in-plane voxel), so a thick-section stack keeps its
sections until the in-plane voxels catch up. Levels are added until the
smaller in-plane side is at most ``MIN_SIDE`` voxels, which is what a
viewer such as napari needs to show a large volume at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

#: Stop adding levels once min(y, x) of the coarsest level is at most this.
MIN_SIDE = 128

#: Voxels of level ``i`` read at a time when building level ``i + 1``.
BLOCK_VOXELS = 4 * 1024 * 1024

Factors = tuple[int, int, int]


def plan_levels(shape: tuple[int, int, int], voxel_size: tuple[float, float, float], min_side: int = MIN_SIDE) -> list[Factors]:
    """Downsampling factors ``(z, y, x)`` from each level to the next.

    Parameters
    ----------
    shape : tuple of int
        Shape ``(z, y, x)`` of level 0.
    voxel_size : tuple of float
        Voxel size of level 0 in nm.
    min_side : int
        Levels are added while the smaller in-plane side exceeds this.

    Returns
    -------
    list of tuple
        One ``(fz, fy, fx)`` (each 1 or 2) per extra level; empty for a small volume.
    """
    steps = []
    (nz, ny, nx), (vz, vy, vx) = shape, voxel_size
    while min(ny, nx) > min_side:
        fz = 2 if nz > 1 and vz < 2 * max(vy, vx) else 1
        steps.append((fz, 2, 2))
        nz, ny, nx = _ceil_div(nz, fz), _ceil_div(ny, 2), _ceil_div(nx, 2)
        vz, vy, vx = vz * fz, vy * 2, vx * 2
    return steps


def downsampled_shape(shape: tuple[int, int, int], factors: Factors) -> tuple[int, int, int]:
    """Shape after downsampling by ``factors`` (a partial last cell counts)."""
    return tuple(_ceil_div(s, f) for s, f in zip(shape, factors))


def mode_downsample(labels: np.ndarray, factors: Factors) -> np.ndarray:
    """The most frequent label of each ``factors``-sized cell; ties go to the smallest id.

    A partial cell at the far border is filled by repeating its last voxels,
    which scales every count in it equally and so keeps its mode.
    """
    labels = np.asarray(labels)
    pad = [(0, (-s) % f) for s, f in zip(labels.shape, factors)]
    if any(p for _, p in pad):
        labels = np.pad(labels, pad, mode="edge")
    out_shape = tuple(s // f for s, f in zip(labels.shape, factors))
    cells = labels.reshape(out_shape[0], factors[0], out_shape[1], factors[1], out_shape[2], factors[2])
    cells = cells.transpose(0, 2, 4, 1, 3, 5).reshape(*out_shape, -1)
    cells = np.sort(cells, axis=-1)
    # how often each member occurs in its cell; sorted, so the first maximum is the smallest id
    counts = (cells[..., :, None] == cells[..., None, :]).sum(axis=-1, dtype=np.uint8)
    first = counts.argmax(axis=-1)[..., None]
    return np.take_along_axis(cells, first, axis=-1)[..., 0]


def level_blocks(target, factors: Factors, block_voxels: int = BLOCK_VOXELS) -> list[tuple[slice, slice, slice]]:
    """The regions of ``target`` (a level's array) that :func:`write_level` fills one at a time: whole multiples
    of its chunks, so every chunk is written once, each reading about ``block_voxels`` of the level below."""
    chunks = tuple(int(c) for c in target.chunks)
    per_block = max(1, block_voxels // int(np.prod([c * f for c, f in zip(chunks, factors)])))
    # grow the block along x, then y, then z, in whole chunks
    block = list(chunks)
    for axis in (2, 1, 0):
        n_chunks = _ceil_div(target.shape[axis], chunks[axis])
        grow = max(1, min(n_chunks, per_block))
        block[axis] = chunks[axis] * grow
        per_block = max(1, per_block // grow)
    starts = [range(0, s, b) for s, b in zip(target.shape, block)]
    return [tuple(slice(c, min(c + b, s)) for c, b, s in zip(corner, block, target.shape))
            for corner in itertools.product(*starts)]


def write_level(source, target, factors: Factors, block_voxels: int = BLOCK_VOXELS,
                written: Callable[[], None] | None = None) -> None:
    """Fill ``target`` with the mode-downsampled ``source`` (array-likes), block by block (:func:`level_blocks`);
    ``written`` is called after each block."""
    for out in level_blocks(target, factors, block_voxels):
        src = tuple(slice(o.start * f, min(o.stop * f, s)) for o, f, s in zip(out, factors, source.shape))
        target[out] = mode_downsample(np.asarray(source[src]), factors)
        if written is not None:
            written()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
