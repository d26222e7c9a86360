"""2D image files and folders of them, read lazily as a stack of slices."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from orgaseg.errors import OrgasegError
from orgaseg.io.tifflog import tiff_errors
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

#: The dtypes of 1-bit and 8-bit slices, which may share a stack (read as uint8 0/255).
_ONE_BIT_AND_8_BIT = {np.dtype(np.bool_), np.dtype(np.uint8)}


def image_files(folder: Path) -> list[Path]:
    """The 2D image files of ``folder`` in natural order (hidden files skipped)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda path: natural_sort_key(path.name))


def check_sequence(files: Sequence[Path]) -> None:
    """Refuse a numbered sequence of slices with a number missing or taken twice.

    Applies when every name is one pattern around its last number
    (``00.tif``, ``01.tif``, ... or ``sec_0010.png``, ``sec_0020.png``, ...);
    the step is the largest that divides every difference, so a folder that
    holds every tenth section is complete.
    """
    parts = [re.fullmatch(r"(.*?)(\d+)(\D*)", path.stem) for path in files]
    if len(files) < 2 or not all(parts) or len({(m[1], m[3], p.suffix.lower()) for m, p in zip(parts, files)}) > 1:
        return
    numbers = [int(m[2]) for m in parts]
    for before, after, a, b in zip(files, files[1:], numbers, numbers[1:]):
        if a == b:
            raise OrgasegError(f"{after}: slice number {b} is taken twice ({before.name} and {after.name})")
    step = reduce(math.gcd, (b - a for a, b in itertools.pairwise(numbers)))
    for before, after, a, b in zip(files, files[1:], numbers, numbers[1:]):
        if b - a > step:
            raise OrgasegError(
                f"{after.parent}: slice {a + step} of the numbered sequence is missing "
                f"({before.name} is followed by {after.name}); a volume needs every slice"
            )


def image_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape ``(y, x)`` and dtype of a 2D image, from its header only; ``(y, x, c)`` for a colour PNG or JPEG
    (:data:`COLOUR_MODES`), whose channels the reader offers as a ``c`` axis.

    A TIFF whose structure tifffile had to repair, or whose pixel data runs
    past the end of the file, is refused.
    """
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tiff_errors() as errors, tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                shape, dtype = tuple(s for s in page.shape if s != 1), np.dtype(page.dtype)
                end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
                if errors or end > tif.filehandle.size:
                    problem = errors[0] if errors else f"image data ends past the end of the file at byte {end:,}"
                    raise OrgasegError(f"{path}: damaged or truncated TIFF ({problem})")
        else:
            with Image.open(path) as image:
                if image.mode in COLOUR_MODES:
                    return (image.height, image.width, len(image.getbands())), np.dtype(np.uint8)
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


#: Pillow modes of colour images read as channels (``--channel`` picks one), and what their channels are.
COLOUR_MODES = {"RGB": "colour channels (R, G, B: a greyscale image saved in colour has its grey in each)",
                "RGBA": "colour channels (R, G, B, A: a greyscale image saved in colour has its grey in each of "
                        "R, G, B)",
                "LA": "channels (grey, alpha)"}


class ColourImage:
    """A single colour PNG or JPEG (Pillow mode RGB, RGBA or LA) as a lazy ``(y, x, c)`` array.

    Read whole on each access (one image); the reader presents its channels as a ``c`` axis, so
    ``channel`` picks one, as it does for a colour TIFF. A greyscale micrograph saved as RGB (a
    screenshot) holds the same grey in each channel: any of them is the image.
    """

    ndim = 3

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with Image.open(self.path) as image:
                self.mode = image.mode
                self.shape = (image.height, image.width, len(image.getbands()))
        except Exception as exc:  # any decoder failure: name the file
            raise OrgasegError(f"{path}: cannot read image ({exc})") from exc
        self.dtype = np.dtype(np.uint8)

    @staticmethod
    def mode_of(path: Path) -> str | None:
        """The Pillow mode of ``path`` where it is a colour mode this class reads, else None."""
        try:
            with Image.open(path) as image:
                return image.mode if image.mode in COLOUR_MODES else None
        except (OSError, ValueError):  # not an image Pillow reads: left to the reader that names the problem
            return None

    def __getitem__(self, key) -> np.ndarray:
        with Image.open(self.path) as image:
            data = np.asarray(image)
        if data.shape != self.shape:
            raise OrgasegError(f"{self.path}: image changed shape to {data.shape} since it was opened")
        return data[key]


class SliceStack:
    """A stack of 2D image files presented as a lazy ``(z, y, x)`` array; ``(z, y, x, c)`` for colour slices.

    Slicing reads only the files of the requested z range, one at a time, and
    keeps nothing in memory between reads.

    Parameters
    ----------
    files : sequence of Path
        The slices in z order. All must have the same shape and dtype, and a
        numbered sequence must have no gap (:func:`check_sequence`); both are
        checked, from the headers only, when the stack is made. One exception
        to the dtype rule: 1-bit slices (bool) may sit among 8-bit ones, as
        they do in some folders of binary masks; they are then read as uint8
        with white as 255, the value Pillow gives white when it converts mode
        ``"1"`` to ``"L"``. A stack of 1-bit slices only stays bool. Colour
        PNG or JPEG slices (RGB, RGBA, LA: :attr:`colour_mode`) add their
        channels as a last axis, and must share their mode.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        if not files:
            raise OrgasegError("a stack of slices needs at least one image file")
        self.files = [Path(f) for f in files]
        check_sequence(self.files)
        plane, first = image_header(self.files[0])
        self.dtype = first
        #: The Pillow mode of colour slices (a key of COLOUR_MODES), None for greyscale ones.
        self.colour_mode = ColourImage.mode_of(self.files[0]) if len(plane) == 3 else None
        for path in self.files[1:]:
            shape, dtype = image_header(path)
            mode = ColourImage.mode_of(path) if len(shape) == 3 else None
            if shape != plane or mode != self.colour_mode or not (dtype == first
                                                                  or {dtype, first} == _ONE_BIT_AND_8_BIT):
                raise OrgasegError(
                    f"{path}: slice is {_describe(shape, dtype, mode)}, but {self.files[0].name} is "
                    f"{_describe(plane, first, self.colour_mode)}; all slices must have the same shape and dtype"
                )
            if dtype != first:  # one of them is 1-bit, the other 8-bit
                self.dtype = np.dtype(np.uint8)
        self.shape = (len(self.files), *plane)
        self.ndim = len(self.shape)

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
        data = read_image(path)  # a colour slice: (y, x, c)
        if data.shape != self.shape[1:]:
            raise OrgasegError(f"{path}: slice changed shape to {data.shape} since it was opened")
        if data.dtype == np.bool_ and self.dtype == np.uint8:
            return np.where(data, np.uint8(255), np.uint8(0))  # a 1-bit slice among 8-bit ones
        return data.astype(self.dtype, copy=False)


def _describe(shape: tuple[int, ...], dtype: np.dtype, colour_mode: str | None) -> str:
    """A slice's size and type for messages: ``32 x 32 uint8``, ``32 x 32 RGB``."""
    return f"{shape[0]} x {shape[1]} {colour_mode or dtype}"
