"""Resume: a signature per finished block, so a rerun skips what is done and mixes in nothing stale.

A run's *key* is a digest of everything its labels depend on: the input's
identity (path, key, shape, dtype, voxel size, and the sizes and modification
times of its files, or a hash of its content for an array without a path),
the checkpoint's hash, the method and feature configuration, K (or the reused
centres), the seed and sample size, the normalisation and the block shape.
The label writer keeps its partial output only for the same key
(:func:`orgaseg.io.writers.create_label_writer`); inside it a
:class:`RunState` stores the fitted clusterer, so a resumed run labels its
remaining blocks with exactly the same centres, and one marker per finished
block holding the block's signature (run key, centres, block index and
region). A marker is written only after the block's labels are durable, and
a block counts as done only when its marker's signature matches, so a run
killed at any instant, even with SIGKILL, resumes to the same output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orgaseg.cluster.base import Clusterer, ClustererSpec
from orgaseg.io.partial import digest, write_atomic
from orgaseg.io.volume import Volume, read_as
from orgaseg.io.writers import writing
from orgaseg.pipeline.blocks import Block, make_blocks

_CLUSTERER = "clusterer.json"


def input_identity(volume: Volume) -> dict:
    """What identifies the input: where it lives, what is read from it, its geometry and its files' sizes and times.

    Files are checked by size and modification time (as ``make`` does), not
    by content, so a terabyte input is not read to fingerprint it; a volume
    without a path (an array) is hashed by content.
    """
    identity = {"key": volume.key, **read_as(volume), "shape": volume.shape, "dtype": str(volume.dtype),
                "voxel_size": volume.voxel_size}
    path = Path(volume.path) if volume.path else None
    if path is not None and path.exists():
        identity["path"] = str(path.resolve())
        identity["files"] = _file_stats(path, volume.key)
    else:
        identity["content_sha256"] = _content_hash(volume)
    return identity


def run_key(volume: Volume, **settings) -> str:
    """The digest of the input's identity and ``settings`` (everything else the labels depend on)."""
    return digest({"input": input_identity(volume), "settings": settings})


