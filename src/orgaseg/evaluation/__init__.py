"""The evaluation protocol of DESIGN.md, one implementation used everywhere.

1. :func:`confusion_matrix` (or a :class:`ConfusionAccumulator` fed block by
   block) counts voxels per (cluster, class), skipping ignored voxels.
2. :func:`dice_matrix` scores every (cluster, class) pair.
3. :func:`match_clusters` maps clusters to classes, ``strict`` (one-to-one
   Hungarian) or ``merge`` (Hungarian, then left-over clusters join their
   majority class).
4. :func:`scores_from_confusion` gives per-class Dice, IoU, sensitivity and
   precision, mean Dice (all classes, organelles), accuracy and the mapping.

:func:`evaluate` runs all four and returns an :class:`EvaluationReport`
(JSON, Markdown, confusion PNG). A reference that stores other values than
class ids (grey levels, codes) is read through a :class:`ClassMap`
(:func:`parse_class_map`).
"""

from orgaseg.evaluation.classmap import ClassMap, parse_class_map
from orgaseg.evaluation.confusion import ConfusionAccumulator, confusion_matrix
from orgaseg.evaluation.matching import UNMATCHED, dice_matrix, match_clusters
from orgaseg.evaluation.metrics import scores_from_confusion
from orgaseg.evaluation.report import EvaluationReport, evaluate

__all__ = [
    "UNMATCHED",
    "ClassMap",
    "ConfusionAccumulator",
    "EvaluationReport",
    "confusion_matrix",
    "dice_matrix",
    "evaluate",
    "match_clusters",
    "parse_class_map",
    "scores_from_confusion",
]
