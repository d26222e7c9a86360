"""BetaSeg: FIB-SEM of mouse pancreatic beta cells (Müller et al. 2021).

Layout: one folder per cell, ``high_c1`` ... ``high_c4``, each holding
``high_cN_source.tif`` (the EM) and binary or instance masks
``high_cN_membrane_full_mask.tif`` (the whole cell), ``_nucleus_mask.tif``,
``_granules.tif``, ``_mitochondria_mask.tif`` (required) and
``_centrioles.tif``, ``_golgi_corrected.tif``, ``_microtubules.tif``
(optional). Every mask is binarised with ``> 0``. Train on high_c1..c3,
evaluate on high_c4; 16 nm isotropic voxels.

Reference classes: ``unrecognized`` (0), ``nucleus`` (1), ``granules`` (2),
``mitochondria`` (3); voxels outside the cell mask are ignored.

How the published overlap priority (centrioles > nucleus > membrane >
microtubules > golgi > granules > mitochondria) is read here:

- "membrane" is the ``membrane_full`` cell mask. It defines which voxels are
  scored (inside the cell) and is the default class there (unrecognized); it
  does not compete with the organelle masks, otherwise every organelle voxel
  of the cell would be "membrane" and the organelle classes would be empty.
- Inside the cell, a voxel takes the highest-priority structure whose mask
  holds it. Centrioles, microtubules and Golgi are not reference classes: a
  voxel they claim is ``unrecognized`` even if a lower-priority organelle
  mask (granules, mitochondria; for centrioles also the nucleus) holds it.
- A voxel in no mask but inside the cell is ``unrecognized``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from orgaseg.datasets.base import (
    BlockFunctionArray,
    Dataset,
    EvaluationItem,
    dataset_dir,
    missing,
    require,
)
from orgaseg.errors import OrgasegError
from orgaseg.io import VoxelSizeWarning, open_volume
from orgaseg.io.volume import Volume
from orgaseg.labels import IGNORE_LABEL

CLASSES = ("unrecognized", "nucleus", "granules", "mitochondria")
UNRECOGNIZED, NUCLEUS, GRANULES, MITOCHONDRIA = range(len(CLASSES))

#: Voxel size of BetaSeg in nm, used when the TIFF carries none.
VOXEL_SIZE = (16.0, 16.0, 16.0)

#: Mask file suffixes: ``<cell>_<suffix>.tif``.
MASK_FILES = {
    "cell": "membrane_full_mask",
    "nucleus": "nucleus_mask",
    "granules": "granules",
    "mitochondria": "mitochondria_mask",
    "centrioles": "centrioles",
    "golgi": "golgi_corrected",
    "microtubules": "microtubules",
}
REQUIRED_MASKS = ("cell", "nucleus", "granules", "mitochondria")

# Lowest priority first: later structures overwrite earlier ones. The cell
# mask ("membrane") is not in the list: it decides what is scored.
_PRIORITY_LOW_TO_HIGH = (
    ("mitochondria", MITOCHONDRIA),
    ("granules", GRANULES),
    ("golgi", UNRECOGNIZED),
    ("microtubules", UNRECOGNIZED),
    ("nucleus", NUCLEUS),
    ("centrioles", UNRECOGNIZED),
)


def betaseg_reference(
    cell: np.ndarray,
    nucleus: np.ndarray,
    granules: np.ndarray,
    mitochondria: np.ndarray,
    centrioles: np.ndarray | None = None,
    golgi: np.ndarray | None = None,
    microtubules: np.ndarray | None = None,
) -> np.ndarray:
    """Reference class ids from BetaSeg masks (one block, all of one shape).

    Masks may be binary or hold instance ids; any value ``> 0`` is inside.
    See the module docstring for the priority rules.

    Returns
    -------
    numpy.ndarray of uint8
        ``unrecognized`` (0), ``nucleus`` (1), ``granules`` (2),
        ``mitochondria`` (3) inside the cell mask, ``IGNORE_LABEL`` outside.
    """
    masks = {
        "nucleus": nucleus,
        "granules": granules,
        "mitochondria": mitochondria,
        "centrioles": centrioles,
        "golgi": golgi,
        "microtubules": microtubules,
    }
    inside = np.asarray(cell) > 0
    reference = np.where(inside, UNRECOGNIZED, IGNORE_LABEL).astype(np.uint8)
    for name, class_id in _PRIORITY_LOW_TO_HIGH:
        mask = masks[name]
        if mask is not None:
            reference[(np.asarray(mask) > 0) & inside] = class_id
    return reference


def _cell_files(root: Path, cell: str) -> dict[str, Path]:
    folder = root / cell
    if not folder.is_dir():
        raise missing(folder, f"BetaSeg cell folder {cell!r}")
    return {name: folder / f"{cell}_{suffix}.tif" for name, suffix in MASK_FILES.items()}


def _source(root: Path, cell: str, voxel_size) -> Volume:
    return open_volume(require(root / cell / f"{cell}_source.tif", f"BetaSeg {cell} source"), voxel_size=voxel_size)


def _evaluation_item(root: Path, cell: str, raw: Volume) -> EvaluationItem:
    sources = {}
    for name, path in _cell_files(root, cell).items():
        if not path.exists():
            if name in REQUIRED_MASKS:
                raise missing(path, f"BetaSeg {cell} {name} mask")
            continue
        sources[name] = open_volume(path, voxel_size=raw.voxel_size)
    for volume in sources.values():
        if volume.shape != raw.shape:
            raise OrgasegError(
                f"{volume.path}: mask shape {volume.shape} differs from the source {raw.path}: {raw.shape}"
            )
    array = BlockFunctionArray(sources, betaseg_reference, np.uint8)
    reference = Volume(array, voxel_size=raw.voxel_size, path=str(root / cell), chunks=raw.chunks)
    return EvaluationItem(name=cell, raw=raw, reference=reference)


def _metadata_voxel_size(root: Path, cell: str) -> tuple[tuple[float, float, float], list[str]]:
    """The voxel size of ``cell``'s source from its TIFF metadata, and notes on what the metadata left to guess.

    BetaSeg is isotropic: a TIFF without a physical pixel size (read as 1 nm)
    gets the publication's 16 nm, and one whose z spacing is a reader's guess
    (ImageJ reads a stack without ``spacing`` as 1 unit deep: 1000 nm for a
    stack calibrated in um) gets its in-plane size along z too.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VoxelSizeWarning)  # what the reader guessed is handled here, with a note
        source = _source(root, cell, None)
    for warning in caught:
        if not issubclass(warning.category, VoxelSizeWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if source.attrs.get("voxel_size_assumed"):
        return VOXEL_SIZE, ["voxel size 16 nm isotropic from the BetaSeg publication (not in the TIFF metadata)"]
    z, y, x = source.voxel_size
    if any(issubclass(warning.category, VoxelSizeWarning) for warning in caught):
        note = (f"z voxel size {y:g} nm, the in-plane size, as BetaSeg is isotropic (the TIFF metadata gives no z "
                f"spacing; its reader guessed {z:g} nm)")
        return (y, y, x), [note]
    return source.voxel_size, []


def load_betaseg(
    data_root: Path,
    *,
    train_cells: tuple[str, ...] = ("high_c1", "high_c2", "high_c3"),
    eval_cells: tuple[str, ...] = ("high_c4",),
    voxel_size: tuple[float, float, float] | None = None,
) -> Dataset:
    """BetaSeg in its published layout under ``data_root/betaseg`` (or ``data_root``).

    Parameters
    ----------
    data_root : Path
        Folder holding ``betaseg/high_c1 ...``, or the BetaSeg folder itself.
    train_cells, eval_cells : tuple of str
        Cell folders for training (only the source is read) and evaluation.
    voxel_size : tuple of float, optional
        Voxel size in nm ``(z, y, x)``; default: from the TIFF metadata, else
        16 nm isotropic (z: the in-plane size where the metadata gives none).
    """
    root = dataset_dir(data_root, "betaseg", marker=(eval_cells or train_cells)[0])
    notes = []
    if voxel_size is None:
        voxel_size, notes = _metadata_voxel_size(root, (eval_cells or train_cells)[0])
    with warnings.catch_warnings():
        if notes:  # the notes say why the files' own guess is replaced; a warning per file would repeat it
            warnings.filterwarnings("ignore", message=".*overrides the file's own")
        train = [_source(root, cell, voxel_size) for cell in train_cells]
        evaluation = [_evaluation_item(root, cell, _source(root, cell, voxel_size)) for cell in eval_cells]
    return Dataset(
        name="betaseg",
        classes=CLASSES,
        background=("unrecognized",),
        voxel_size=tuple(float(v) for v in voxel_size),
        train=train,
        evaluation=evaluation,
        notes=notes,
    )