class RunState:
    """Resume state of one run in ``folder``: the fitted clusterer and a marker per finished block.

    Parameters
    ----------
    folder : Path
        Created by the label writer inside the partial output (``writer.state_dir``);
        emptied by it whenever the run key changes.
    key : str
        The run key (:func:`run_key`).

    Attributes
    ----------
    computed, skipped : int
        Blocks labelled by this run and blocks found done by an earlier one.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key
        self.done_dir = self.folder / "done"
        self.done_dir.mkdir(parents=True, exist_ok=True)
        self._state_digest: str | None = None
        self.computed = 0
        self.skipped = 0

    def load_models(self, spec: ClustererSpec) -> list[Clusterer] | None:
        """The clusterers an earlier run fitted with this key (read back by ``spec``), or None."""
        path = self.folder / _CLUSTERER
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != self.key:
            return None
        return [spec.from_dict(state) for state in record["models"]]

    def save_models(self, models: Sequence[Clusterer]) -> None:
        """Store the fitted clusterer, so a resumed run uses the same centres."""
        with writing(self.folder):
            write_atomic(self.folder / _CLUSTERER, json.dumps({"key": self.key, "models": [m.to_dict() for m in models]}))

    def use_models(self, models: Sequence[Clusterer]) -> None:
        """Set the clusterer states that every block signature includes."""
        self.use_digest(digest([m.to_dict() for m in models]))

    def use_digest(self, value: str) -> None:
        """Set the digest of what labels the blocks (a clusterer, tables), which every block signature includes."""
        self._state_digest = value

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray], info: dict) -> str:
        """Store arrays (and a JSON-able ``info``) that a resumed run needs again; returns their digest."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        value = hashlib.sha256(data).hexdigest()
        with writing(self.folder):
            write_atomic(self.folder / f"{name}.npz", data)
            # written last: the arrays count only once this names them
            write_atomic(self.folder / f"{name}.json", json.dumps({"key": self.key, "sha256": value, "info": info}))
        return value

    def load_arrays(self, name: str) -> tuple[dict[str, np.ndarray], dict, str] | None:
        """The arrays, info and digest :meth:`save_arrays` stored under this key, or None."""
        try:
            record = json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))
            data = (self.folder / f"{name}.npz").read_bytes()
        except (OSError, ValueError):
            return None
        if record.get("key") != self.key or hashlib.sha256(data).hexdigest() != record.get("sha256"):
            return None
        with np.load(io.BytesIO(data)) as stored:
            return {name: stored[name] for name in stored.files}, record["info"], record["sha256"]

    def signature(self, block: Block) -> str:
        if self._state_digest is None:
            raise RuntimeError("call use_models or use_digest before asking for block signatures")
        regions = [[r.start, r.stop] for r in block.region]
        return digest({"run": self.key, "models": self._state_digest, "index": block.index, "region": regions})

    def is_done(self, block: Block) -> bool:
        """Whether an earlier run finished ``block`` with the same signature."""
        path = self._marker(block)
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("signature") == self.signature(block)
        except (OSError, ValueError):
            return False  # missing, or half-written by a killed run: recompute

    def mark_done(self, block: Block, seconds: float, label_voxels: Sequence[Sequence[int]] | None = None) -> None:
        """Record ``block`` as finished (call after its labels are durable), with how many of its voxels each
        label took in each of its label volumes (``label_voxels[i][label]``), for the run's totals on resume."""
        record = {"signature": self.signature(block), "index": block.index, "seconds": round(seconds, 4)}
        if label_voxels is not None:  # as (label, voxels) pairs of the labels present: K may be large
            record["label_voxels"] = [[[i, int(n)] for i, n in enumerate(counts) if n] for counts in label_voxels]
        with writing(self.folder):  # a full disk is one line naming the output, not an unexpected error
            write_atomic(self._marker(block), json.dumps(record))
        self.computed += 1

    def label_voxels(self, block: Block) -> list[np.ndarray] | None:
        """What :meth:`mark_done` recorded of ``block``'s labels (voxels per label, index = label, in each
        label volume); None where it recorded none, or nothing this reads as (label, voxels) pairs.

        A marker whose signature matches stands for the block's labels whatever its counts hold: counts in
        another form (the dense lists markers kept before these pairs) or damaged only make the run's totals
        unknown, which is said as None rather than as an error or a wrong count.
        """
        try:
            pairs = json.loads(self._marker(block).read_text(encoding="utf-8")).get("label_voxels")
        except (OSError, ValueError):
            return None
        if not isinstance(pairs, list):
            return None
        counts = []
        for present in pairs:
            try:  # reshaped to the pairs' own number: a dense list of counts does not fit it
                present = np.asarray(present, np.int64).reshape(len(present), 2)
            except (TypeError, ValueError):
                return None
            if present.size and present.min() < 0:
                return None
            dense = np.zeros(present[:, 0].max(initial=-1) + 1, np.int64)
            dense[present[:, 0]] = present[:, 1]
            counts.append(dense)
        return counts

    def has_progress(self) -> bool:
        """Whether there is anything worth resuming (a fitted clusterer, stored arrays or a finished block)."""
        return any(path != self.done_dir for path in self.folder.iterdir()) or any(self.done_dir.iterdir())

    def counts(self) -> dict:
        return {"computed": self.computed, "skipped": self.skipped}

    def _marker(self, block: Block) -> Path:
        return self.done_dir / f"{block.index}.json"


def _file_stats(path: Path, key: str | None) -> list:
    """Size and modification time of a file, or of the entries of a folder and of every file under the array's.

    The array's folder is ``key``'s when it is one, else the folder itself. Its files are listed at any
    depth: Zarr v3 and NGFF ('/' chunk keys) store chunks in nested folders (``c/0/0/0``), and a
    chunk rewritten in place changes neither the size nor the time of the folders above it.
    """
    if path.is_file():
        stat = path.stat()
        return [[path.name, stat.st_size, stat.st_mtime_ns]]
    array = path / key if key and (path / key).is_dir() else path
    stats = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        stat = entry.stat()
        stats.append([entry.name, stat.st_size, stat.st_mtime_ns])
    for folder, folders, files in os.walk(array):
        folders.sort()
        for name in sorted(files):
            file = Path(folder) / name
            stat = file.stat()
            stats.append([str(file.relative_to(path)), stat.st_size, stat.st_mtime_ns])
    return stats


def _content_hash(volume: Volume) -> str:
    hasher = hashlib.sha256()
    for block in make_blocks(volume.shape, (1,) + volume.shape[1:]):
        hasher.update(np.ascontiguousarray(volume.read(block.region)).tobytes())
    return hasher.hexdigest()

