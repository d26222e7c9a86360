"""Provenance records: a JSON file beside every output saying how it was made.

``seg.ome.zarr`` gets ``seg.ome.zarr.provenance.json`` holding the method,
its configuration, the checkpoint hash, K, the cluster centres, the input
path, the package version, the time and the host.
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from orgaseg.errors import OrgasegError

SUFFIX = ".provenance.json"


def provenance_path(output_path: str | Path) -> Path:
    """Where the provenance record of ``output_path`` lives."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + SUFFIX)


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, paths, tuples and sets made JSON-safe.

    Anything else JSON cannot hold becomes its ``str``, so writing a record at
    the end of a long run never fails on an odd field.
    """
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def make_provenance(**fields: Any) -> dict:
    """A provenance record: ``fields`` plus package version, UTC time and host.

    Examples
    --------
    >>> record = make_provenance(method="baseline", k=6)
    >>> record["method"], record["k"], "package_version" in record
    ('baseline', 6, True)
    """
    from orgaseg import __version__

    record = {
        "package": "orgaseg",
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.platform(),
        "python": platform.python_version(),
    }
    record.update(fields)
    return to_jsonable(record)


def write_provenance(output_path: str | Path, record: dict) -> Path:
    """Write ``record`` to ``<output_path>.provenance.json`` atomically; return its path."""
    with provenance_put_in_place(output_path, record):
        pass
    return provenance_path(output_path)


@contextmanager
def provenance_put_in_place(output_path: str | Path, record: dict) -> Iterator[None]:
    """Write ``record`` beside ``output_path`` before the block, rename it onto the old record after it.

    Move the new output into place inside the block: a record that cannot be written (a full disk) stops the
    run before the old output is replaced, and one killed between the two renames leaves at most that
    moment's window in which new labels sit beside the old record (which ``--centers`` or ``--mapping``
    would read), not the time it takes to write one. If the block raises, the old record stays.
    """
    # imported here: orgaseg.io.partial imports this module (for to_jsonable)
    from orgaseg.io.partial import atomic_path

    with atomic_path(provenance_path(output_path)) as temporary:
        temporary.write_text(json.dumps(to_jsonable(record), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        yield


def read_provenance(path: str | Path) -> dict:
    """Read a provenance record, given the output's path or the record's own path."""
    path = Path(path)
    target = path if path.name.endswith(SUFFIX) else provenance_path(path)
    try:
        return json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OrgasegError(f"{target}: no provenance record") from None
    except ValueError as exc:
        raise OrgasegError(f"{target}: not a valid JSON provenance record ({exc})") from exc


def producing_command(path: str | Path | None) -> str | None:
    """The orgaseg command that wrote the label volume at ``path`` (``"segment"``, ``"name"`` or
    ``"instances"``), read from its provenance record; None when there is no record or another writer's."""
    if not path:  # an in-memory volume (its path is empty): no record
        return None
    target = provenance_path(path)
    try:
        fields = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return label_command(fields)


def label_command(record) -> str | None:
    """Which command wrote a provenance ``record`` of a label volume (``"segment"``, ``"name"``,
    ``"instances"``); None for any other record (a crop's, which is an image)."""
    if not isinstance(record, dict):
        return None
    if "clusterer" in record:
        return "segment"
    if "naming" in record:
        return "name"
    if "instances" in record and "connectivity" in record:
        return "instances"
    return None
