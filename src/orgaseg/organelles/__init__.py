"""From clusters to organelles: naming, refining, instances and morphometrics.

- :func:`name_clusters` names a segmentation's clusters from a few clicked
  points or scribbles (majority vote), or reuses a stored mapping; with
  ``refine=True`` the same annotations train a classifier on the
  segmentation's features that relabels every voxel;
- :func:`read_points` and :func:`read_scribbles` read the annotations;
- :func:`make_instances` cleans a named volume up and numbers the connected
  components of each class, blockwise; :func:`measure_instances` measures
  every instance in physical units (volume, surface area, shape, intensity).

Names are imported on first use, like the package's own.
"""

from __future__ import annotations

import importlib

#: Public name -> module that defines it.
_PUBLIC = {
    "Annotations": "orgaseg.organelles.annotations",
    "points_from_arrays": "orgaseg.organelles.annotations",
    "read_points": "orgaseg.organelles.annotations",
    "read_scribbles": "orgaseg.organelles.annotations",
    "ClusterNaming": "orgaseg.organelles.naming",
    "NamedSegmentation": "orgaseg.organelles.naming",
    "name_clusters": "orgaseg.organelles.naming",
    "RefinedClassifier": "orgaseg.organelles.refine",
    "Instances": "orgaseg.organelles.instances",
    "make_instances": "orgaseg.organelles.instances",
    "read_label_names": "orgaseg.organelles.label_names",
    "Morphometrics": "orgaseg.organelles.measure",
    "measure_instances": "orgaseg.organelles.measure",
    "write_table": "orgaseg.organelles.measure",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'orgaseg.organelles' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
