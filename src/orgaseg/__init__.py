"""orgaseg: label-free organelle segmentation of volume electron microscopy.

The public API, function first:

- :func:`open_volume` reads any supported format lazily as a :class:`Volume`;
- :func:`segment` turns a volume into a label volume with a named method;
- :func:`evaluate` scores a segmentation against a reference (both matching modes);
- :func:`load_dataset` gives the training and evaluation volumes of a named dataset;
- :mod:`orgaseg.synthetic` draws a phantom cell with exact ground truth.
"""

__version__ = "0.1.0"

from orgaseg.datasets import load_dataset
from orgaseg.errors import OrgasegError
from orgaseg.evaluation import evaluate
from orgaseg.io import Volume, open_volume
from orgaseg.segmentation import Segmentation, segment

__all__ = ["OrgasegError", "Segmentation", "Volume", "evaluate", "load_dataset", "open_volume", "segment", "__version__"]
