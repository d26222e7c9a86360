"""The synthetic cell phantom as a dataset: exact ground truth, no files.

Evaluate on the phantom drawn with ``seed`` (default 0), train on ``seed + 1``. The phantom's
label ids minus one are the reference classes; its background (outside the
cell) is ignored, as outside-the-cell voxels are in BetaSeg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orgaseg.datasets.base import Dataset, EvaluationItem, lookup_table, map_labels
from orgaseg.io.volume import Volume


def load_phantom(
    data_root: Path | None = None,
    *,
    shape: tuple[int, int, int] = (64, 256, 256),
    voxel_size: tuple[float, float, float] = (10.0, 10.0, 10.0),
    seed: int = 0,
) -> Dataset:
    """Two phantom cells: ``seed + 1`` for training, ``seed`` for evaluation.

    Parameters
    ----------
    data_root : Path, optional
        Unused (the phantom reads no files); accepted like every loader's.
    shape : tuple of int
        Volume shape ``(z, y, x)`` in voxels.
    voxel_size : tuple of float
        Voxel size in nm ``(z, y, x)``.
    seed : int
        Seed of the evaluation phantom; the training phantom uses ``seed + 1``.
    """
    from orgaseg.synthetic import CLASS_NAMES, make_cell

    classes = tuple(CLASS_NAMES[1:])
    # phantom id i -> class i - 1; phantom background (0) -> ignored
    table = lookup_table({i: i - 1 for i in range(1, len(CLASS_NAMES))})
    train = make_cell(shape=shape, voxel_size=voxel_size, seed=seed + 1)
    test = make_cell(shape=shape, voxel_size=voxel_size, seed=seed)

    def wrap(array: np.ndarray, name: str) -> Volume:
        return Volume(array, voxel_size=voxel_size, path=f"<phantom {name}>")

    reference = map_labels(wrap(test.labels, f"seed {seed} labels"), table)
    return Dataset(
        name="phantom",
        classes=classes,
        background=("cytoplasm",),
        voxel_size=tuple(float(v) for v in voxel_size),
        train=[wrap(train.raw, f"seed {seed + 1}")],
        evaluation=[EvaluationItem(f"seed{seed}", wrap(test.raw, f"seed {seed}"), reference)],
        notes=["synthetic phantom: exact ground truth, not a substitute for real data"],
    )
