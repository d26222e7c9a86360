"""2D image files and folders of them, read lazily as a stack of slices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from orgaseg.errors import OrgasegError
from orgaseg.options import natural_sort_key

#: Suffixes of 2D image files (lower case).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

# dtype of the array Pillow gives for each single-band mode
_PIL_DTYPES = {
    "1": np.bool_,
    "L": np.uint8,
    "P": np.uint8,
    "I;16": np.uint16,
    "I;16L": np.uint16,
    "I;16B": np.uint16,
    "I": np.int32,
    "F": np.float32,
}


def image_files(folder: Path) -> list[Path]:
    """The 2D image files of ``folder`` in natural order (hidden files skipped)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda path: natural_sort_key(path.name))


def image_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    """Shape ``(y, x)`` and dtype of a 2D image, from its header only."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                shape, dtype = tuple(s for s in page.shape if s != 1), np.dtype(page.dtype)
        else:
            with Image.open(path) as image:
                if image.mode not in _PIL_DTYPES:
                    raise OrgasegError(
                        f"{path}: {image.mode} colour image; convert the slices to greyscale"
                    )
                shape, dtype = (image.height, image.width), np.dtype(_PIL_DTYPES[image.mode])
    except OrgasegError:
        raise
    except Exception as exc:  # any decoder failure: name the file
        raise OrgasegError(f"{path}: cannot read image ({exc})") from exc
    if len(shape) != 2:
        raise OrgasegError(f"{path}: expected a 2D image, found shape {shape}")
    return shape, dtype


def read_image(path: Path) -> np.ndarray:
    """Read one 2D image.

    A palette PNG with a grey palette gives its grey values; one with a colour
    palette gives the palette indices (label images are stored that way).
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        data = tifffile.imread(path, key=0)
        return data.reshape([s for s in data.shape if s != 1])
    with Image.open(path) as image:
        if image.mode == "P":
            palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
            if (palette == palette[:, :1]).all():
                return np.asarray(image.convert("L"))
        return np.asarray(image)


class SliceStack:
    """A stack of 2D image files presented as a lazy ``(z, y, x)`` array.

    Slicing reads only the files of the requested z range, one at a time, and
    keeps nothing in memory between reads.

    Parameters
    ----------
    files : sequence of Path
        The slices in z order. All must have the same shape and dtype; the
        headers are checked when the stack is made.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        if not files:
            raise OrgasegError("a stack of slices needs at least one image file")
        self.files = [Path(f) for f in files]
        (height, width), self.dtype = image_header(self.files[0])
        for path in self.files[1:]:
            shape, dtype = image_header(path)
            if shape != (height, width) or dtype != self.dtype:
                raise OrgasegError(
                    f"{path}: slice is {shape[0]} x {shape[1]} {dtype}, but "
                    f"{self.files[0].name} is {height} x {width} {self.dtype}; "
                    "all slices must have the same shape and dtype"
                )
        self.shape = (len(self.files), height, width)

    ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        z_key, plane_key = key[0], key[1:]
        if isinstance(z_key, (int, np.integer)):
            return self._read(self.files[z_key])[plane_key]
        planes = [self._read(path)[plane_key] for path in self.files[z_key]]
        if not planes:
            empty = np.empty(self.shape[1:], dtype=self.dtype)[plane_key]
            return empty[np.newaxis][:0]
        return np.stack(planes)

    def _read(self, path: Path) -> np.ndarray:
        data = read_image(path)
        if data.shape != self.shape[1:]:
            raise OrgasegError(f"{path}: slice changed shape to {data.shape} since it was opened")
        return data.astype(self.dtype, copy=False)
