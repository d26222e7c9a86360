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


def check_label_dtype(dtype, name: str) -> None:
    """Refuse, before reading any voxel, a volume whose dtype cannot hold labels (what :func:`integer_labels`
    reads: integers, booleans, floats holding whole numbers)."""
    from orgaseg.errors import OrgasegError

    dtype = np.dtype(dtype)
    if not (dtype == bool or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise OrgasegError(f"{name} must hold integer labels, got dtype {dtype}")


def integer_labels(values, name: str, *, non_negative: bool = False) -> np.ndarray:
    """``values`` as an integer array: integers as they are, booleans as 0/1, and floats that hold whole
    numbers only (Fiji saves label images as 32-bit floats) as int64; an OrgasegError naming ``name`` for
    anything else, and with ``non_negative`` for a negative value (classes and instance ids are 0 or more;
    a reference read through a class map may use any)."""
    from orgaseg.errors import OrgasegError

    array = np.asarray(values)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        fractional = ~np.isfinite(array) | (array != np.round(array))
        if fractional.any():
            raise OrgasegError(f"{name} must hold integer labels; its {array.dtype} values include "
                               f"{array[fractional].flat[0]:g}")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise OrgasegError(f"{name} must hold integer labels, got dtype {array.dtype}")
    if non_negative and array.size and array.min() < 0:
        raise OrgasegError(f"{name} holds the negative value {int(array.min())}: labels are 0 (background) or "
                           "more (a signed volume marking missing data with -1? set those voxels to 0)")
    return array
