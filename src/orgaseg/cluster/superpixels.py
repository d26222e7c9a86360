"""Superpixels of a slice and their features: the nodes of the graph clusterers (SCCS, CS²C).

A slice of a block (on the working grid) is cut into square *regions* of a
fixed physical side (``region_nm``; the papers' 560 px at 16 nm = 8960 nm);
each region is cut into SLIC superpixels of about ``superpixel_px`` working
pixels (n_segments from the region's area). A superpixel's features are
the mean and the standard deviation of its pixels' features, ``[mean || std]``
(``2 q`` values for ``q`` feature channels).

SLIC runs on the normalised intensities (0..1, one channel,
``channel_axis=None``). Its compactness weighs the spatial distance against
the intensity distance; for a one-channel image in 0..1, ``0.2`` lets
superpixel edges follow membranes closely while keeping them compact
(skimage's default of 10 is meant for Lab colour in 0..100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: The papers' region: 560 x 560 px at 16 nm.
DEFAULT_REGION_NM = 560 * 16.0
#: Working pixels per superpixel.
DEFAULT_SUPERPIXEL_PX = 100
#: SLIC compactness for one-channel intensities in 0..1.
DEFAULT_COMPACTNESS = 0.2


def region_slices(shape: tuple[int, int], pixel_size_nm: float | tuple[float, float],
                  region_nm: float = DEFAULT_REGION_NM) -> list[tuple[slice, slice]]:
    """Tile a ``(y, x)`` slice with regions of side about ``region_nm`` (equal tiles, none thinner than half a region).

    Parameters
    ----------
    shape : tuple of int
        Slice shape ``(y, x)`` in working pixels.
    pixel_size_nm : float or (float, float)
        Working pixel size, or its ``(y, x)`` sizes where they differ.
    region_nm : float
        Region side in nm.

    Returns
    -------
    list of (slice, slice)
    """
    sizes = np.broadcast_to(np.asarray(pixel_size_nm, dtype=np.float64), (2,))
    cuts = []
    for n, size in zip(shape, sizes):
        side = max(1.0, region_nm / float(size))
        count = max(1, round(n / side))
        edges = np.linspace(0, n, count + 1).round().astype(int)
        cuts.append([slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])])
    return [(ys, xs) for ys in cuts[0] for xs in cuts[1]]


def slic_superpixels(image: np.ndarray, *, superpixel_px: float = DEFAULT_SUPERPIXEL_PX,
                     compactness: float = DEFAULT_COMPACTNESS, mask: np.ndarray | None = None) -> np.ndarray:
    """SLIC superpixels of one normalised 2D image, ids ``0 .. n-1`` without gaps (``-1`` outside ``mask``).

    Parameters
    ----------
    image : ndarray, shape (y, x)
        Intensities in 0..1.
    superpixel_px : float
        Target pixels per superpixel.
    compactness : float
        SLIC compactness (see the module notes).
    mask : ndarray of bool, optional
        Pixels to cut into superpixels; the rest get ``-1``.

    Returns
    -------
    ndarray of int32, shape (y, x)
    """
    from skimage.segmentation import slic

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"superpixels are cut in 2D images, got shape {image.shape}")
    area = image.size if mask is None else int(np.count_nonzero(mask))
    if area == 0:
        return np.full(image.shape, -1, dtype=np.int32)
    n_segments = max(1, int(math.ceil(area / float(superpixel_px))))
    labels = slic(image, n_segments=n_segments, compactness=compactness, channel_axis=None, start_label=1,
                  mask=mask, enforce_connectivity=True).astype(np.int64)
    # SLIC may leave ids unused (segments absorbed by the connectivity step): renumber 0..n-1 in raster order
    inside = labels > 0
    _, first = np.unique(labels[inside], return_index=True)
    order = np.argsort(first)
    lookup = np.full(labels.max() + 1, -1, dtype=np.int64)
    lookup[np.unique(labels[inside])[order]] = np.arange(len(order))
    out = np.where(inside, lookup[labels], -1)
    return out.astype(np.int32)


def pool_superpixels(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[mean || std]`` of the features of each superpixel.

    Parameters
    ----------
    features : ndarray, shape (y, x, q)
    labels : ndarray of int, shape (y, x)
        Superpixel ids ``0 .. n-1``; negative ids are left out.

    Returns
    -------
    ndarray of float32, shape (n, 2 q)
        A one-pixel superpixel has std 0.
    """
    q = features.shape[-1]
    flat = labels.reshape(-1)
    keep = flat >= 0
    ids = flat[keep]
    n = int(ids.max()) + 1 if ids.size else 0
    values = features.reshape(-1, q)
    values = (values if keep.all() else values[keep]).astype(np.float64)
    # one sparse product sums every channel of every superpixel at once
    member = sparse.csr_matrix((np.ones(ids.size), (ids, np.arange(ids.size))), shape=(n, ids.size))
    counts = np.asarray(member.sum(axis=1)).reshape(-1, 1)
    mean = (member @ values) / counts
    values -= mean[ids]  # in place (a block's features are large): two-pass variance, no cancellation
    np.square(values, out=values)
    var = (member @ values) / counts
    return np.concatenate([mean, np.sqrt(np.maximum(var, 0.0))], axis=1).astype(np.float32)


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of superpixels that share an edge (4-connectivity), each once.

    Parameters
    ----------
    labels : ndarray of int, shape (y, x)
        Superpixel ids; negative ids are left out.

    Returns
    -------
    ndarray of int64, shape (m, 2)
    """
    pairs = []
    for a, b in ((labels[:-1, :], labels[1:, :]), (labels[:, :-1], labels[:, 1:])):
        a, b = a.reshape(-1), b.reshape(-1)
        cross = (a != b) & (a >= 0) & (b >= 0)
        pairs.append(np.stack([np.minimum(a[cross], b[cross]), np.maximum(a[cross], b[cross])], axis=1))
    pairs = np.concatenate(pairs).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


@dataclass
class RegionSuperpixels:
    """One region of one slice, cut into superpixels.

    Attributes
    ----------
    z : int
        Slice index in the block.
    window : tuple of slice
        The region's ``(y, x)`` window in the slice.
    labels : ndarray of int32, shape (y, x)
        Superpixel ids ``0 .. n-1`` of the window.
    features : ndarray of float32, shape (n, 2 q)
        ``[mean || std]`` per superpixel.
    touching : ndarray of int64, shape (m, 2)
        Superpixels that share an edge.
    """

    z: int
    window: tuple[slice, slice]
    labels: np.ndarray
    features: np.ndarray
    touching: np.ndarray

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


def block_superpixels(features: np.ndarray, raw: np.ndarray, pixel_size_nm: float | tuple[float, float], *,
                      region_nm: float = DEFAULT_REGION_NM, superpixel_px: float = DEFAULT_SUPERPIXEL_PX,
                      compactness: float = DEFAULT_COMPACTNESS) -> list[RegionSuperpixels]:
    """Every region of every slice of a block, cut into superpixels with pooled features.

    Parameters
    ----------
    features : ndarray, shape (z, y, x, q)
        Per-pixel features on the working grid.
    raw : ndarray, shape (z, y, x)
        Normalised intensities on the same grid.
    pixel_size_nm : float or (float, float)
        The grid's in-plane pixel size (``(y, x)`` where they differ).
    region_nm, superpixel_px, compactness
        See :func:`region_slices` and :func:`slic_superpixels`.

    Returns
    -------
    list of RegionSuperpixels, slice by slice, regions in raster order
    """
    out = []
    for z in range(raw.shape[0]):
        for window in region_slices(raw.shape[1:], pixel_size_nm, region_nm):
            labels = slic_superpixels(raw[z][window], superpixel_px=superpixel_px, compactness=compactness)
            out.append(RegionSuperpixels(z, window, labels, pool_superpixels(features[z][window], labels),
                                         touching_pairs(labels)))
    return out


def paint(regions: list[RegionSuperpixels], node_labels: list[np.ndarray], shape: tuple[int, int, int],
          dtype) -> np.ndarray:
    """Pixel labels of a block from one label per superpixel of each region."""
    out = np.zeros(shape, dtype=dtype)
    for region, labels in zip(regions, node_labels):
        out[region.z][region.window] = np.asarray(labels)[region.labels]
    return out
