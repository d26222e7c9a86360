"""The volumes ``instances`` and ``measure`` read: a path, a :class:`~orgaseg.io.Volume` or an array.

One rule for all of them: a path is opened (its metadata's voxel size, unless one is given); a Volume keeps
its own voxel size unless one is given; an array takes the one given, else 1 nm marked as assumed, so that
nothing is measured in nm from it. Raw and mask volumes lie on the instances' grid (``shape``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orgaseg.errors import OrgasegError
from orgaseg.io import open_volume
from orgaseg.io.readers import open_on_grid
from orgaseg.io.volume import Volume, in_memory_volume, read_as
from orgaseg.pipeline.tasks import VolumeSource

__all__ = ["open_input"]


def open_input(data: Any, what: str, *, key: str | None = None, voxel_size: Sequence[float] | None = None,
               shape: tuple[int, int, int] | None = None) -> tuple[Volume, VolumeSource]:
    """``data`` as a volume and the source blocks read it from (see the module docstring).

    Parameters
    ----------
    data : str, Path, Volume or array-like
        The input.
    what : str
        What it is, for messages (``"instances"``, ``"raw"``, ...).
    key : str, optional
        Dataset inside a container.
    voxel_size : sequence of 3 float, optional
        ``(z, y, x)`` in nm (``(y, x)`` for a single image); overrides the file's or the Volume's.
    shape : tuple of 3 int, optional
        The grid it must lie on (a raw or mask volume: the instances').

    Returns
    -------
    Volume, VolumeSource
    """
    if isinstance(data, (str, Path)) and shape is not None:  # raw and mask lie on the instances' grid
        volume = open_on_grid(data, f"the {what} volume", "the instances'", shape, key=key, key_option=f"{what}_key")
        source = VolumeSource.from_arguments(data, volume, key=key, axes=read_as(volume).get("axes", "zyx"))
    elif isinstance(data, (str, Path)):
        volume = open_volume(data, key=key, voxel_size=voxel_size)
        source = VolumeSource.from_arguments(data, volume, key=key)
    else:
        volume = in_memory_volume(data, voxel_size)
        source = VolumeSource(volume)
    if shape is not None and volume.shape != shape:
        raise OrgasegError(f"the {what} volume has shape {volume.shape}, the instances {shape}; they must match")
    return volume, source
