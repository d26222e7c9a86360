"""One label palette for every figure and label file.

Label id ``i`` has the same colour everywhere: in overlays, in the
confusion-matrix plot and in the colour table of written OME-Zarr labels.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb

#: The 20 tab20 colours, the ten strong ones first, then their light twins.
_BASE = np.array(colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2])

#: Golden-ratio hue steps keep consecutive extra colours far apart.
_GOLDEN = 0.6180339887498949


def label_colors(n: int) -> np.ndarray:
    """RGBA colours for label ids ``0 .. n-1``.

    The first 20 are matplotlib's ``tab20`` (strong colours first); later ids
    get hues spaced by the golden ratio. The palette is prefix-stable:
    ``label_colors(m)[:n]`` equals ``label_colors(n)`` for ``m > n``.

    Parameters
    ----------
    n : int
        Number of labels (0 or more).

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` float64 RGBA in ``[0, 1]``, alpha 1.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"need a non-negative number of colours, got {n}")
    extra = np.arange(max(n - len(_BASE), 0))
    hsv = np.stack(
        [(extra * _GOLDEN) % 1.0, np.full(extra.size, 0.65), np.where(extra % 2 == 0, 0.9, 0.65)], axis=-1
    )
    rgb = np.concatenate([_BASE, hsv_to_rgb(hsv).reshape(-1, 3)])[:n]
    return np.concatenate([rgb, np.ones((n, 1))], axis=1)
