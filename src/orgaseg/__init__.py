"""orgaseg: label-free organelle segmentation of volume electron microscopy.

The public API, function first:

- :func:`open_volume` reads any supported format lazily as a :class:`Volume`;
- :func:`segment` turns a volume into a label volume with a method (encoder +
  dense features + clusterer, any stage overridable);
- :func:`compute_features` gives the dense features a segmentation clusters, for a region;
- :func:`train` trains a method's encoder by self-supervision (or the sccs / cs2c clusterer);
- :func:`evaluate` scores a segmentation against a reference (both matching modes);
- :func:`run_benchmark` runs the benchmark protocol on a named dataset;
- :func:`load_dataset` gives the training and evaluation volumes of a named dataset;
- :mod:`orgaseg.synthetic` draws a phantom cell with exact ground truth.

Names are imported on first use, so ``import orgaseg`` stays light (no torch,
no dask) and the command line starts fast.
"""

import importlib as _importlib

__version__ = "0.1.0"

#: Public name -> module that defines it.
_PUBLIC = {
    "OrgasegError": "orgaseg.errors",
    "OrgasegWarning": "orgaseg.errors",
    "Volume": "orgaseg.io",
    "open_volume": "orgaseg.io",
    "segment": "orgaseg.segmentation",
    "Segmentation": "orgaseg.segmentation",
    "compute_features": "orgaseg.segmentation",
    "train": "orgaseg.methods.table",
    "evaluate": "orgaseg.evaluation",
    "run_benchmark": "orgaseg.benchmark",
    "load_dataset": "orgaseg.datasets",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'orgaseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
