"""Volumes in and out: open any supported format lazily, normalise, write labels.

See :mod:`orgaseg.io.readers` for the supported input formats (``FORMATS``).
"""

from __future__ import annotations

from orgaseg.io.normalize import Normalization, compute_normalization, normalize_volume, sample_intensities
from orgaseg.io.provenance import make_provenance, provenance_path, read_provenance, write_provenance
from orgaseg.io.readers import MissingChunksWarning, VoxelSizeWarning, open_volume
from orgaseg.io.volume import AxesView, Volume, as_volume
from orgaseg.io.writers import LabelWriter, create_label_writer, write_labels, write_tiff_image

__all__ = [
    "AxesView",
    "LabelWriter",
    "MissingChunksWarning",
    "Normalization",
    "Volume",
    "VoxelSizeWarning",
    "as_volume",
    "compute_normalization",
    "create_label_writer",
    "make_provenance",
    "normalize_volume",
    "open_volume",
    "provenance_path",
    "read_provenance",
    "sample_intensities",
    "write_labels",
    "write_provenance",
    "write_tiff_image",
]
