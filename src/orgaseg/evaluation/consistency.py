"""3D consistency of a label volume: how often a voxel's label flickers between neighbouring slices.

A segmentation computed slice by slice can assign a voxel a label that neither
the slice above nor the slice below gives it, a one-slice island that a 3D
structure of the sample hardly ever makes at the voxel sizes of volume EM.
:func:`slice_flicker` counts those voxels; the same count on the reference
labels gives the floor that the sample's own thin structures set.
"""

from __future__ import annotations

import numpy as np

from orgaseg.errors import OrgasegError


def slice_flicker(labels, mask=None) -> float:
    """Fraction of voxels whose label differs from both z-neighbours' labels.

    Parameters
    ----------
    labels : array-like, shape (z, y, x)
        Labels (cluster ids or class ids), at least 3 slices.
    mask : array-like of bool, shape (z, y, x), optional
        Voxels to count (e.g. inside the cell); the neighbours' labels are
        read whether masked or not.

    Returns
    -------
    float
        Flickering voxels over counted voxels, among the slices ``1 .. z-2``
        (the first and last slice have one z-neighbour only).

    Raises
    ------
    OrgasegError
        For fewer than 3 slices, a mask of another shape, or a mask that
        leaves no voxel to count.

    Examples
    --------
    >>> labels = np.zeros((4, 1, 2), int)
    >>> labels[1, 0, 0] = 1  # a one-slice island
    >>> slice_flicker(labels)
    0.25
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] < 3:
        raise OrgasegError(f"slice flicker needs a (z, y, x) label volume of at least 3 slices, got shape {labels.shape}")
    middle = labels[1:-1]
    flicker = (middle != labels[:-2]) & (middle != labels[2:])
    if mask is None:
        return float(flicker.mean())
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise OrgasegError(f"the mask's shape {mask.shape} differs from the labels' {labels.shape}")
    counted = mask[1:-1]
    if not counted.any():
        raise OrgasegError("the mask leaves no voxel between the first and last slice to count")
    return float(flicker[counted].mean())
