"""The outputs of one segmentation run: labels, optional features, resume state, as one unit.

:func:`open_outputs` creates (or reopens, for a resumed run) the label
writer, the feature writer of ``--save-features`` and the
:class:`~orgaseg.pipeline.resume.RunState`; :meth:`RunOutputs.finalize`
completes them together; :meth:`RunOutputs.interrupted` keeps whatever an
interrupted run finished, so the same call resumes it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orgaseg.errors import Note, in_words
from orgaseg.io import create_label_writer
from orgaseg.io.feature_writer import FeatureWriter, create_feature_writer
from orgaseg.io.writers import LabelWriter, OutputError
from orgaseg.labels import smallest_label_dtype
from orgaseg.pipeline.blocks import aligned_chunks
from orgaseg.pipeline.resume import RunState
from orgaseg.pipeline.runner import ArraySink
from orgaseg.progress import ProgressCallback

logger = logging.getLogger(__name__)

#: Preferred storage chunks of label outputs and of saved features (adjusted to tile the blocks).
LABEL_CHUNKS = (64, 256, 256)
FEATURE_CHUNKS = (8, 128, 128)


@dataclass
class RunOutputs:
    """Where one run's labels (and features) go.

    Attributes
    ----------
    sink : LabelWriter or ArraySink
        Receives the labels (an in-memory array when there is no output path).
    features : FeatureWriter or None
        Receives every block's features (``--save-features``).
    state : RunState or None
        Resume state (only for an output path).
    """

    sink: LabelWriter | ArraySink
    features: FeatureWriter | None
    state: RunState | None

    def finalize(self, record: dict, feature_attrs: dict, progress: ProgressCallback | None = None) -> Path | None:
        """Complete every output; returns the label output's path (None for in-memory labels)."""
        if self.features is not None:
            self.features.finalize(feature_attrs)
        if isinstance(self.sink, LabelWriter):
            return self.sink.finalize(record, progress)
        return None

    def interrupted(self) -> None:
        """Keep what an interrupted run finished, so the same call resumes it; discard an empty start.

        Called while the exception that stopped the run is handled. Finished
        work (the fitted clusterer, labelled blocks) is kept whatever stopped
        the run: after Ctrl-C, a crash or a full disk the same call resumes.
        When an output could not be written, the note on the kept work joins
        that error's message, so the user still reads one line; after Ctrl-C it
        is a note of the ``KeyboardInterrupt``, which the command line prints
        after the bars it closes, in its last line.
        """
        if self.state is not None and self.state.has_progress():
            self.sink.suspend()
            if self.features is not None:
                self.features.suspend()
            again = in_words("call it again with the same arguments", "rerun the same command")
            note = f"kept the finished work in {self.sink.partial}; {again} to resume"
            error = sys.exc_info()[1]
            if isinstance(error, OutputError):
                error.keep(note)
            elif isinstance(error, KeyboardInterrupt):
                error.add_note(Note(note))
            else:
                logger.warning(Note(note))  # the command line logs it in its own words
            return
        if isinstance(self.sink, LabelWriter):
            self.sink.abort()
        if self.features is not None:
            self.features.abort()


def open_outputs(
    output: str | Path | None,
    shape: tuple[int, int, int],
    n_labels: int,
    *,
    voxel_size: tuple[float, float, float] | None,
    block_shape: tuple[int, int, int],
    origin: tuple[float, float, float] | None = None,
    overwrite: bool = False,
    resume_key: str | None = None,
    save_features: str | Path | None = None,
    n_features: int = 0,
    name: str = "segmentation",
    label_names: Sequence[str] | None = None,
) -> RunOutputs:
    """Create or reopen a run's outputs; their chunks tile ``block_shape``.

    Parameters
    ----------
    output : str, Path or None
        Label output (``.ome.zarr`` or ``.tif``); None keeps the labels in memory.
    shape, n_labels, voxel_size, origin
        Of the label volume (origin: where its first voxel lies, nm; voxel size None: unknown, see
        :func:`~orgaseg.io.writers.create_label_writer`).
    block_shape : tuple of int
        The runner's blocks: no two blocks share a storage chunk.
    overwrite : bool
        Replace existing outputs once the new ones are complete (an interrupted run resumes either way).
    resume_key : str, optional
        The run key (:func:`orgaseg.pipeline.resume.run_key`): partial outputs
        left with the same key are resumed. Only used with an ``output``.
    save_features : str or Path, optional
        Zarr array for every voxel's features (``n_features`` of them).
    name, label_names
        Of the label image (see :func:`orgaseg.io.writers.create_label_writer`).

    Returns
    -------
    RunOutputs
    """
    features = None
    if output is None:
        sink, state, resume_key = ArraySink(shape, smallest_label_dtype(n_labels)), None, None
    else:
        sink = create_label_writer(output, shape, n_labels, voxel_size=voxel_size, origin=origin, overwrite=overwrite,
                                   chunks=aligned_chunks(block_shape, LABEL_CHUNKS), resume_key=resume_key,
                                   name=name, label_names=label_names)
        state = RunState(sink.state_dir, resume_key) if resume_key is not None else None
    if save_features is not None:
        try:
            features = create_feature_writer(save_features, shape, n_features, overwrite=overwrite,
                                             chunks=aligned_chunks(block_shape, FEATURE_CHUNKS), resume_key=resume_key)
        except BaseException:
            RunOutputs(sink, None, state).interrupted()
            raise
    return RunOutputs(sink, features, state)

