"""Two palettes: one for clusters, one for reference classes.

Cluster id ``i`` has the same colour everywhere (:func:`label_colors`): in
overlays, in the confusion-matrix plot and in the colour table of written
OME-Zarr labels. Classes get another palette (:func:`class_colors`) that
shares no colour with it, so a figure never lets a cluster read as the class
that happens to have the same id.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb

from orgaseg.options import check_whole_number

#: The 20 tab20 colours, the ten strong ones first, then their light twins.
_BASE = np.array(colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2])

#: Okabe & Ito's colour-blind-safe colours without black (invisible over EM): orange, sky blue, bluish
#: green, yellow, vermillion; their blue and reddish purple are replaced by violet-blue and deep magenta,
#: because they look like tab20's blue and pink (CIE76 distance 3 and 16; every class colour here is at
#: least 15 from every cluster colour).
_CLASS_BASE = np.array([
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (51, 26, 255), (213, 94, 0), (179, 0, 102),
]) / 255.0

#: Golden-ratio hue steps keep consecutive extra colours far apart.
_GOLDEN = 0.6180339887498949


def _palette(base: np.ndarray, n: int, hue_offset: float, saturation: float) -> np.ndarray:
    """``base`` then golden-ratio hues (starting at ``hue_offset``) as ``(n, 4)`` RGBA."""
    n = check_whole_number(n, "n")  # 2.5 gave two colours
    extra = np.arange(max(n - len(base), 0))
    hsv = np.stack(
        [(hue_offset + extra * _GOLDEN) % 1.0, np.full(extra.size, saturation), np.where(extra % 2 == 0, 0.9, 0.65)],
        axis=-1,
    )
    rgb = np.concatenate([base, hsv_to_rgb(hsv).reshape(-1, 3)])[:n]
    return np.concatenate([rgb, np.ones((n, 1))], axis=1)


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
    return _palette(_BASE, n, 0.0, 0.65)


def class_colors(n: int) -> np.ndarray:
    """RGBA colours for reference class ids ``0 .. n-1``, none of them a cluster colour.

    The first 7 are mostly Okabe & Ito's colour-blind-safe palette (see ``_CLASS_BASE``);
    later ids get golden-ratio hues, offset and less saturated than those of
    :func:`label_colors`. Prefix-stable like :func:`label_colors`.

    Parameters
    ----------
    n : int
        Number of classes (0 or more).

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` float64 RGBA in ``[0, 1]``, alpha 1.
    """
    return _palette(_CLASS_BASE, n, 0.31, 0.45)
