"""TIFF files (multi-page, ImageJ hyperstack, OME-TIFF) as a :class:`~orgaseg.io.metadata.StoredArray`:
:func:`read_tiff`.

What is read and what refused is listed with the other formats in :mod:`orgaseg.io.readers`, which
presents the array as a volume.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree

import tifffile
import zarr

from orgaseg.errors import OrgasegError
from orgaseg.io.metadata import StoredArray, to_nanometres
from orgaseg.io.tifflog import tiff_errors

# tifffile axis codes -> ours: pages of a plain or ImageJ stack (I, Q) are z
_TIFF_AXES = {"Z": "z", "Y": "y", "X": "x", "C": "c", "S": "c", "T": "t"}


def read_tiff(path: Path) -> StoredArray:
    """The first series of the TIFF at ``path``, checked to hold all the data the file declares."""
    with tiff_errors() as errors:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises several kinds for a file that is not a TIFF
            raise OrgasegError(f"{path}: not a readable TIFF file ({exc})") from exc
        try:
            if not tif.series:
                raise OrgasegError(f"{path}: the TIFF holds no image (an empty or truncated file: a write that "
                                   "failed part way?)")
            series = tif.series[0]
            _check_tiff(tif, series, path, errors)
        except BaseException:
            tif.close()
            raise
    axes = _tiff_axes(series.axes)
    kind = "ome-tiff" if tif.is_ome else "tiff"
    found, note = (_ome_sizes(tif), None) if tif.is_ome else _imagej_sizes(tif) if tif.is_imagej else \
        (_tag_sizes(tif), None)
    sizes = [found.get(a) for a in axes] if found else None
    # a single image's z spacing (orgaseg writes it too) has no stored axis to go with
    plane_z = found.get("z") if "z" not in axes else None
    try:
        array, chunks = tifffile.memmap(path, series=0, mode="r"), None
        tif.close()
    except ValueError:
        # compressed, tiled, non-native byte order or multi-file (OME): the
        # zarr store reads only the strips or tiles a region needs
        array = zarr.open(series.aszarr(level=0), mode="r")
        chunks = array.chunks
    if tuple(array.shape) != tuple(series.shape):
        raise OrgasegError(f"{path}: unexpected TIFF layout {series.axes} {series.shape}")
    # OME-XML and ImageJ's hyperstack fields name the axes; pages tifffile counts as I or Q are a convention
    named = None if set(series.axes) & set("IQ") else "the OME-XML" if tif.is_ome else \
        "the ImageJ metadata" if tif.is_imagej else None
    return StoredArray(array, kind, axes=axes, sizes=sizes, chunks=chunks, plane_z=plane_z, note=note,
                       axes_named_by=named)


def _check_tiff(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path, errors: list[str]) -> None:
    """Check that the first series holds all the data the file declares, or raise an :class:`OrgasegError`.

    tifffile reads a damaged file as far as it can and only logs what it
    skipped (a page chain that runs past the end, ImageJ or shaped metadata
    that no longer fits): such a file would silently become a smaller volume.
    """
    declared = _declared_planes(tif)
    planes = series.size // max(tif.pages.first.size, 1)
    if declared is not None and planes != declared:
        raise OrgasegError(
            f"{path}: the metadata declares {declared} images, but the file holds {planes} (truncated TIFF?)"
        )
    if errors:
        raise OrgasegError(f"{path}: damaged or truncated TIFF ({errors[0]})")
    if not (tif.is_ome or tif.is_imagej or tif.is_shaped):
        # a plain multi-page TIFF whose pages differ in size splits into several
        # series; reading only the first would drop the others
        first = tif.pages.first.shape
        for index, page in enumerate(tif.pages):
            if not page.is_reduced and page.shape != first:
                raise OrgasegError(
                    f"{path}: page {index} is {' x '.join(map(str, page.shape))}, but page 0 is "
                    f"{' x '.join(map(str, first))}; a volume needs pages of one size"
                )
    if series.dataoffset is not None:  # contiguous: one range of bytes
        end = series.dataoffset + series.nbytes
        if end > tif.filehandle.size:
            raise OrgasegError(
                f"{path}: the image data ends at byte {end:,}, past the end of the file "
                f"({tif.filehandle.size:,} bytes; truncated TIFF?)"
            )
        return
    for index, page in enumerate(series.pages):
        if page is None:
            raise OrgasegError(f"{path}: image {index} of the series is missing")
        end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
        if end > page.parent.filehandle.size:
            raise OrgasegError(
                f"{path}: the strips or tiles of image {index} end at byte {end:,}, past the end of "
                f"{page.parent.filehandle.name} ({page.parent.filehandle.size:,} bytes; truncated TIFF?)"
            )


def _declared_planes(tif: tifffile.TiffFile) -> int | None:
    """Number of 2D images (pages) the ImageJ or OME metadata declares, if it says."""
    if tif.is_imagej:
        images = (tif.imagej_metadata or {}).get("images")
        return int(images) if images is not None else None
    if tif.is_ome:
        pixels = _ome_pixels(tif)
        if pixels is None:
            return None
        samples = tif.pages.first.samplesperpixel
        try:
            counts = [int(pixels.get(f"Size{a}", 1)) for a in "ZCT"]
        except ValueError:
            return None
        return counts[0] * counts[1] * counts[2] // max(samples, 1)
    return None


def _tiff_axes(codes: str) -> str:
    letters = [_TIFF_AXES.get(c, c.lower()) for c in codes]
    if "z" not in letters:
        for i, c in enumerate(codes):
            if c in "IQ":
                letters[i] = "z"
                break
    if letters.count("c") > 1:  # both C and S: keep S apart
        letters[codes.index("S")] = "s"
    return "".join(letters)


def _resolution_sizes(page: tifffile.TiffPage, unit: str | None, y_unit: str | None = None) -> dict[str, float]:
    """The pixel size in nm by axis letter that the resolution tags give (pixels per ``unit``; per ``y_unit``
    along y where it is given)."""
    sizes = {}
    for letter, tag in (("y", "YResolution"), ("x", "XResolution")):
        if tag in page.tags:
            numerator, denominator = page.tags[tag].value
            if numerator:
                sizes[letter] = to_nanometres(denominator / numerator, y_unit or unit if letter == "y" else unit)
    return sizes


def _imagej_sizes(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None]:
    """Voxel sizes in nm by axis letter that ImageJ's tags and metadata give, and a caveat about them.

    ``unit`` is x's; ImageJ writes ``yunit`` and ``zunit`` where y's or z's differs from it.
    """
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    z_unit = meta.get("zunit") or unit
    sizes = _resolution_sizes(tif.pages.first, unit, meta.get("yunit"))
    note = None
    if "spacing" in meta:
        sizes["z"] = to_nanometres(meta["spacing"], z_unit)
    elif int(meta.get("images", 1)) > 1:
        # ImageJ leaves spacing out of a stack's description when the voxel depth is 1 unit, and reads
        # its absence back as 1; so does a stack whose depth nobody set, which is the common case
        sizes["z"] = to_nanometres(1.0, z_unit)
        if sizes["z"] is not None and {"y", "x"} <= sizes.keys():
            note = (f"the ImageJ metadata gives no z spacing, which ImageJ reads as its default voxel depth of 1 "
                    f"{z_unit} ({sizes['z']:g} nm), rarely the section thickness")
    return sizes, note


#: TIFF ResolutionUnit codes that are lengths (1 is "no unit"; the tag's default is inch).
_RESOLUTION_UNITS = {2: "inch", 3: "cm"}

#: A pixel size (nm) from a plain TIFF's resolution tags at or above which they are a print or
#: screen default (72 or 300 dpi, 1 pixel per cm), not the sample's calibration.
PRINT_DEFAULT_NM = 1000.0


def _tag_sizes(tif: tifffile.TiffFile) -> dict[str, float]:
    """The pixel size in nm by axis letter of a plain TIFF's resolution tags; none in a unit that is no
    length, or of a print default (:data:`PRINT_DEFAULT_NM`). Such a TIFF says nothing about z."""
    page = tif.pages.first
    code = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2
    sizes = _resolution_sizes(page, _RESOLUTION_UNITS.get(code))
    if len(sizes) < 2 or any(v is None or not v < PRINT_DEFAULT_NM for v in sizes.values()):
        return _fei_sizes(tif)
    return sizes


def _fei_sizes(tif: tifffile.TiffFile) -> dict[str, float]:
    """The pixel size in nm of an FEI / Thermo Fisher microscope's TIFF (its own tag's ``[Scan]`` section,
    ``PixelWidth`` and ``PixelHeight`` in metres), whose resolution tags say nothing (72 dpi); none elsewhere."""
    try:
        scan = (tif.fei_metadata or {}).get("Scan") or {} if tif.is_fei else {}
        width = float(scan.get("PixelWidth"))
        height = float(scan.get("PixelHeight", width))
    except (TypeError, ValueError, AttributeError):
        return {}
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        return {}
    return {"y": height * 1e9, "x": width * 1e9}


def _ome_pixels(tif: tifffile.TiffFile) -> ElementTree.Element | None:
    """The ``Pixels`` element of the first OME image, or None when the XML is unreadable."""
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        return None
    return next((e for e in root.iter() if e.tag.endswith("Pixels")), None)


def _ome_sizes(tif: tifffile.TiffFile) -> dict[str, float | None]:
    """Voxel sizes in nm by axis letter of the first OME image (None where it gives none)."""
    pixels = _ome_pixels(tif)
    if pixels is None:
        return {}
    # OME's default unit is the micrometre
    return {
        a: to_nanometres(pixels.get(f"PhysicalSize{A}"), pixels.get(f"PhysicalSize{A}Unit", "µm"))
        for a, A in zip("zyx", "ZYX")
    }
