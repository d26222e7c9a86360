"""Cutting a volume into blocks that read a halo and write only their own region."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from orgaseg.errors import OrgasegError

Region = tuple[slice, slice, slice]

#: Voxels of one block's own region when the caller gives no block shape.
DEFAULT_BLOCK_VOXELS = 4 * 1024 * 1024


@dataclass(frozen=True)
class Block:
    """One unit of blockwise work.

    Attributes
    ----------
    index : int
        Position in the block list (stable for a given shape and block shape).
    region : tuple of slice
        The voxels this block owns and writes, ``(z, y, x)``.
    read_region : tuple of slice
        ``region`` grown by the halo and clipped to the volume.
    """

    index: int
    region: Region
    read_region: Region

    @property
    def inner(self) -> Region:
        """``region`` expressed inside an array read from ``read_region``."""
        return tuple(
            slice(r.start - rr.start, r.stop - rr.start) for r, rr in zip(self.region, self.read_region)
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(r.stop - r.start for r in self.region)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def default_block_shape(
    shape: tuple[int, int, int], chunks: tuple[int, int, int] | None = None, voxels: int = DEFAULT_BLOCK_VOXELS
) -> tuple[int, int, int]:
    """A block shape of about ``voxels`` voxels, whole slices where they fit.

    Blocks prefer full ``y, x`` planes (fewer halo seams for in-plane
    features) and are rounded to multiples of the storage ``chunks`` when given.
    """
    z, y, x = shape
    plane = y * x
    if plane <= voxels:
        block = (max(1, min(z, voxels // plane)), y, x)
    else:
        side = int(np.sqrt(voxels))
        block = (1, min(y, side), min(x, side))
    if chunks is not None:
        block = tuple(
            min(s, max(c, (b // c) * c)) for b, c, s in zip(block, chunks, shape)
        )
    return block


def make_blocks(
    shape: tuple[int, int, int], block_shape: tuple[int, int, int], halo: tuple[int, int, int] = (0, 0, 0)
) -> list[Block]:
    """Tile ``shape`` with blocks of ``block_shape``, each with a halo.

    Parameters
    ----------
    shape : tuple of int
        Volume shape ``(z, y, x)``.
    block_shape : tuple of int
        Shape of a block's own region; the last blocks along an axis may be smaller.
    halo : tuple of int
        Context read on each side of a block, shrunk at the volume's borders.

    Returns
    -------
    list of Block
    """
    if len(shape) != 3 or len(block_shape) != 3 or len(halo) != 3:
        raise OrgasegError(f"shape, block shape and halo must each have 3 values (z, y, x), got {shape}, {block_shape}, {halo}")
    if min(block_shape) < 1:
        raise OrgasegError(f"block shape must be positive, got {block_shape}")
    starts = [range(0, s, b) for s, b in zip(shape, block_shape)]
    blocks = []
    for index, corner in enumerate(itertools.product(*starts)):
        region = tuple(slice(c, min(c + b, s)) for c, b, s in zip(corner, block_shape, shape))
        read = tuple(slice(max(0, r.start - h), min(s, r.stop + h)) for r, h, s in zip(region, halo, shape))
        blocks.append(Block(index=index, region=region, read_region=read))
    return blocks


def aligned_chunks(block_shape: tuple[int, int, int], preferred: tuple[int, int, int]) -> tuple[int, int, int]:
    """Storage chunks that tile ``block_shape`` exactly, each side near ``preferred``.

    A block then covers whole chunks only, so blocks written in any order (or
    at once) never share a chunk, and a block interrupted mid-write spoils no
    chunk of a finished neighbour. Per axis: the block side if it is at most
    the preferred side, else its largest divisor between half and all of the
    preferred side, else the block side.
    """
    chunks = []
    for b, p in zip(block_shape, preferred):
        divisors = [d for d in range(max(1, p // 2), p + 1) if b % d == 0]
        chunks.append(b if b <= p or not divisors else max(divisors))
    return tuple(chunks)
