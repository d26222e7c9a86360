"""Cutting a volume into blocks that read a halo and write only their own region."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from orgaseg.errors import OrgasegError

Region = tuple[slice, slice, slice]

#: ``cost(start, stop) -> float``: what a block spanning ``[start, stop)`` along one axis costs on that axis.
SpanCost = Callable[[int, int], float]

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


def halo_block_shape(
    shape: tuple[int, int, int],
    halo: tuple[int, int, int],
    voxels: int,
    chunks: tuple[int, int, int] | None = None,
    costs: Sequence[tuple[SpanCost, SpanCost, SpanCost]] | None = None,
) -> tuple[int, int, int]:
    """A block shape of at most ``voxels`` voxels whose blocks compute the least.

    By default what a block computes is its region grown by ``halo``
    (clipped to the volume), so the shape chosen minimises the sum of those
    windows over the blocks (ties: fewer blocks, then longer x and y sides).
    Features that need no context along z (in-plane filters of an
    anisotropic stack) get whole planes, as :func:`default_block_shape` gives
    them; features whose context is wide along every axis (the filter bank's
    160 nm scale on an isotropic volume) get blocks as deep as the volume and
    narrow in y and x, instead of slabs of a few planes that each compute a
    window a hundred planes deep. Sides are multiples of the storage
    ``chunks`` when given (a chunk wider than the volume: the volume's side).

    ``costs`` prices a block otherwise: the sum over its terms of the product
    over the axes of ``cost(start, stop)`` of the block's own span along the
    axis (an encoder that encodes only the fields of view serving a block's
    own voxels, which lie on a grid anchored to the volume: the fields of
    view of two blocks' shared border are paid twice, those of the halo
    never). The shape chosen minimises that sum over the blocks, then the
    windows as above.
    """
    chunks = chunks or (1, 1, 1)
    windows = [tuple(_window_cost(n, h) for n, h in zip(shape, halo))]
    best = _cheapest_shape(shape, [_candidate_sides(n, c) for n, c in zip(shape, chunks)], voxels, windows, costs)
    # the fields of view of a span depend on how it meets the encoder's grid, so a side a little off the
    # split of the axis into equal parts can serve its voxels with fewer: search around the best shape
    for _ in range(REFINE_ROUNDS if costs is not None else 0):
        sides = [_sides_near(b, n, c) for b, n, c in zip(best, shape, chunks)]
        refined = _cheapest_shape(shape, sides, voxels, windows, costs)
        if refined == best:
            break
        best = refined
    return best


#: Rounds of the search around the best block shape when blocks are priced by ``costs``.
REFINE_ROUNDS = 3

#: Costs within this fraction of the least count as equal (the windows decide among them).
COST_TOLERANCE = 0.02


def _cheapest_shape(shape, sides, voxels, windows, costs) -> tuple[int, int, int]:
    """The shape among the ``sides`` per axis (longest first) of at most ``voxels`` voxels that costs the least.

    Costs within :data:`COST_TOLERANCE` of the least tie; ties go to the fewest
    window voxels, then the fewest blocks, then the longest x and y sides.
    """
    grid = np.meshgrid(*[np.arange(len(sizes)) for sizes in sides], indexing="ij")
    window = _blocks_sum(windows, shape, sides, grid)
    size = np.prod([np.asarray(sizes, dtype=np.float64)[g] for sizes, g in zip(sides, grid)], axis=0)
    fits = size <= voxels
    if not fits.any():  # even the smallest block is larger: take it
        fits = size == size.min()
    if costs is None:
        cost = np.where(fits, window, np.inf)
    else:
        cost = np.where(fits, _blocks_sum(costs, shape, sides, grid), np.inf)
        cost = np.where(cost <= cost.min() * (1 + COST_TOLERANCE), cost.min(), cost)
    counts = [np.array([-(-n // b) for b in sizes], dtype=np.float64) for n, sizes in zip(shape, sides)]
    n_blocks = np.prod([c[g] for c, g in zip(counts, grid)], axis=0)
    order = np.lexsort((grid[1].ravel(), grid[2].ravel(), n_blocks.ravel(), window.ravel(), cost.ravel()))
    best = np.unravel_index(order[0], size.shape)
    return tuple(int(sizes[i]) for sizes, i in zip(sides, best))


def _blocks_sum(terms, shape, sides, grid) -> np.ndarray:
    """The sum of ``terms`` over the blocks of each candidate shape (``sides`` per axis, indexed by ``grid``)."""
    out = 0.0
    for term in terms:  # the blocks form a grid, so a term's sum is the product of its per-axis sums
        per_axis = [np.array([_axis_sum(cost, n, b) for b in sizes], dtype=np.float64)
                    for cost, n, sizes in zip(term, shape, sides)]
        out = out + np.prod([p[g] for p, g in zip(per_axis, grid)], axis=0)
    return out


def _sides_near(side: int, n: int, chunk: int) -> list[int]:
    """Block sides within a factor 0.6 to 1.6 of ``side`` along an axis of ``n``, in whole chunks, longest first."""
    chunk = max(1, min(int(chunk), n))
    low, high = max(1, int(0.6 * side) // chunk), min(-(-n // chunk), -(-int(1.6 * side) // chunk))
    return sorted({min(n, k * chunk) for k in range(low, high + 1)} | {side}, reverse=True)


def block_overhead(
    shape: tuple[int, int, int],
    block_shape: tuple[int, int, int],
    halo: tuple[int, int, int],
    costs: Sequence[tuple[SpanCost, SpanCost, SpanCost]] | None = None,
) -> float:
    """What the blocks of ``block_shape`` compute, per what one block of the whole volume would (1: no overhead).

    Priced as in :func:`halo_block_shape`: the voxels of the blocks' windows
    (the region grown by ``halo``), or ``costs`` (the fields of view an
    encoder encodes) when given.
    """
    terms = costs if costs is not None else [tuple(_window_cost(n, h) for n, h in zip(shape, halo))]
    one = np.zeros((1, 1, 1), dtype=int)
    grid = (one, one, one)
    given = _blocks_sum(terms, shape, [[int(b)] for b in block_shape], grid)
    whole = _blocks_sum(terms, shape, [[int(n)] for n in shape], grid)
    return float(given.item() / max(whole.item(), 1e-12))


def _candidate_sides(n: int, chunk: int) -> list[int]:
    """Block sides to try along an axis of ``n`` voxels: ``n`` split into 1, 2, 3, ... equal parts, in chunks.

    Returned longest first (the tie-break in :func:`halo_block_shape` reads the index as length).
    """
    chunk = max(1, min(int(chunk), n))
    parts = sorted(set(range(1, min(n, 64) + 1)) | {int(p) for p in np.geomspace(64, n, 24) if n > 64})
    sides = {min(n, max(chunk, (-(-n // p) + chunk - 1) // chunk * chunk)) for p in parts}
    return sorted(sides, reverse=True)


def _window_cost(n: int, halo: int) -> SpanCost:
    """Voxels a block spanning ``(start, stop)`` computes along an axis of ``n``: the span grown by ``halo``."""
    return lambda start, stop: min(n, stop + halo) - max(0, start - halo)


def _axis_sum(cost: SpanCost, n: int, side: int) -> float:
    """``cost`` summed over the blocks of ``side`` that cut an axis of ``n``."""
    return sum(cost(start, min(n, start + side)) for start in range(0, n, side))


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
    return [block_reading_halo(index, tuple(slice(c, min(c + b, s)) for c, b, s in zip(corner, block_shape, shape)),
                               shape, halo)
            for index, corner in enumerate(itertools.product(*starts))]


def block_reading_halo(index: int, region: Region, shape: tuple[int, int, int], halo: tuple[int, int, int]) -> Block:
    """The block owning ``region`` of a volume of ``shape``, reading ``halo`` voxels each side (clipped)."""
    read = tuple(slice(max(0, r.start - h), min(s, r.stop + h)) for r, h, s in zip(region, halo, shape))
    return Block(index=index, region=region, read_region=read)


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
