"""``--save-features``: per-voxel features as a chunked float16 Zarr array, written block by block."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numcodecs
import numpy as np
import zarr

from orgaseg.errors import OrgasegError
from orgaseg.io.partial import PartialOutput, digest
from orgaseg.io.provenance import to_jsonable
from orgaseg.io.writers import check_chunks, check_shape, give_up, writing


class FeatureWriter:
    """Per-voxel features as a chunked float16 Zarr array ``(z, y, x, F)``, written block by block.

    Built in ``<path>.partial/`` like the label outputs and resumed the same
    way. The writer pickles by reference to its store, so workers of other
    processes write their blocks themselves; see :func:`create_feature_writer`.
    """

    def __init__(self, path: Path, shape, n_features: int, *, chunks, overwrite: bool,
                 resume_key: str | None = None) -> None:
        self.path = path
        self.shape = check_shape(shape) + (int(n_features),)
        self.chunks = check_chunks(chunks, self.shape[:3]) + (self.shape[3],)
        key = None if resume_key is None else digest({"content": resume_key, "shape": self.shape, "chunks": self.chunks})
        self._partial = None
        try:
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                self._partial = PartialOutput(path, overwrite, key)
                if self._partial.resumed:
                    self._array = zarr.open_array(str(self._partial.target), mode="r+", zarr_format=2)
                else:
                    self._array = zarr.create_array(
                        str(self._partial.target), shape=self.shape, chunks=self.chunks, dtype=np.float16,
                        fill_value=0, zarr_format=2, chunk_key_encoding={"name": "v2", "separator": "/"},
                        compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE),
                    )
                    self._partial.commit_key()
        except BaseException:
            give_up(self._partial)
            raise

    def write(self, region: tuple[slice, slice, slice], features: np.ndarray) -> None:
        """Write ``features`` (shape ``region + (F,)``) as float16."""
        with writing(self.path):
            self._array[tuple(region) + (slice(None),)] = np.asarray(features).astype(np.float16)

    def finalize(self, attrs: dict) -> Path:
        """Store ``attrs`` (axes, voxel size, feature configuration) and move the array into place."""
        with writing(self.path):
            self._array.attrs.update(to_jsonable(attrs))
            self._partial.move_into_place()
        return self.path

    def suspend(self) -> None:
        """Keep the partial array for a resumed run."""
        self._partial.release()

    def abort(self) -> None:
        self._partial.discard()


def create_feature_writer(
    path: str | Path,
    shape: Sequence[int],
    n_features: int,
    *,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    resume_key: str | None = None,
) -> FeatureWriter:
    """Start writing per-voxel features to a Zarr array (``.zarr``), float16, chunked.

    Parameters
    ----------
    path : str or Path
        Output array (a ``.zarr`` folder).
    shape : sequence of 3 ints
        ``(z, y, x)``; the array is ``(z, y, x, n_features)``.
    n_features : int
        Features per voxel (one chunk holds all of them).
    chunks : sequence of 3 ints, optional
        Spatial chunks (default ``(64, 256, 256)`` clipped to the shape).
    overwrite : bool
        Replace an existing array once the new one is complete (a partial one with the same key is resumed).
    resume_key : str, optional
        Signature of the content; a partial array left with the same key is reused.
    """
    path = Path(path).expanduser()
    if not path.name.lower().endswith(".zarr"):
        raise OrgasegError(f"{path}: features are saved as a Zarr array; give a path ending in .zarr")
    return FeatureWriter(path, shape, n_features, chunks=chunks, overwrite=overwrite, resume_key=resume_key)
