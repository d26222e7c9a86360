"""Named benchmark datasets: which volumes to train on, which to score, which classes.

>>> from orgaseg.datasets import load_dataset
>>> dataset = load_dataset("vnc")                     # doctest: +SKIP
>>> dataset.classes                                   # doctest: +SKIP
('intracellular', 'membrane', 'mitochondria', 'extracellular')
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from orgaseg.datasets.base import Dataset, EvaluationItem, default_data_root
from orgaseg.datasets.betaseg import betaseg_reference, load_betaseg
from orgaseg.datasets.cellmap import crop_reference, load_cellmap
from orgaseg.datasets.phantom import load_phantom
from orgaseg.datasets.shared import (
    CDEEP3M_CLASS_MAP,
    CDEEP3M_LABEL_VALUES,
    VNC_CLASS_MAP,
    VNC_LABEL_VALUES,
    load_cdeep3m,
    load_vnc,
)
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.evaluation.classmap import ClassMap

#: Dataset name -> loader ``loader(data_root, **options) -> Dataset``.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "vnc": load_vnc,
    "cdeep3m-mito": load_cdeep3m,
    "betaseg": load_betaseg,
    "cellmap": load_cellmap,
    "phantom": load_phantom,
}

#: Dataset name -> the class map of its label files as they ship, for datasets
#: whose reference is one label volume (``orgaseg evaluate --dataset``).
CLASS_MAPS: dict[str, ClassMap] = {"vnc": VNC_CLASS_MAP, "cdeep3m-mito": CDEEP3M_CLASS_MAP}

#: Dataset name -> the values its label files hold (what :func:`check_reference_values` expects).
LABEL_VALUES: dict[str, tuple[int, ...]] = {"vnc": VNC_LABEL_VALUES, "cdeep3m-mito": CDEEP3M_LABEL_VALUES}

#: Above this share of another value in a reference's middle slice, a dataset's class map is warned about.
FOREIGN_SHARE = 0.01


def check_reference_values(reference, dataset: str) -> None:
    """Warn when ``reference`` (a label volume) does not look like ``dataset``'s labels.

    A dataset's class map reads any value (cdeep3m-mito's thresholds at 128), so
    a reference of another dataset would be scored without complaint. Reads the
    middle slice; warns (``OrgasegWarning``) when more than
    :data:`FOREIGN_SHARE` of it holds values the dataset's labels never hold.
    """
    expected = LABEL_VALUES.get(dataset)
    if expected is None:
        return
    z = reference.shape[0] // 2
    values, counts = np.unique(np.asarray(reference.read((slice(z, z + 1), slice(None), slice(None)))),
                               return_counts=True)
    foreign = ~np.isin(values, expected)
    share = counts[foreign].sum() / counts.sum()
    if share > FOREIGN_SHARE:
        shown = ", ".join(str(v) for v in values[foreign][:8]) + (", ..." if foreign.sum() > 8 else "")
        warnings.warn(OrgasegWarning(
            f"{getattr(reference, 'path', '') or 'the reference'}: {share:.0%} of its middle slice holds values "
            f"{dataset}'s labels never hold ({shown}; they hold {', '.join(map(str, expected))}): is it the right "
            f"dataset? Its class map reads every value"), stacklevel=2)


def load_dataset(name: str, data_root: str | Path | None = None, **options) -> Dataset:
    """Load a named dataset.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``vnc``, ``cdeep3m-mito``, ``betaseg``,
        ``cellmap``, ``phantom``.
    data_root : str or Path, optional
        Folder holding the datasets (or the dataset's own folder / container);
        default :func:`default_data_root`.
    **options
        Loader-specific options (e.g. ``classes=`` for cellmap, ``shape=`` for
        phantom).

    Returns
    -------
    Dataset
        ``training`` and ``evaluation`` volumes (lazy), ``classes``, ``background``.

    Raises
    ------
    OrgasegError
        An unknown name, an option the dataset's loader does not take, a data root or
        dataset that is not there, and the loader's own checks.
    """
    if name not in DATASETS:
        raise OrgasegError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    loader = DATASETS[name]
    accepted = [p for p in inspect.signature(loader).parameters if p != "data_root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise OrgasegError(
            f"dataset {name!r} has no option(s) {unknown}; it takes: {', '.join(accepted) or 'none'}"
        )
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return loader(root, **options)


__all__ = [
    "CLASS_MAPS",
    "DATASETS",
    "LABEL_VALUES",
    "Dataset",
    "EvaluationItem",
    "betaseg_reference",
    "check_reference_values",
    "crop_reference",
    "default_data_root",
    "load_dataset",
]
