"""Label conventions shared by datasets, evaluation and writers."""

from __future__ import annotations

import numpy as np

#: Value of a reference voxel that is not scored (outside the cell mask,
#: an ignored class such as vnc's synapses, padding).
IGNORE_LABEL = 255


def smallest_label_dtype(n_labels: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ids ``0 .. n_labels - 1``."""
    if n_labels < 1:
        raise ValueError(f"need at least one label, got {n_labels}")
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n_labels - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{n_labels} labels do not fit in 64 bits")
