"""The two labelled public stacks in ``../shared/data``: vnc and cdeep3m-mito.

Layouts and protocols are those of ``shared/data/README.md``:

- ``vnc`` (Drosophila VNC, ssTEM, 50 x 4.6 x 4.6 nm): train on
  ``stack2/raw``; evaluate on ``stack1`` against the merged grey-level label
  map, synapses (223) ignored.
- ``cdeep3m-mito`` (mouse brain SBEM, assumed 40 x 5.9 x 5.9 nm): train on
  ``testset``; evaluate on ``training`` and ``validation`` with classes other
  / mitochondria.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from orgaseg.datasets.base import (
    Dataset,
    EvaluationItem,
    dataset_dir,
    lookup_table,
    map_labels,
    require,
)
from orgaseg.errors import OrgasegError
from orgaseg.evaluation.classmap import ClassMap
from orgaseg.io import open_volume
from orgaseg.io.volume import Volume

VNC_CLASSES = ("intracellular", "membrane", "mitochondria", "extracellular")
VNC_BACKGROUND = ("intracellular", "extracellular")
VNC_VOXEL_SIZE = (50.0, 4.6, 4.6)
#: vnc grey level -> class id; every other level (223 = synapse) is ignored.
VNC_GREY_LEVELS = {255: 0, 0: 1, 32: 1, 64: 1, 96: 1, 128: 1, 191: 2, 159: 3}

CDEEP3M_CLASSES = ("other", "mitochondria")
CDEEP3M_BACKGROUND = ("other",)
CDEEP3M_VOXEL_SIZE = (40.0, 5.9, 5.9)
#: cdeep3m labels are 0 / 255 with a few anti-aliased values: threshold at > 127.
CDEEP3M_TABLE = (np.arange(256) > 127).astype(np.uint8)

#: The values the label files hold as they ship (vnc: synapses, 223, are not scored; cdeep3m: a few
#: anti-aliased pixels besides 0 and 255).
VNC_LABEL_VALUES = (*sorted(VNC_GREY_LEVELS), 223)
CDEEP3M_LABEL_VALUES = (0, 255)

#: The label files as they ship, read as classes (``orgaseg evaluate --dataset``).
VNC_CLASS_MAP = ClassMap.from_lookup(VNC_CLASSES, lookup_table(VNC_GREY_LEVELS), VNC_BACKGROUND)
CDEEP3M_CLASS_MAP = ClassMap.from_lookup(CDEEP3M_CLASSES, CDEEP3M_TABLE, CDEEP3M_BACKGROUND)

_IMAGE_SUFFIXES = {".png", ".tif", ".tiff"}


def _open(path: Path, voxel_size, what: str) -> Volume:
    return open_volume(require(path, what), voxel_size=voxel_size)


def _same_shape(raw: Volume, labels: Volume) -> None:
    if raw.shape != labels.shape:
        raise OrgasegError(f"{labels.path}: labels shape {labels.shape} differs from {raw.path}: {raw.shape}")


def load_vnc(data_root: Path) -> Dataset:
    """The vnc benchmark: train on stack2, evaluate on stack1 (4 classes).

    Parameters
    ----------
    data_root : Path
        Folder holding ``vnc/``, or the vnc folder itself.
    """
    root = dataset_dir(data_root, "vnc", marker="stack1")
    raw = _open(root / "stack1" / "raw", VNC_VOXEL_SIZE, "vnc stack1 raw folder")
    labels = _open(root / "stack1" / "labels", VNC_VOXEL_SIZE, "vnc stack1 labels folder")
    _same_shape(raw, labels)
    reference = map_labels(labels, lookup_table(VNC_GREY_LEVELS))
    train = _open(root / "stack2" / "raw", VNC_VOXEL_SIZE, "vnc stack2 raw folder")
    return Dataset(
        name="vnc",
        classes=VNC_CLASSES,
        background=VNC_BACKGROUND,
        voxel_size=VNC_VOXEL_SIZE,
        train=[train],
        evaluation=[EvaluationItem("stack1", raw, reference)],
        notes=["section thickness 45-50 nm, taken as 50 nm", "synapses (grey level 223) are not scored"],
    )


def _numbered_images(folder: Path) -> dict[int, Path]:
    """Image files of a folder keyed by the last number in their name."""
    numbered = {}
    for path in folder.iterdir():
        found = re.findall(r"\d+", path.stem)
        if path.suffix.lower() in _IMAGE_SUFFIXES and found:
            number = int(found[-1])
            if number in numbered:
                raise OrgasegError(f"{folder}: two images numbered {number}: {numbered[number].name}, {path.name}")
            numbered[number] = path
    return numbered


def _check_pairs(images: Path, labels: Path) -> None:
    """Images and labels must have the same section numbers (names differ)."""
    image_numbers = set(_numbered_images(require(images, "cdeep3m images folder")))
    label_numbers = set(_numbered_images(require(labels, "cdeep3m labels folder")))
    if not image_numbers:
        raise OrgasegError(f"{images}: no numbered image files")
    if image_numbers != label_numbers:
        only_images = sorted(image_numbers - label_numbers)
        only_labels = sorted(label_numbers - image_numbers)
        raise OrgasegError(
            f"{images.parent}: images and labels do not pair by section number "
            f"(images without labels: {only_images}, labels without images: {only_labels})"
        )


def _cdeep3m_item(root: Path, split: str) -> EvaluationItem:
    images, labels = root / split / "images", root / split / "labels"
    _check_pairs(images, labels)
    raw = _open(images, CDEEP3M_VOXEL_SIZE, f"cdeep3m {split} images")
    label_volume = _open(labels, CDEEP3M_VOXEL_SIZE, f"cdeep3m {split} labels")
    _same_shape(raw, label_volume)
    return EvaluationItem(split, raw, map_labels(label_volume, CDEEP3M_TABLE))


def load_cdeep3m(data_root: Path) -> Dataset:
    """The cdeep3m-mito benchmark: train on testset, evaluate on training + validation.

    Parameters
    ----------
    data_root : Path
        Folder holding ``cdeep3m-mito/``, or that folder itself.
    """
    root = dataset_dir(data_root, "cdeep3m-mito", marker="testset")
    train = _open(root / "testset", CDEEP3M_VOXEL_SIZE, "cdeep3m testset folder")
    return Dataset(
        name="cdeep3m-mito",
        classes=CDEEP3M_CLASSES,
        background=CDEEP3M_BACKGROUND,
        voxel_size=CDEEP3M_VOXEL_SIZE,
        train=[train],
        evaluation=[_cdeep3m_item(root, "training"), _cdeep3m_item(root, "validation")],
        notes=["voxel size 40 x 5.9 x 5.9 nm (zyx) is an assumption: the source does not state it"],
    )
