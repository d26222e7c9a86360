"""The names a label volume carries for its values (``orgaseg name``, ``orgaseg instances``): :func:`read_label_names`."""

from __future__ import annotations

import json
from pathlib import Path

from orgaseg.errors import OrgasegError
from orgaseg.io import open_volume, provenance_path
from orgaseg.io.volume import Volume


def read_label_names(volume: Volume | str | Path) -> dict[int, str] | None:
    """Names of the label values of a volume opened from a file, or None when it carries none.

    Looks in the OME-Zarr ``image-label`` ``properties`` (``name``, else ``class``, per
    ``label-value``) of the label image, then in the ``label_names`` of the output's
    provenance record (``<path>.provenance.json``), which orgaseg writes for every format.

    Parameters
    ----------
    volume : Volume, str or Path
        The named volume (``orgaseg name``, ``orgaseg instances``), or its path
        (opened with :func:`orgaseg.open_volume`).

    Returns
    -------
    dict of int to str, or None
        Label value -> name; None for a volume without names (or an in-memory one).
    """
    if isinstance(volume, (str, Path)):
        volume = open_volume(volume)
    if not isinstance(volume, Volume):
        raise OrgasegError(f"read_label_names reads a volume opened from a file or its path, got {type(volume).__name__}")
    path = Path(volume.path) if volume.path else None
    if path is None or not path.exists():
        return None
    if volume.attrs.get("format") == "ome-zarr" and volume.key:
        names = _ome_zarr_names(path, volume.key)
        if names:
            return names
    record = provenance_path(path)
    if record.is_file():
        try:
            names = json.loads(record.read_text(encoding="utf-8")).get("label_names")
        except (OSError, ValueError, AttributeError):
            names = None
        if isinstance(names, list) and names:
            return {i: str(n) for i, n in enumerate(names)}
    return None


def _ome_zarr_names(path: Path, key: str) -> dict[int, str] | None:
    import zarr

    parent = key.rsplit("/", 1)[0] if "/" in key else ""
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict((group[parent] if parent else group).attrs)
    except Exception:  # not a group, or a layout we do not know: no names
        return None
    attrs = attrs.get("ome", attrs)
    properties = attrs.get("image-label", {}).get("properties") or []
    names = {}
    for entry in properties:
        value, name = entry.get("label-value"), entry.get("name", entry.get("class"))
        if isinstance(value, int) and name is not None:
            names[value] = str(name)
    return names or None
