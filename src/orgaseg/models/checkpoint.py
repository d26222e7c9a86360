"""Checkpoints: one file that rebuilds its model.

A checkpoint holds the model's weights and the configuration needed to
rebuild it, the optimiser state, the step reached and the schedule length,
the loss history, the normalisation statistics of the training volumes, the
package version and the training provenance. It is written to a temporary
name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from orgaseg import __version__
from orgaseg.errors import OrgasegError
from orgaseg.io.partial import atomic_path
from orgaseg.io.writers import writing

FORMAT = "orgaseg-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (tensors and plain Python values) atomically to ``path``; a failed write (a full disk) is an
    :class:`~orgaseg.io.writers.OutputError` naming the cause, the previous checkpoint kept."""
    path = Path(path)
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__, **record}
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            torch.save(record, temporary)
    return path


def load_checkpoint(path: str | Path, *, method: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
        The checkpoint file.
    method : str, optional
        When given, the checkpoint must have been trained for this method.

    Returns
    -------
    dict
        The record: ``method``, ``model_config``, ``state_dict``, ``step``, ...
    """
    path = Path(path)
    if not path.is_file():
        raise OrgasegError(f"checkpoint not found: {path}")
    try:
        # our own format holds only tensors and plain containers
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        from orgaseg.methods.graph_method import is_graph_checkpoint

        if is_graph_checkpoint(path):
            raise OrgasegError(f"{path} is a trained graph clusterer (sccs, cs2c), not an encoder checkpoint "
                               "(.pt of orgaseg train --method maester, his4mae, han-vae, ...)") from None
        raise OrgasegError(f"{path}: not a readable orgaseg checkpoint ({type(err).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise OrgasegError(f"{path}: not an orgaseg checkpoint")
    check_format_version(path, record, FORMAT_VERSION)
    if method is not None and record.get("method") != method:
        raise OrgasegError(f"{path} is a checkpoint of method {record.get('method')!r}, not {method!r}")
    return record


def check_format_version(path: str | Path, record: dict, supported: int) -> None:
    """Refuse a checkpoint of a newer format than this orgaseg reads (written by a later version), in one line.

    An older format is read as it is: each format version only adds what it needs.
    """
    version = record.get("format_version")
    if isinstance(version, int) and version > supported:
        raise OrgasegError(f"{path} was written by orgaseg {record.get('package_version', '(unknown)')} in checkpoint "
                           f"format {version}; this orgaseg ({__version__}) reads formats up to {supported}: "
                           "upgrade orgaseg to read it")


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file (checkpoints are identified by it in provenance and signatures)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
